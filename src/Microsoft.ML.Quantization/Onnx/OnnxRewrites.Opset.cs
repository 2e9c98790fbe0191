namespace Microsoft.ML.Quantization.Onnx;

internal static partial class OnnxRewrites
{
    /// <summary>Default-domain ops whose meaning (for the attributes and inputs they may carry) is the same from opset 7 to 21.</summary>
    private static readonly HashSet<string> StableOps =
    [
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "Cast", "Ceil",
        "Concat", "Constant", "ConstantOfShape", "Conv", "ConvInteger", "ConvTranspose", "Cos", "Cosh", "DepthToSpace",
        "DequantizeLinear", "Div", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements",
        "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "HardSigmoid", "Identity",
        "InstanceNormalization", "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "LpNormalization", "LRN", "MatMul",
        "MatMulInteger", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "QLinearConv",
        "QLinearMatMul", "QuantizeLinear", "Range", "Reciprocal", "Relu", "Reshape", "Round", "Selu", "Shape", "Sigmoid", "Sign",
        "Sin", "Sinh", "Size", "Softplus", "Softsign", "SpaceToDepth", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "Tile", "Transpose",
        "Where", "Xor", "Gelu", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceSumSquare", "Det", "NonZero", "OneHot", "Compress", "Trilu", "CumSum", "BitShift",
    ];

    /// <summary>Reduce ops that take axes as an input from opset 18 (ReduceSum from 13).</summary>
    private static readonly HashSet<string> ReduceOps =
        ["ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"];

    /// <summary>
    /// Raises the default-domain opset to <paramref name="target"/> (13 by default; at least 21 when the model holds
    /// int4/uint4 tensors), migrating attributes that became inputs (Squeeze/Unsqueeze/Split/ReduceSum axes, Pad, Clip,
    /// Slice, Dropout ratio, Reduce* axes at 18), dropping BatchNormalization's spatial/consumed_inputs/is_test and
    /// turning Upsample into Resize. Any op it cannot upgrade is reported by node and op type, and the model is left
    /// unchanged then.
    /// </summary>
    public static void UpgradeOpset(OnnxModel model, int target = 13)
    {
        long from = model.DefaultOpset;
        bool hasInt4 = OnnxModel.AllTensors(model.Graph.Proto).Any(t => (OnnxElementType)t.DataType is OnnxElementType.Int4 or OnnxElementType.UInt4)
            || model.Graph.Proto.Input.Concat(model.Graph.Proto.Output).Concat(model.Graph.Proto.ValueInfo)
                .Any(v => (OnnxElementType)(v.Type?.TensorType?.ElemType ?? 0) is OnnxElementType.Int4 or OnnxElementType.UInt4);
        if (hasInt4)
            target = Math.Max(target, 21);
        if (target > OnnxValidator.MaxKnownDefaultOpset)
            throw new ArgumentOutOfRangeException(nameof(target), $"Opset {target} is above the highest known ({OnnxValidator.MaxKnownDefaultOpset}).");
        if (from >= target)
            return;
        if (from < 7)
            throw new InvalidOnnxModelException($"{model.Describe} uses ai.onnx opset {from}; upgrading from below opset 7 is not supported.");

        // Check every node first so a refusal leaves the model untouched.
        var work = model.Clone();
        var graph = work.Graph;
        foreach (var node in graph.Nodes.Where(n => n.Domain.Length == 0))
            UpgradeNode(work, graph, node, from, target);
        work.SetOpset("", target);
        long ir = target >= 21 ? 10 : target >= 19 ? 9 : target >= 15 ? 8 : 7;
        if (work.IrVersion < ir)
            work.IrVersion = ir;
        // From IR 4 an initializer listed as a graph input is an overridable default, which stops ORT from constant
        // folding it: drop those inputs when leaving IR 3.
        if (model.IrVersion < 4)
        {
            var inits = graph.Proto.Initializer.Select(t => t.Name).ToHashSet();
            for (int i = graph.Proto.Input.Count - 1; i >= 0; i--)
                if (inits.Contains(graph.Proto.Input[i].Name))
                    graph.Proto.Input.RemoveAt(i);
        }
        model.Proto.MergeFromReplacing(work.Proto);
    }

    private static void MergeFromReplacing(this Proto.ModelProto target, Proto.ModelProto source)
    {
        target.OpsetImport.Clear();
        target.OpsetImport.AddRange(source.OpsetImport);
        target.IrVersion = source.IrVersion;
        target.Graph.Node.Clear();
        target.Graph.Node.AddRange(source.Graph.Node);
        target.Graph.Initializer.Clear();
        target.Graph.Initializer.AddRange(source.Graph.Initializer);
        target.Graph.Input.Clear();
        target.Graph.Input.AddRange(source.Graph.Input);
    }

    private static InvalidOnnxModelException Refuse(OnnxModel model, OnnxNode node, long from, long to, string why) =>
        new($"{model.Describe}: cannot upgrade {node.Describe} from opset {from} to {to}: {why}.");

    private static string AddInt64(OnnxGraph graph, OnnxNode node, string suffix, long[] values, bool scalar = false)
    {
        string name = graph.FreshName($"{node.Name}_{suffix}");
        graph.SetInitializer(OnnxTensor.FromInt64(name, scalar ? [] : [values.Length], values));
        return name;
    }

    private static string AddFloat(OnnxGraph graph, OnnxNode node, string suffix, float value)
    {
        string name = graph.FreshName($"{node.Name}_{suffix}");
        graph.SetInitializer(OnnxTensor.FromFloats(name, [], [value]));
        return name;
    }

    private static void MoveIntsToInput(OnnxGraph graph, OnnxNode node, string attribute, int inputIndex)
    {
        if (node.GetInts(attribute) is not { } values)
            return;
        node.RemoveAttribute(attribute);
        while (node.Inputs.Count < inputIndex)
            node.Inputs.Add("");
        node.Inputs.Insert(inputIndex, AddInt64(graph, node, attribute, values));
    }

    private static void UpgradeNode(OnnxModel model, OnnxGraph graph, OnnxNode node, long from, long to)
    {
        if (node.Name.Length == 0)
            node.Name = graph.FreshName(node.OpType);
        string op = node.OpType;
        switch (op)
        {
            case "BatchNormalization":
                if (node.GetInt("spatial", 1) != 1)
                    throw Refuse(model, node, from, to, "spatial=0 (per-element statistics) has no equivalent from opset 9");
                if (node.Outputs.Skip(1).Any(o => o.Length > 0))
                    throw Refuse(model, node, from, to, "training-mode outputs (running statistics) are not supported");
                node.RemoveAttribute("spatial");
                node.RemoveAttribute("consumed_inputs");
                node.RemoveAttribute("is_test");
                return;
            case "Dropout":
                node.RemoveAttribute("is_test");
                if (to >= 12 && node.Attribute("ratio") is { } ratio)
                {
                    node.RemoveAttribute("ratio");
                    if (node.Inputs.Count == 1)
                        node.Inputs.Add(AddFloat(graph, node, "ratio", ratio.F));
                }
                return;
            case "Squeeze" or "Unsqueeze":
                if (to >= 13)
                    MoveIntsToInput(graph, node, "axes", 1);
                return;
            case "Split":
                if (to >= 13)
                    MoveIntsToInput(graph, node, "split", 1);
                return;
            case "ReduceSum":
                if (to >= 13)
                    MoveIntsToInput(graph, node, "axes", 1);
                return;
            case "Pad":
                if (from < 11 && to >= 11)
                {
                    string mode = node.GetString("mode") ?? "constant";
                    long[] pads = node.GetInts("pads") ?? node.GetInts("paddings") ?? throw Refuse(model, node, from, to, "it has no pads attribute");
                    float value = node.GetFloat("value", 0f);
                    node.RemoveAttribute("pads");
                    node.RemoveAttribute("paddings");
                    node.RemoveAttribute("value");
                    if (mode == "constant" && graph.ElementTypeOf(node.Inputs[0]) is not (OnnxElementType.Float or OnnxElementType.Undefined))
                        throw Refuse(model, node, from, to, "constant padding of a non-float tensor");
                    node.Inputs.Add(AddInt64(graph, node, "pads", pads));
                    if (mode == "constant")
                        node.Inputs.Add(AddFloat(graph, node, "pad_value", value));
                }
                return;
            case "Clip":
                if (from < 11 && to >= 11)
                {
                    float min = node.GetFloat("min", float.MinValue), max = node.GetFloat("max", float.MaxValue);
                    bool hasMin = node.HasAttribute("min"), hasMax = node.HasAttribute("max");
                    node.RemoveAttribute("min");
                    node.RemoveAttribute("max");
                    if (graph.ElementTypeOf(node.Inputs[0]) is not (OnnxElementType.Float or OnnxElementType.Undefined) && (hasMin || hasMax))
                        throw Refuse(model, node, from, to, "min/max bounds on a non-float tensor");
                    if (hasMin || hasMax)
                        node.Inputs.Add(hasMin ? AddFloat(graph, node, "min", min) : "");
                    if (hasMax)
                        node.Inputs.Add(AddFloat(graph, node, "max", max));
                }
                return;
            case "Slice":
                if (from < 10)
                {
                    long[] starts = node.GetInts("starts") ?? throw Refuse(model, node, from, to, "it has no starts attribute");
                    long[] ends = node.GetInts("ends") ?? throw Refuse(model, node, from, to, "it has no ends attribute");
                    long[]? axes = node.GetInts("axes");
                    node.RemoveAttribute("starts");
                    node.RemoveAttribute("ends");
                    node.RemoveAttribute("axes");
                    node.Inputs.Add(AddInt64(graph, node, "starts", starts));
                    node.Inputs.Add(AddInt64(graph, node, "ends", ends));
                    if (axes is not null)
                        node.Inputs.Add(AddInt64(graph, node, "axes", axes));
                }
                return;
            case "Upsample":
            {
                // Upsample (7/9) == Resize with asymmetric coordinates and floor rounding for nearest.
                string mode = node.GetString("mode") ?? "nearest";
                if (mode is not ("nearest" or "linear" or "bilinear"))
                    throw Refuse(model, node, from, to, $"mode '{mode}' has no Resize equivalent");
                string scales;
                if (node.GetTensor("scales") is null && node.Attribute("scales") is { } attr)
                {
                    scales = graph.FreshName(node.Name + "_scales");
                    graph.SetInitializer(OnnxTensor.FromFloats(scales, [attr.Floats.Count], [.. attr.Floats]));
                }
                else if (node.Inputs.Count > 1)
                    scales = node.Inputs[1];
                else
                    throw Refuse(model, node, from, to, "it has no scales");
                node.RemoveAttribute("scales");
                node.OpType = "Resize";
                string x = node.Inputs[0];
                node.Inputs.Clear();
                node.Inputs.Add(x);
                node.Inputs.Add("");
                node.Inputs.Add(scales);
                node.SetString("mode", mode == "nearest" ? "nearest" : "linear");
                node.SetString("coordinate_transformation_mode", "asymmetric");
                if (mode == "nearest")
                    node.SetString("nearest_mode", "floor");
                return;
            }
            case "Softmax" or "LogSoftmax" or "Hardmax":
            {
                if (to < 13)
                    return;
                // Before 13 these flatten to 2-D at `axis`; that equals the 13 form only when axis is the last axis.
                long axis = node.GetInt("axis", 1);
                var shape = graph.FindValueInfo(node.Inputs[0])?.Shape ?? graph.FindValueInfo(node.Outputs[0])?.Shape;
                if (shape is null)
                    throw Refuse(model, node, from, to, "the input rank is unknown and the coerce-to-2D semantics changed at opset 13");
                if (axis < 0)
                    axis += shape.Count;
                if (axis != shape.Count - 1)
                    throw Refuse(model, node, from, to, $"axis {axis} is not the last axis of a rank-{shape.Count} input (coerce-to-2D semantics changed at opset 13)");
                node.SetInt("axis", -1);
                return;
            }
            case "TopK" when from < 10:
            {
                long k = node.GetInt("k", -1);
                node.RemoveAttribute("k");
                node.Inputs.Add(AddInt64(graph, node, "k", [k]));
                return;
            }
            case "Resize" when from == 10:
                throw Refuse(model, node, from, to, "Resize-10 uses half-pixel-free coordinates; migrate it by hand");
        }
        if (ReduceOps.Contains(op))
        {
            if (to >= 18)
                MoveIntsToInput(graph, node, "axes", 1);
            return;
        }
        if (StableOps.Contains(op))
            return;
        throw Refuse(model, node, from, to, $"op '{op}' is not on the list of ops this upgrader knows");
    }
}

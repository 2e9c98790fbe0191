using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Onnx;

internal static partial class OnnxRewrites
{
    /// <summary>
    /// Default-domain ops whose meaning, for the attributes and inputs a model of opset 7 or later may give them, is the
    /// same up to opset 23: later versions only add types, optional inputs or attributes whose defaults keep the old
    /// behaviour. (From the ONNX operator changelog; the ops whose meaning did change are migrated in UpgradeNode.)
    /// </summary>
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
        "Where", "Xor", "Gelu", "Det", "NonZero", "OneHot", "Compress", "Trilu", "CumSum", "BitShift",
        "LSTM", "GRU", "RNN", "LpPool", "MaxUnpool", "MaxRoiPool", "NonMaxSuppression", "ReverseSequence", "ThresholdedRelu",
        "Shrink", "EyeLike", "GatherND", "ScatterND", "ScatterElements", "Unique", "Celu", "HardSwish", "Mish", "LayerNormalization",
        "CastLike", "Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SplitToSequence",
        "ConcatFromSequence", "Optional", "OptionalGetElement", "OptionalHasElement", "StringNormalizer", "TfIdfVectorizer",
        "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "CenterCropPad", "Col2Im", "STFT",
        "MelWeightMatrix", "BlackmanWindow", "HannWindow", "HammingWindow", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot",
        "AffineGrid", "DynamicQuantizeLinear", "If", "Loop",
    ];

    /// <summary>Reduce ops that take axes as an input from opset 18 (ReduceSum from 13).</summary>
    private static readonly HashSet<string> ReduceOps =
        ["ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"];

    /// <summary>Ops whose coerce-to-2D semantics (before opset 13) need the input rank to migrate without reshaping.</summary>
    private static readonly HashSet<string> CoerceTo2DOps = ["Softmax", "LogSoftmax", "Hardmax"];

    /// <summary>
    /// Raises the default-domain opset to <paramref name="target"/> (13 by default; at least 21 when the model holds
    /// int4/uint4 tensors) for models of opset 7 and later, subgraphs (If/Loop/Scan bodies) included. It migrates every
    /// op whose meaning changed on the way (see UpgradeNode): attributes that became inputs, Upsample and Resize-10
    /// into Resize, the coerce-to-2D Softmax family (with ranks from ONNX shape inference), the experimental ops
    /// opset 10 removed, MeanVarianceNormalization-1, and the changed defaults of RoiAlign, GridSample, DFT and
    /// GroupNormalization; targets below 11 keep the attribute forms that still exist there. A node it
    /// cannot migrate is reported by node, op type and opsets, and the model is left unchanged then.
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

        // Migrate a copy so a refusal leaves the model untouched.
        var work = model.Clone();
        var upgrade = new OpsetUpgrade(model, work, from, target);
        upgrade.Graph(work.Graph);
        work.SetOpset("", target);
        long ir = target >= 21 ? 10 : target >= 19 ? 9 : target >= 15 ? 8 : 7;
        if (work.IrVersion < ir)
            work.IrVersion = ir;
        // From IR 4 an initializer listed as a graph input is an overridable default, which stops ORT from constant
        // folding it: drop those inputs when leaving IR 3.
        if (model.IrVersion < 4)
        {
            var graph = work.Graph;
            var inits = graph.Proto.Initializer.Select(t => t.Name).ToHashSet();
            for (int i = graph.Proto.Input.Count - 1; i >= 0; i--)
                if (inits.Contains(graph.Proto.Input[i].Name))
                    graph.Proto.Input.RemoveAt(i);
        }
        model.Proto.MergeFromReplacing(work.Proto);
    }

    private static void MergeFromReplacing(this ModelProto target, ModelProto source)
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

    /// <summary>One opset upgrade: the original model (for shape inference), the copy being migrated, and the opsets.</summary>
    private sealed class OpsetUpgrade(OnnxModel original, OnnxModel work, long from, long to)
    {
        private IReadOnlyDictionary<string, long[]>? _shapes;

        /// <summary>Migrates a graph's nodes and then those of the subgraphs they hold (which share the model's opset).</summary>
        public void Graph(OnnxGraph graph)
        {
            foreach (var node in graph.Nodes)
            {
                if (node.Domain.Length == 0)
                    Node(graph, node);
                foreach (var attribute in node.Proto.Attribute)
                {
                    if (attribute.G is not null)
                        Graph(new OnnxGraph(attribute.G, work));
                    foreach (var subgraph in attribute.Graphs)
                        Graph(new OnnxGraph(subgraph, work));
                }
            }
        }

        private InvalidOnnxModelException Refuse(OnnxNode node, string why) =>
            new($"{work.Describe}: cannot upgrade {node.Describe} from opset {from} to {to}: {why}.");

        /// <summary>
        /// Inferred dims of a main-graph tensor: value_info first, else ONNX shape inference over the original model
        /// (run once, for every tensor a migration may ask about); null when neither knows the rank.
        /// </summary>
        private long[]? ShapeOf(OnnxGraph graph, string tensor)
        {
            if (graph.FindValueInfo(tensor)?.Shape is { } shape)
                return [.. shape.Select(d => d.Value ?? -1)];
            if (!ReferenceEquals(graph.Proto, work.Graph.Proto))
                return null;
            _shapes ??= OnnxShapeInference.InferShapes(original, original.Graph.Nodes
                .Where(n => n.Domain.Length == 0 && (CoerceTo2DOps.Contains(n.OpType) || n.OpType == "GroupNormalization") && n.Inputs.Count > 0)
                .SelectMany(n => n.Inputs.Take(1).Concat(n.Outputs.Take(1))));
            return _shapes.TryGetValue(tensor, out long[]? dims) ? dims : null;
        }

        private void Node(OnnxGraph graph, OnnxNode node)
        {
            if (node.Name.Length == 0)
                node.Name = graph.FreshName(node.OpType);
            string op = node.OpType;
            switch (op)
            {
                case "BatchNormalization":
                    if (node.GetInt("spatial", 1) != 1)
                        throw Refuse(node, "spatial=0 (per-element statistics) has no equivalent from opset 9");
                    if (node.Outputs.Skip(1).Any(o => o.Length > 0))
                        throw Refuse(node, "training-mode outputs (running statistics) are not supported");
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
                    // From 18 an even split must say how many parts: the old form took the number of outputs.
                    if (to >= 18 && (node.Inputs.Count < 2 || node.Inputs[1].Length == 0) && !node.HasAttribute("num_outputs"))
                        node.SetInt("num_outputs", node.Outputs.Count);
                    return;
                case "ReduceSum":
                    if (to >= 13)
                        MoveIntsToInput(graph, node, "axes", 1);
                    return;
                case "Pad":
                    if (from < 11 && to >= 11)
                        PadAttributesToInputs(graph, node);
                    return;
                case "Clip":
                    if (from < 11 && to >= 11)
                        ClipAttributesToInputs(graph, node);
                    return;
                case "Slice":
                    if (from < 10)
                        SliceAttributesToInputs(graph, node);
                    return;
                case "TopK":
                    if (from < 10)
                    {
                        long k = node.GetInt("k", -1);
                        node.RemoveAttribute("k");
                        node.Inputs.Add(AddInt64(graph, node, "k", [k]));
                    }
                    return;
                case "Upsample":
                    if (to >= 11)
                        UpsampleToResize(graph, node);
                    else
                    {
                        // Upsample-9 takes scales as an input; opset 10 deprecates it for Resize-10 (X, scales), which
                        // enlarges the same way (asymmetric coordinates, truncation).
                        if (node.GetFloats("scales") is { } scales)
                        {
                            node.RemoveAttribute("scales");
                            string name = graph.FreshName(node.Name + "_scales");
                            graph.SetInitializer(OnnxTensor.FromFloats(name, [scales.Length], scales));
                            node.Inputs.Add(name);
                        }
                        if (to == 10)
                        {
                            node.OpType = "Resize";
                            if (node.GetString("mode") == "bilinear")
                                node.SetString("mode", "linear");
                        }
                    }
                    return;
                case "MeanVarianceNormalization":
                    // MVN-1 (experimental) had across_channels / normalize_variance; MVN-9 takes axes and always normalizes the variance.
                    if (from < 9 && to >= 9)
                    {
                        if (node.GetInt("normalize_variance", 1) == 0)
                            throw Refuse(node, "MeanVarianceNormalization with normalize_variance=0 (mean subtraction only) has no opset-9 form");
                        bool across = node.GetInt("across_channels", 0) != 0;
                        node.RemoveAttribute("across_channels");
                        node.RemoveAttribute("normalize_variance");
                        node.SetInts("axes", across ? [0, 1, 2, 3] : [0, 2, 3]);
                    }
                    return;
                case "Resize":
                    if (from == 10)
                        Resize10ToResize(graph, node);
                    else if (from < 13 && to >= 13 && node.GetString("coordinate_transformation_mode") == "tf_half_pixel_for_nn")
                        ReplaceTfHalfPixelForNearest(node);
                    return;
                case "Softmax" or "LogSoftmax" or "Hardmax":
                    if (from < 13 && to >= 13)
                        CoerceTo2D(graph, node);
                    return;
                case "Scatter":
                    // Scatter (9-10) was renamed ScatterElements at 11, same meaning.
                    if (to >= 11)
                        node.OpType = "ScatterElements";
                    return;
                case "Scan":
                    if (from < 9)
                        throw Refuse(node, "Scan-8 has a batch axis and sequence_lens that Scan-9 dropped; re-export the model at opset 9 or later");
                    return;
                case "ImageScaler" or "Scale" or "Affine" or "ScaledTanh" or "ParametricSoftplus":
                    ExperimentalToStandard(graph, node);
                    return;
                case "RoiAlign":
                    // Opset 16 added coordinate_transformation_mode with default half_pixel; RoiAlign-10 behaves as output_half_pixel.
                    if (from < 16 && to >= 16 && !node.HasAttribute("coordinate_transformation_mode"))
                        node.SetString("coordinate_transformation_mode", "output_half_pixel");
                    return;
                case "GridSample":
                    // Opset 20 renamed the modes.
                    if (from < 20 && to >= 20 && node.GetString("mode") is { } mode)
                        node.SetString("mode", mode switch { "bilinear" => "linear", "bicubic" => "cubic", _ => mode });
                    return;
                case "DFT":
                    // Opset 20 moved axis (default 1) to an input (default -2).
                    if (from < 20 && to >= 20)
                    {
                        long axis = node.GetInt("axis", 1);
                        node.RemoveAttribute("axis");
                        while (node.Inputs.Count < 2)
                            node.Inputs.Add("");
                        node.Inputs.Insert(2, AddInt64(graph, node, "axis", [axis], scalar: true));
                    }
                    return;
                case "GroupNormalization":
                    if (from < 21 && to >= 21)
                        GroupNormalizationScalePerChannel(graph, node);
                    return;
                case "Crop":
                    throw Refuse(node, "the experimental Crop op was removed at opset 10 and has no single-op equivalent; replace it with Slice");
            }
            if (ReduceOps.Contains(op))
            {
                if (to >= 18)
                    MoveIntsToInput(graph, node, "axes", 1);
                return;
            }
            if (StableOps.Contains(op))
                return;
            throw Refuse(node, $"op '{op}' is not on the list of ops this upgrader knows");
        }

        private void PadAttributesToInputs(OnnxGraph graph, OnnxNode node)
        {
            string mode = node.GetString("mode") ?? "constant";
            long[] pads = node.GetInts("pads") ?? node.GetInts("paddings") ?? throw Refuse(node, "it has no pads attribute");
            float value = node.GetFloat("value", 0f);
            node.RemoveAttribute("pads");
            node.RemoveAttribute("paddings");
            node.RemoveAttribute("value");
            node.Inputs.Add(AddInt64(graph, node, "pads", pads));
            if (mode == "constant" && value != 0)
                node.Inputs.Add(AddScalarLike(graph, node, node.Inputs[0], "pad_value", value));
        }

        private void ClipAttributesToInputs(OnnxGraph graph, OnnxNode node)
        {
            bool hasMin = node.HasAttribute("min"), hasMax = node.HasAttribute("max");
            float min = node.GetFloat("min", float.MinValue), max = node.GetFloat("max", float.MaxValue);
            node.RemoveAttribute("min");
            node.RemoveAttribute("max");
            if (hasMin || hasMax)
                node.Inputs.Add(hasMin ? AddScalarLike(graph, node, node.Inputs[0], "min", min) : "");
            if (hasMax)
                node.Inputs.Add(AddScalarLike(graph, node, node.Inputs[0], "max", max));
        }

        private void SliceAttributesToInputs(OnnxGraph graph, OnnxNode node)
        {
            long[] starts = node.GetInts("starts") ?? throw Refuse(node, "it has no starts attribute");
            long[] ends = node.GetInts("ends") ?? throw Refuse(node, "it has no ends attribute");
            long[]? axes = node.GetInts("axes");
            node.RemoveAttribute("starts");
            node.RemoveAttribute("ends");
            node.RemoveAttribute("axes");
            node.Inputs.Add(AddInt64(graph, node, "starts", starts));
            node.Inputs.Add(AddInt64(graph, node, "ends", ends));
            if (axes is not null)
                node.Inputs.Add(AddInt64(graph, node, "axes", axes));
        }

        /// <summary>A scalar initializer of the element type of <paramref name="like"/> (Pad and Clip bounds must match it).</summary>
        private string AddScalarLike(OnnxGraph graph, OnnxNode node, string like, string suffix, float value)
        {
            var type = graph.ElementTypeOf(like);
            string name = graph.FreshName($"{node.Name}_{suffix}");
            switch (type)
            {
                case OnnxElementType.Float or OnnxElementType.Undefined:
                    graph.SetInitializer(OnnxTensor.FromFloats(name, [], [value]));
                    break;
                case OnnxElementType.Double or OnnxElementType.Float16:
                    graph.SetInitializer(OnnxTensor.FromDoubles(name, type, [], [value]));
                    break;
                case OnnxElementType.Int64:
                    graph.SetInitializer(OnnxTensor.FromInt64(name, [], [(long)Math.Clamp(value, long.MinValue, long.MaxValue)]));
                    break;
                case OnnxElementType.Int32:
                    graph.SetInitializer(OnnxTensor.FromInt32(name, [], [(int)Math.Clamp(value, int.MinValue, int.MaxValue)]));
                    break;
                default:
                    throw Refuse(node, $"a {suffix} bound on a {type} tensor");
            }
            return name;
        }

        /// <summary>Upsample (7 with a scales attribute, 9/10 with an input) is Resize with asymmetric coordinates and floor rounding.</summary>
        private void UpsampleToResize(OnnxGraph graph, OnnxNode node)
        {
            string mode = node.GetString("mode") ?? "nearest";
            if (mode is not ("nearest" or "linear" or "bilinear"))
                throw Refuse(node, $"Upsample mode '{mode}' has no Resize equivalent");
            string scales;
            if (node.GetFloats("scales") is { } attr)
            {
                scales = graph.FreshName(node.Name + "_scales");
                graph.SetInitializer(OnnxTensor.FromFloats(scales, [attr.Length], attr));
            }
            else if (node.Inputs.Count > 1 && node.Inputs[1].Length > 0)
                scales = node.Inputs[1];
            else
                throw Refuse(node, "it has no scales");
            node.RemoveAttribute("scales");
            node.OpType = "Resize";
            SetResizeInputs(graph, node, node.Inputs[0], scales);
            node.SetString("mode", mode == "nearest" ? "nearest" : "linear");
            node.SetString("coordinate_transformation_mode", "asymmetric");
            if (mode == "nearest")
                node.SetString("nearest_mode", "floor");
        }

        /// <summary>
        /// Resize-10 (X, scales) works in asymmetric coordinates; its nearest mode truncates when enlarging and rounds
        /// up when shrinking (ONNX Runtime's reading, which the Resize-11 converter's floor only matches for the former).
        /// </summary>
        private void Resize10ToResize(OnnxGraph graph, OnnxNode node)
        {
            if (node.Inputs.Count < 2 || node.Inputs[1].Length == 0)
                throw Refuse(node, "Resize-10 without scales");
            string mode = node.GetString("mode") ?? "nearest";
            if (mode == "nearest")
            {
                float[] scales = ConstantFloats(graph, node.Inputs[1])
                    ?? throw Refuse(node, "nearest Resize-10 with computed scales: whether it rounds down (enlarging) or up (shrinking) is unknown");
                bool up = scales.All(s => s >= 1), down = scales.All(s => s <= 1);
                if (!up && !down)
                    throw Refuse(node, "nearest Resize-10 that enlarges some axes and shrinks others rounds each differently; Resize-11 has one rounding mode");
                node.SetString("nearest_mode", up ? "floor" : "ceil");
            }
            node.SetString("coordinate_transformation_mode", "asymmetric");
            SetResizeInputs(graph, node, node.Inputs[0], node.Inputs[1]);
        }

        /// <summary>
        /// tf_half_pixel_for_nn ((x + 0.5) / scale) was removed at 13; with floor rounding it equals half_pixel with
        /// round_prefer_ceil (floor(y) = round_prefer_ceil(y - 0.5)), with round_prefer_floor it equals half_pixel with ceil.
        /// </summary>
        private void ReplaceTfHalfPixelForNearest(OnnxNode node)
        {
            string nearest = node.GetString("nearest_mode") ?? "round_prefer_floor";
            string replacement = nearest switch
            {
                "floor" => "round_prefer_ceil",
                "round_prefer_floor" => "ceil",
                _ => throw Refuse(node, $"coordinate_transformation_mode 'tf_half_pixel_for_nn' (removed at opset 13) with nearest_mode '{nearest}' has no equivalent"),
            };
            node.SetString("coordinate_transformation_mode", "half_pixel");
            node.SetString("nearest_mode", replacement);
        }

        /// <summary>Resize inputs (X, roi, scales): roi may be omitted from opset 13, before that it is an empty tensor.</summary>
        private void SetResizeInputs(OnnxGraph graph, OnnxNode node, string x, string scales)
        {
            string roi = "";
            if (to < 13)
            {
                roi = graph.FreshName(node.Name + "_roi");
                graph.SetInitializer(OnnxTensor.FromFloats(roi, [0], []));
            }
            node.Inputs.Clear();
            node.Inputs.Add(x);
            node.Inputs.Add(roi);
            node.Inputs.Add(scales);
        }

        /// <summary>
        /// Softmax, LogSoftmax and Hardmax before 13 flatten their input to 2-D at axis; from 13 they work along the one
        /// axis. Where axis is the input's last axis the two agree; otherwise (or when no rank is known) the node is
        /// wrapped as Flatten(axis) -> op(axis 1) -> Reshape(Shape(x)), which is the old definition written out.
        /// </summary>
        private void CoerceTo2D(OnnxGraph graph, OnnxNode node)
        {
            long axis = node.GetInt("axis", 1);
            // The output has the input's shape: a declared graph output tells the rank where inference cannot.
            if ((ShapeOf(graph, node.Inputs[0]) ?? ShapeOf(graph, node.Outputs[0])) is { Length: > 0 } shape)
            {
                long rank = shape.Length;
                if (axis < 0)
                    axis += rank;
                if (axis == rank - 1)
                {
                    node.SetInt("axis", -1);
                    return;
                }
            }
            string x = node.Inputs[0], y = node.Outputs[0];
            string flat = graph.FreshName(node.Name + "_2d"), result2d = graph.FreshName(node.Name + "_out2d"), shapeName = graph.FreshName(node.Name + "_shape");
            var flatten = graph.CreateNode("Flatten", [x], [flat], graph.FreshName(node.Name + "_flatten"));
            flatten.SetInt("axis", axis);
            graph.InsertNode(flatten, node);
            graph.InsertNode(graph.CreateNode("Shape", [x], [shapeName], graph.FreshName(node.Name + "_input_shape")), node);
            node.Inputs[0] = flat;
            node.Outputs[0] = result2d;
            node.SetInt("axis", 1);
            var reshape = graph.CreateNode("Reshape", [result2d, shapeName], [y], graph.FreshName(node.Name + "_restore"));
            graph.Proto.Node.Insert(graph.Proto.Node.IndexOf(node.Proto) + 1, reshape.Proto);
        }

        /// <summary>The experimental affine ops opset 10 removed, as Mul/Add/Tanh/Softplus.</summary>
        private void ExperimentalToStandard(OnnxGraph graph, OnnxNode node)
        {
            string x = node.Inputs[0], y = node.Outputs[0];
            switch (node.OpType)
            {
                case "ImageScaler":
                {
                    // y = scale * x + bias[c] over NCHW.
                    float scale = node.GetFloat("scale", 1f);
                    float[] bias = node.GetFloats("bias") ?? [];
                    string scaled = graph.FreshName(node.Name + "_scaled");
                    InsertMul(graph, node, x, scale, scaled);
                    string biasName = graph.FreshName(node.Name + "_bias");
                    graph.SetInitializer(OnnxTensor.FromFloats(biasName, [1, bias.Length, 1, 1], bias));
                    Replace(graph, node, "Add", [scaled, biasName], y);
                    return;
                }
                case "Scale":
                    Replace(graph, node, "Mul", [x, AddFloat(graph, node, "scale", node.GetFloat("scale", 1f))], y);
                    return;
                case "Affine":
                {
                    string scaled = graph.FreshName(node.Name + "_scaled");
                    InsertMul(graph, node, x, node.GetFloat("alpha", 1f), scaled);
                    Replace(graph, node, "Add", [scaled, AddFloat(graph, node, "beta", node.GetFloat("beta", 0f))], y);
                    return;
                }
                case "ScaledTanh" or "ParametricSoftplus":
                {
                    // alpha * f(beta * x) with f = tanh or softplus.
                    string inner = graph.FreshName(node.Name + "_inner"), activated = graph.FreshName(node.Name + "_activated");
                    InsertMul(graph, node, x, node.GetFloat("beta", 1f), inner);
                    graph.InsertNode(graph.CreateNode(node.OpType == "ScaledTanh" ? "Tanh" : "Softplus", [inner], [activated], graph.FreshName(node.Name + "_f")), node);
                    Replace(graph, node, "Mul", [activated, AddFloat(graph, node, "alpha", node.GetFloat("alpha", 1f))], y);
                    return;
                }
            }
        }

        private static void InsertMul(OnnxGraph graph, OnnxNode before, string x, float factor, string output) =>
            graph.InsertNode(graph.CreateNode("Mul", [x, AddFloat(graph, before, "factor", factor)], [output], graph.FreshName(before.Name + "_mul")), before);

        /// <summary>Turns <paramref name="node"/> into a standard op with no attributes, keeping its name and output.</summary>
        private static void Replace(OnnxGraph graph, OnnxNode node, string opType, string[] inputs, string output)
        {
            node.OpType = opType;
            node.Proto.Attribute.Clear();
            node.Inputs.Clear();
            foreach (string input in inputs)
                node.Inputs.Add(input);
            node.Outputs.Clear();
            node.Outputs.Add(output);
        }

        /// <summary>GroupNormalization-18 scales and shifts per group; 21 per channel: repeat each group's value over its channels.</summary>
        private void GroupNormalizationScalePerChannel(OnnxGraph graph, OnnxNode node)
        {
            long groups = node.GetInt("num_groups", 0);
            long channels = ShapeOf(graph, node.Inputs[0]) is { Length: > 1 } shape ? shape[1] : -1;
            if (groups <= 0 || channels <= 0 || channels % groups != 0)
                throw Refuse(node, "its per-group scale and bias (opset 18) must become per-channel (opset 21), and the channel count is unknown");
            for (int i = 1; i <= 2; i++)
            {
                if (!graph.TryGetInitializer(node.Inputs[i], out var tensor) || tensor.ElementCount != groups)
                    throw Refuse(node, $"its per-group {(i == 1 ? "scale" : "bias")} (opset 18) must become per-channel (opset 21), and it is not a constant of {groups} values");
                double[] perGroup = tensor.ToDoubles();
                var perChannel = new double[channels];
                for (long c = 0; c < channels; c++)
                    perChannel[c] = perGroup[c / (channels / groups)];
                string name = graph.FreshName(node.Inputs[i] + "_per_channel");
                graph.SetInitializer(OnnxTensor.FromDoubles(name, tensor.ElementType, [channels], perChannel));
                node.Inputs[i] = name;
            }
        }
    }

    private static float[]? ConstantFloats(OnnxGraph graph, string name)
    {
        if (graph.TryGetInitializer(name, out var tensor))
            return [.. tensor.ToDoubles().Select(v => (float)v)];
        if (graph.Producer(name) is { OpType: "Constant" } constant && constant.GetTensor("value") is { } value)
            return [.. value.ToDoubles().Select(v => (float)v)];
        return null;
    }

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
}

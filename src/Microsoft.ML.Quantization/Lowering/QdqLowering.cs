using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Lowering;

/// <summary>The plan of a QDQ model, or why it cannot be run natively.</summary>
internal sealed record LoweringResult(EnginePlan? Plan, InputSpec[] Inputs, OutputSpec[] Outputs, IReadOnlyList<string> Unsupported)
{
    public bool Succeeded => Plan is not null && Unsupported.Count == 0;
}

/// <summary>
/// Lowers a QDQ ONNX model (what PostTraining writes, or a QAT export of the same form) to a native engine plan, the
/// way ONNX Runtime's QDQ fusions group nodes: "DQ inputs -> op -> Q" becomes one integer op (Conv/Gemm/MatMul with the
/// fused requantization, pools, Add/Mul with broadcasting, Concat, MatMul of two activations, Resize and data movement
/// on the integers, elementwise functions as 256-entry tables); a node the model leaves in float runs as a float op
/// of a float segment (DequantizeLinear -> float ops -> QuantizeLinear, QdqLowering.Float.cs); the QuantizeLinear of
/// a float value a quantize op, the DequantizeLinear of a graph output a dequantize op, and
/// Flatten/Reshape/Squeeze/Unsqueeze views. Every node that fits none of these is named with the reason (the root
/// causes only: nodes that merely depend on an unsupported node are not listed). Shapes are inferred here and checked
/// against the weights, so an inconsistent model fails with a message naming the node before any native call (the
/// native loader checks them again).
/// </summary>
internal sealed partial class QdqLowering
{
    private readonly OnnxGraph _g;
    private readonly GraphIndex _index; // the lowering reads the graph only: lookups through one index keep it linear
    private readonly string _modelName;
    private readonly EnginePlan _plan = new();
    private readonly List<(string Where, string Reason)> _rootCauses = [];
    private readonly HashSet<string> _failed = new(StringComparer.Ordinal);   // tensors the engine cannot compute
    private int _knockOn;                                                      // nodes and outputs that only fail through them
    private readonly Dictionary<string, QTensor> _quantized = new(StringComparer.Ordinal);       // integer activations
    private readonly Dictionary<string, (QTensor Source, EngineQuant Quant)> _dqActivation = new(StringComparer.Ordinal);
    private readonly Dictionary<string, OnnxNode> _dqConstant = new(StringComparer.Ordinal);
    private readonly Dictionary<string, FTensor> _float = new(StringComparer.Ordinal);       // float values (inputs, float ops, dequantized activations)
    private readonly HashSet<OnnxNode> _done = [];
    private readonly Dictionary<string, List<OnnxNode>> _consumers;
    private readonly long _opset;

    /// <summary>An integer activation: the engine tensor holding it, its logical per-row shape, type and quantization.</summary>
    private sealed record QTensor(int Id, long[] Dims, EngineType Type, EngineQuant Quant);

    /// <summary>A float value: the engine tensor holding it and its logical per-row shape.</summary>
    private sealed record FTensor(int Id, long[] Dims);

    private QdqLowering(OnnxModel model, string modelName)
    {
        _g = model.Graph;
        _index = _g.Index();
        _modelName = modelName;
        // A Shape reads no values, only dims the plan fixes (QdqLowering.Shapes): it does not keep its input float.
        _consumers = _g.ConsumerMap().ToDictionary(kv => kv.Key, kv => kv.Value.Where(n => n.OpType != "Shape" || n.Domain.Length != 0).ToList(), StringComparer.Ordinal);
        _opset = model.DefaultOpset;
    }

    /// <summary>Lowers <paramref name="model"/>; inputs and outputs default to the graph's (columns named like the tensors).</summary>
    public static LoweringResult Lower(OnnxModel model, string modelName, IList<OnnxColumnBinding> inputBindings, IList<OnnxColumnBinding> outputBindings,
        IDictionary<string, int[]> declaredShapes)
        => new QdqLowering(model, modelName).Run(inputBindings, outputBindings, declaredShapes);

    private LoweringResult Run(IList<OnnxColumnBinding> inputBindings, IList<OnnxColumnBinding> outputBindings, IDictionary<string, int[]> declaredShapes)
    {
        var inputs = new List<InputSpec>();
        var runtimeInputs = _g.RuntimeInputs;
        var bindings = OnnxColumnBinding.OrSameNames(inputBindings, runtimeInputs.Select(i => i.Name));
        foreach (var b in bindings)
        {
            var info = runtimeInputs.FirstOrDefault(i => i.Name == b.TensorName)
                ?? throw new ArgumentException($"Model '{_modelName}' has no input '{b.TensorName}' (inputs: {string.Join(", ", runtimeInputs.Select(i => i.Name))}).");
            if (info.ElementType is not (OnnxElementType.Float or OnnxElementType.Int64 or OnnxElementType.Int32))
            {
                _rootCauses.Add(($"graph input '{b.TensorName}'", $"input type {info.ElementType} is not supported (the engine takes float, int64 and int32 inputs)"));
                _failed.Add(b.TensorName);
                continue;
            }
            int[] row;
            if (declaredShapes.TryGetValue(b.TensorName, out int[]? declared) && info.Shape is { } full && full.Count == declared.Length)
            {
                _rootCauses.Add(($"graph input '{b.TensorName}'", "an input without a batch dimension is not supported"));
                _failed.Add(b.TensorName);
                continue;
            }
            if (declared is not null)
                row = declared;
            else if (info.Shape is { Count: > 1 } shape && shape.Skip(1).All(d => d.Value is > 0))
                row = shape.Skip(1).Select(d => checked((int)d.Value!.Value)).ToArray();
            else
                throw new ArgumentException($"Model '{_modelName}' input '{b.TensorName}' has no known per-row shape; declare it in InputShapes.");
            if (row.Length is < 1 or > 4 || row.Any(d => d <= 0))
                throw new NotSupportedException($"Model '{_modelName}' input '{b.TensorName}': per-row shape [{string.Join(", ", row)}] is not 1 to 4 positive dimensions.");
            long[] dims = row.Select(d => (long)d).ToArray();
            if (info.ElementType != OnnxElementType.Float)
            {
                // Token ids, segments and masks: integer plan inputs (a Gather's indices, or cast to float for mask arithmetic).
                var type = info.ElementType == OnnxElementType.Int64 ? EngineType.Int64 : EngineType.Int32;
                int ids = _plan.AddTensor(type, dims);
                _plan.Inputs.Add(ids);
                _integers[b.TensorName] = new ITensor(ids, dims, type);
                inputs.Add(new InputSpec(b.ColumnName, b.TensorName, row, type == EngineType.Int64 ? TensorElementType.Int64 : TensorElementType.Int32));
                continue;
            }
            int id = _plan.AddTensor(EngineType.Float32, dims);
            _plan.Inputs.Add(id);
            _float[b.TensorName] = new FTensor(id, dims);
            inputs.Add(new InputSpec(b.ColumnName, b.TensorName, row));
        }
        foreach (var extra in runtimeInputs.Where(i => !_float.ContainsKey(i.Name) && !_integers.ContainsKey(i.Name) && !_failed.Contains(i.Name)))
        {
            _rootCauses.Add(($"graph input '{extra.Name}'", "it is not bound to a column"));
            _failed.Add(extra.Name);
        }

        foreach (var node in _g.TopologicalOrder())
        {
            if (_done.Contains(node))
                continue;
            // A node reading what the engine cannot compute fails only as a consequence: counted, not listed.
            if (node.Inputs.Concat(OnnxGraph.SubgraphOuterInputs(node.Proto)).Any(_failed.Contains))
            {
                _failed.UnionWith(node.Outputs.Where(o => o.Length > 0));
                _knockOn++;
                continue;
            }
            try
            {
                Visit(node);
            }
            catch (NotSupportedException e)
            {
                _rootCauses.Add((node.Describe, e.Message));
                _failed.UnionWith(node.Outputs.Where(o => o.Length > 0));
            }
        }

        var outputs = new List<OutputSpec>();
        var outBindings = OnnxColumnBinding.OrSameNames(outputBindings, _g.Outputs.Select(o => o.Name));
        var planOutputs = new HashSet<int>();
        foreach (var b in outBindings)
        {
            int id;
            long[] dims;
            if (_dqActivation.TryGetValue(b.TensorName, out var source))
            {
                dims = source.Source.Dims;
                id = _plan.AddTensor(EngineType.Float32, dims);
                var w = new PayloadWriter();
                w.U32((uint)source.Source.Id);
                w.U32((uint)id);
                w.Quant(source.Quant);
                _plan.Ops.Add(new EngineOp(EngineOpKind.Dequantize, b.TensorName, w.ToArray()));
            }
            else if (_float.TryGetValue(b.TensorName, out var value))
            {
                // A float output: the tensor a float op wrote, copied when it is a plan input, another output or a view.
                dims = value.Dims;
                id = _plan.Inputs.Contains(value.Id) || planOutputs.Contains(value.Id) || !_plan.Tensors[value.Id].Dims.SequenceEqual(value.Dims)
                    ? CopyTensor(value.Id, value.Dims, EngineType.Float32, $"output '{b.TensorName}'")
                    : value.Id;
            }
            else
            {
                if (_failed.Contains(b.TensorName))
                    _knockOn++;
                else
                    _rootCauses.Add(($"output '{b.TensorName}'", "it is neither a float value nor the DequantizeLinear of an integer activation the engine computes"));
                continue;
            }
            planOutputs.Add(id);
            _plan.Outputs.Add(id);
            outputs.Add(new OutputSpec(b.ColumnName, b.TensorName, dims.Select(d => checked((int)d)).ToArray()));
        }
        if (_rootCauses.Count == 0 && _plan.Ops.Count == 0)
            _rootCauses.Add(("the graph", "it has no op the engine runs"));
        var unsupported = Summarize();
        return new LoweringResult(unsupported.Count == 0 ? _plan : null, [.. inputs], [.. outputs], unsupported);
    }

    /// <summary>
    /// The distinct root causes, each with the first nodes it hit and a count ("op type X is not supported: node a,
    /// node b and 12 more"), then how many nodes and outputs fail only because they depend on those.
    /// </summary>
    private List<string> Summarize()
    {
        const int named = 3;
        var lines = _rootCauses.GroupBy(c => c.Reason, StringComparer.Ordinal)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Take(named).Select(c => c.Where))}{(g.Count() > named ? $" and {g.Count() - named} more" : "")}")
            .ToList();
        if (_knockOn > 0 && lines.Count > 0)
            lines.Add($"{_knockOn} more nodes or outputs depend on those");
        return lines;
    }

    private void Visit(OnnxNode node)
    {
        if (node.Domain.Length != 0)
            throw new NotSupportedException($"domain '{node.Domain}' is not supported by the native engine");
        if (TryIntegerNode(node) || TryShapeValue(node))
            return;
        switch (node.OpType)
        {
            case "DequantizeLinear":
                VisitDequantize(node);
                return;
            case "QuantizeLinear":
                VisitQuantize(node);
                return;
            case "Clip" when _quantized.ContainsKey(node.Inputs[0]):
                VisitIntegerClip(node);
                return;
            case "Split" when TryIntegerSplit(node):
                return;
        }
        string why = "";
        if (IntegerUnitOps.Contains(node.OpType) && IsIntegerUnit(node, out why))
        {
            int ops = _plan.Ops.Count, tensors = _plan.Tensors.Count;
            try
            {
                VisitUnit(node);
                return;
            }
            catch (NotSupportedException e) when (FloatOps.Contains(node.OpType))
            {
                // No integer form for these operands: the float op, if the values are there (what the unit began is undone).
                _plan.Ops.RemoveRange(ops, _plan.Ops.Count - ops);
                _plan.Tensors.RemoveRange(tensors, _plan.Tensors.Count - tensors);
                why = e.Message;
            }
        }
        if (!FloatOps.Contains(node.OpType))
            throw new NotSupportedException(IntegerUnitOps.Contains(node.OpType)
                ? $"{why}, and the engine has no float {node.OpType}"
                : $"op type {node.OpType} is not supported by the native engine");
        try
        {
            VisitFloat(node);
        }
        catch (NotSupportedException e) when (why.Length > 0)
        {
            throw new NotSupportedException($"{why}; as a float op: {e.Message}");
        }
    }

    /// <summary>Ops with an integer form "DequantizeLinear inputs -> op -> one QuantizeLinear".</summary>
    private static readonly HashSet<string> IntegerUnitOps = new(StringComparer.Ordinal)
    {
        "Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "Add", "Mul", "Concat", "Flatten", "Reshape", "Squeeze",
        "Unsqueeze", "Relu", "Clip", "Identity", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Erf", "Exp", "Neg", "Abs",
        "Softplus", "Transpose", "Slice", "Pad", "DepthToSpace", "SpaceToDepth", "Resize", "Dropout",
    };

    /// <summary>
    /// Whether <paramref name="node"/> is "DequantizeLinear inputs -> node -> one QuantizeLinear": one output, read by
    /// exactly one QuantizeLinear, and every activation input the DequantizeLinear of an integer activation.
    /// </summary>
    private bool IsIntegerUnit(OnnxNode node, out string why)
    {
        why = "";
        if (node.Outputs.Count(o => o.Length > 0) != 1)
        {
            why = "it has more than one output";
            return false;
        }
        string y = node.Outputs[0];
        var users = _consumers.GetValueOrDefault(y) ?? [];
        if (_index.IsGraphOutput(y) || users.Count != 1 || users[0].OpType != "QuantizeLinear" || users[0].Domain.Length != 0)
        {
            why = $"its output '{y}' is not quantized by exactly one QuantizeLinear";
            return false;
        }
        string? input = node.OpType is "Add" or "Mul" && node.Inputs.Count == 2 && !_dqActivation.ContainsKey(node.Inputs[0])
            ? node.Inputs[1]  // a constant first operand: Binary swaps them
            : node.Inputs.FirstOrDefault();
        if (string.IsNullOrEmpty(input) || !_dqActivation.ContainsKey(input))
        {
            why = $"input 0 ('{input}') is not the DequantizeLinear of an integer activation";
            return false;
        }
        if (node.OpType is "Add" or "Mul" or "Concat" or "MatMul")
            for (int i = 0; i < node.Inputs.Count; i++)
                if (node.Inputs[i].Length > 0 && !_dqActivation.ContainsKey(node.Inputs[i]) && !_dqConstant.ContainsKey(node.Inputs[i]))
                {
                    why = $"input {i} ('{node.Inputs[i]}') is neither the DequantizeLinear of an integer activation nor of a constant";
                    return false;
                }
        return true;
    }

    // ---- Q / DQ ------------------------------------------------------------------------------------------------

    private void VisitDequantize(OnnxNode dq)
    {
        string x = dq.Inputs[0];
        if (_index.TryGetInitializer(x, out _))
        {
            _dqConstant[dq.Outputs[0]] = dq;
            return;
        }
        if (!_quantized.TryGetValue(x, out var source))
            throw new NotSupportedException($"input '{x}' is not an integer activation the engine computes");
        var (type, quant) = ActivationQuant(dq, 1, 2);
        if (type != source.Type)
            throw new NotSupportedException($"reads {source.Type} data as {type}");
        _dqActivation[dq.Outputs[0]] = (source, quant);
    }

    /// <summary>The QuantizeLinear of a float value (a graph input, or the output of a float op): a quantize op.</summary>
    private void VisitQuantize(OnnxNode q)
    {
        if (!_float.ContainsKey(q.Inputs[0]) && !_dqActivation.ContainsKey(q.Inputs[0]))
            throw new NotSupportedException($"quantizes '{q.Inputs[0]}', which is not a float value the engine computes");
        var (type, quant) = ActivationQuant(q, 1, 2);
        var input = Materialize(FloatOf(q.Inputs[0]));
        int id = _plan.AddTensor(type, input.Dims);
        var w = new PayloadWriter();
        w.U32((uint)input.Id);
        w.U32((uint)id);
        w.Quant(quant);
        Emit(EngineOpKind.Quantize, q.Describe, w);
        _quantized[q.Outputs[0]] = new QTensor(id, input.Dims, type, quant);
    }

    /// <summary>Type and per-tensor quantization of a Q or DQ node (scale input <paramref name="scaleIndex"/>, zero point <paramref name="zpIndex"/>).</summary>
    private (EngineType Type, EngineQuant Quant) ActivationQuant(OnnxNode node, int scaleIndex, int zpIndex)
    {
        if (node.Inputs.Count <= scaleIndex || !_index.TryGetInitializer(node.Inputs[scaleIndex], out var scale) || scale.ElementType != OnnxElementType.Float || scale.ElementCount != 1)
            throw new NotSupportedException("its scale is not a constant float scalar (per-axis activations are not supported)");
        float s = scale.ToFloatArray()[0];
        if (!(s > 0) || !float.IsFinite(s))
            throw new InvalidOnnxModelException($"Model '{_modelName}': {node.Describe} has scale {s}; scales must be finite and > 0.");
        if (node.Inputs.Count <= zpIndex || node.Inputs[zpIndex].Length == 0)
            return (EngineType.UInt8, new EngineQuant(s, 0));
        if (!_index.TryGetInitializer(node.Inputs[zpIndex], out var zp) || zp.ElementCount != 1)
            throw new NotSupportedException("its zero point is not a constant scalar");
        return zp.ElementType switch
        {
            OnnxElementType.UInt8 => (EngineType.UInt8, new EngineQuant(s, zp.ToUInt8Array()[0])),
            OnnxElementType.Int8 => (EngineType.Int8, new EngineQuant(s, zp.ToInt8Array()[0])),
            var t => throw new NotSupportedException($"activation type {t} is not supported (uint8 and int8 are)"),
        };
    }

    // ---- node units "DQ inputs -> op -> Q" ---------------------------------------------------------------------

    private void VisitUnit(OnnxNode node)
    {
        OnnxNode q = _consumers[node.Outputs[0]][0];
        var (outType, outQuant) = ActivationQuant(q, 1, 2);
        QTensor result = node.OpType switch
        {
            "Conv" => Conv(node, outType, outQuant),
            "ConvTranspose" => IntegerConvTranspose(node, outType, outQuant),
            "MatMul" when _dqActivation.ContainsKey(node.Inputs[1]) => ActivationMatMul(node, outType, outQuant),
            "Gemm" or "MatMul" => Gemm(node, outType, outQuant),
            "MaxPool" or "AveragePool" => Pool(node, outType, outQuant),
            "GlobalAveragePool" => GlobalAveragePool(node, outType, outQuant),
            "Add" or "Mul" => Binary(node, outType, outQuant),
            "Concat" => IntegerConcat(node, outType, outQuant),
            "Relu" or "Clip" or "Identity" or "Dropout" or "Sigmoid" or "Tanh" or "HardSigmoid" or "HardSwish" or "LeakyRelu" or "Erf" or "Exp"
                or "Neg" or "Abs" or "Softplus" => Elementwise(node, outType, outQuant),
            "Transpose" or "Slice" or "Pad" or "DepthToSpace" or "SpaceToDepth" or "Resize" => IntegerMovement(node, outType, outQuant),
            _ => View(node, outType, outQuant),
        };
        _quantized[q.Outputs[0]] = result;
        _done.Add(q);
    }

    private (QTensor Source, EngineQuant Quant) Activation(OnnxNode node, int index)
    {
        if (index >= node.Inputs.Count || !_dqActivation.TryGetValue(node.Inputs[index], out var a))
            throw new NotSupportedException($"input {index} ('{(index < node.Inputs.Count ? node.Inputs[index] : "")}') is not the DequantizeLinear of an integer activation");
        return a;
    }

    private QTensor Conv(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        var weight = ConstantWeights(node, 1, out long[] wDims);
        if (wDims.Length != 4 || x.Dims.Length != 3)
            throw new NotSupportedException($"only 2-D convolutions over NCHW are supported (input rank {x.Dims.Length + 1}, weight rank {wDims.Length})");
        long m = wDims[0], cpg = wDims[1], kh = wDims[2], kw = wDims[3];
        long groups = node.GetInt("group", 1);
        if (groups < 1 || x.Dims[0] != cpg * groups)
            throw Invalid(node, $"input has {x.Dims[0]} channels, the weight expects {cpg} x {groups} groups");
        if (node.GetInts("kernel_shape") is { } ks && (ks.Length != 2 || ks[0] != kh || ks[1] != kw))
            throw Invalid(node, $"kernel_shape [{string.Join(", ", ks)}] does not match the weight [{kh}, {kw}]");
        var geo = Geometry(node, x.Dims, kh, kw);
        CheckWeightAxis(node, weight, 0, m);
        x = Materialize(x);
        long[] outDims = [m, geo.OutH, geo.OutW];
        int id = _plan.AddTensor(outType, outDims);
        var w = PayloadWriter.OneInput(x.Id, id, xq, outQuant);
        foreach (long v in new[] { m, cpg, kh, kw, groups, geo.Sh, geo.Sw, geo.Pt, geo.Pl, geo.Pb, geo.Pr, geo.Dh, geo.Dw })
            w.I64(v);
        WriteWeights(w, node, weight, m, 2, perChannelCount: m);
        Emit(EngineOpKind.Conv, node.Describe, w);
        return new QTensor(id, outDims, outType, outQuant);
    }

    private QTensor Gemm(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        var weight = ConstantWeights(node, 1, out long[] wDims);
        bool gemm = node.OpType == "Gemm";
        if (gemm && (node.GetInt("transA", 0) != 0 || node.GetFloat("alpha", 1f) != 1f || node.GetFloat("beta", 1f) != 1f))
            throw new NotSupportedException("Gemm with transA, alpha != 1 or beta != 1 is not supported");
        bool transB = gemm && node.GetInt("transB", 0) != 0;
        if (wDims.Length != 2)
            throw new NotSupportedException($"the weight has rank {wDims.Length}; only 2-D weights are supported");
        // Gemm rows are [K]; a MatMul's may be [.., K] (a transformer's [tokens, K]): one GEMM over every row's vectors.
        if (gemm && x.Dims.Length != 1)
            throw new NotSupportedException($"the input has {x.Dims.Length} dimensions per row; Gemm takes [batch, K] inputs");
        long k = transB ? wDims[1] : wDims[0], n = transB ? wDims[0] : wDims[1];
        if (x.Dims[^1] != k)
            throw Invalid(node, $"input has {x.Dims[^1]} features, the weight expects K = {k}");
        CheckWeightAxis(node, weight, transB ? 0 : 1, n);
        if (x.Dims.Length > 1)
            x = Materialize(x);  // [.., K] vectors: the plan tensor needs K last (a flat row is read as one vector as it is)
        long[] outDims = [.. x.Dims[..^1], n];
        int id = _plan.AddTensor(outType, outDims);
        var w = PayloadWriter.OneInput(x.Id, id, xq, outQuant);
        w.I64(k);
        w.I64(n);
        w.U32(transB ? 1u : 0u);
        WriteWeights(w, node, weight, n, gemm ? 2 : -1, perChannelCount: null);
        Emit(EngineOpKind.Gemm, node.Describe, w);
        return new QTensor(id, outDims, outType, outQuant);
    }

    private sealed record Weights(OnnxNode Dq, OnnxTensor Values, float[] Scales, int[]? ZeroPoints, int Axis);

    private Weights ConstantWeights(OnnxNode node, int index, out long[] dims)
    {
        if (index >= node.Inputs.Count || !_dqConstant.TryGetValue(node.Inputs[index], out var dq))
            throw new NotSupportedException($"input {index} is not a constant DequantizeLinear (float weights are not supported)");
        _index.TryGetInitializer(dq.Inputs[0], out var values);
        if (values.ElementType is not (OnnxElementType.Int8 or OnnxElementType.Int4))
            throw new NotSupportedException($"weights of type {values.ElementType} are not supported (int8 and int4 are)");
        if (dq.Inputs.Count < 2 || !_index.TryGetInitializer(dq.Inputs[1], out var scale) || scale.ElementType != OnnxElementType.Float)
            throw new NotSupportedException("the weight scale is not a constant float tensor");
        int[]? zps = null;
        if (dq.Inputs.Count > 2 && dq.Inputs[2].Length > 0)
        {
            if (!_index.TryGetInitializer(dq.Inputs[2], out var zp) || zp.ElementType != values.ElementType)
                throw new NotSupportedException("the weight zero point is not a constant of the weight's type");
            zps = zp.ElementType == OnnxElementType.Int8 ? zp.ToInt8Array().Select(v => (int)v).ToArray() : zp.ToInt4Array().Select(v => (int)v).ToArray();
            if (zps.All(v => v == 0))
                zps = null;
        }
        dims = values.Dims;
        int axis = (int)dq.GetInt("axis", 1);
        if (axis < 0)
            axis += dims.Length;
        float[] scales = scale.ToFloatArray();
        if (dq.HasAttribute("block_size") && dq.GetInt("block_size", 0) != 0)
            throw new NotSupportedException("blocked weight quantization is not supported");
        return new Weights(dq, values, scales, zps, axis);
    }

    private void CheckWeightAxis(OnnxNode node, Weights w, int channelAxis, long channels)
    {
        if (w.Scales.Length == 1 && (w.ZeroPoints is null || w.ZeroPoints.Length == 1))
            return;
        if (w.Axis != channelAxis)
            throw new NotSupportedException($"weights are quantized along axis {w.Axis}; the engine needs per-tensor or axis {channelAxis} (output channels)");
        if (w.Scales.Length != channels || (w.ZeroPoints is not null && w.ZeroPoints.Length != channels))
            throw Invalid(node, $"weight has {w.Scales.Length} scales for {channels} output channels");
    }

    /// <summary>w_type, has_zp, has_bias, [scale_count], scales, zero points, bias, weight bytes.</summary>
    private void WriteWeights(PayloadWriter w, OnnxNode node, Weights weights, long channels, int biasIndex, long? perChannelCount)
    {
        int[]? bias = biasIndex >= 0 && node.Inputs.Count > biasIndex && node.Inputs[biasIndex].Length > 0 ? Bias(node, biasIndex, channels) : null;
        w.U32(weights.Values.ElementType == OnnxElementType.Int8 ? 2u : 6u);
        w.U32(weights.ZeroPoints is null ? 0u : 1u);
        w.U32(bias is null ? 0u : 1u);
        float[] scales = weights.Scales;
        if (perChannelCount is { } count && scales.Length == 1)
            scales = Enumerable.Repeat(scales[0], (int)count).ToArray();
        if (perChannelCount is null)
            w.U32((uint)scales.Length);
        foreach (float s in scales)
        {
            if (!(s > 0) || !float.IsFinite(s))
                throw Invalid(node, $"weight scale {s} is not finite and > 0");
            w.F32(s);
        }
        if (weights.ZeroPoints is { } zps)
            foreach (long c in Enumerable.Range(0, (int)channels))
                w.I32(zps.Length == 1 ? zps[0] : zps[c]);
        if (bias is not null)
            foreach (int b in bias)
                w.I32(b);
        w.Bytes(weights.Values.ToRawBytes());
    }

    /// <summary>An int32 bias behind a DequantizeLinear, used as stored (as ONNX Runtime's QLinearConv / QGemm do).</summary>
    private int[] Bias(OnnxNode node, int index, long channels)
    {
        if (!_dqConstant.TryGetValue(node.Inputs[index], out var dq) || !_index.TryGetInitializer(dq.Inputs[0], out var values) || values.ElementType != OnnxElementType.Int32)
            throw new NotSupportedException("the bias is not an int32 constant behind a DequantizeLinear");
        if (dq.Inputs.Count > 2 && dq.Inputs[2].Length > 0 && _index.TryGetInitializer(dq.Inputs[2], out var zp) && zp.ToInt32Array().Any(v => v != 0))
            throw new NotSupportedException("the bias has a non-zero zero point");
        int[] b = values.ToInt32Array();
        if (b.Length != channels)
            throw Invalid(node, $"bias has {b.Length} values for {channels} output channels");
        return b;
    }

    private sealed record Geo(long Sh, long Sw, long Pt, long Pl, long Pb, long Pr, long Dh, long Dw, long OutH, long OutW);

    /// <summary>Strides, explicit pads (auto_pad resolved), dilations and the output size of a 2-D window op.</summary>
    private Geo Geometry(OnnxNode node, long[] x, long kh, long kw)
    {
        long[] strides = node.GetInts("strides") ?? [1, 1];
        long[] dilations = node.GetInts("dilations") ?? [1, 1];
        long[] pads = node.GetInts("pads") ?? [0, 0, 0, 0];
        if (strides.Length != 2 || dilations.Length != 2 || pads.Length != 4 || strides.Any(s => s < 1) || dilations.Any(d => d < 1) || pads.Any(p => p < 0))
            throw Invalid(node, "strides, dilations or pads do not describe a 2-D window");
        long h = x[1], wd = x[2];
        string autoPad = node.GetString("auto_pad") ?? "NOTSET";
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            long[] size = [h, wd], k = [kh, kw];
            for (int i = 0; i < 2; i++)
            {
                long outSize = (size[i] + strides[i] - 1) / strides[i];
                long total = Math.Max(0, (outSize - 1) * strides[i] + (k[i] - 1) * dilations[i] + 1 - size[i]);
                long small = total / 2, large = total - small;
                (pads[i], pads[i + 2]) = autoPad == "SAME_UPPER" ? (small, large) : (large, small);
            }
        }
        else if (autoPad == "VALID")
        {
            pads = [0, 0, 0, 0];
        }
        else if (autoPad != "NOTSET")
        {
            throw Invalid(node, $"auto_pad '{autoPad}' is not an ONNX value");
        }
        long effH = (kh - 1) * dilations[0] + 1, effW = (kw - 1) * dilations[1] + 1;
        long spanH = h + pads[0] + pads[2] - effH, spanW = wd + pads[1] + pads[3] - effW;
        if (spanH < 0 || spanW < 0)
            throw Invalid(node, $"the {kh}x{kw} window does not fit the padded {h}x{wd} input");
        long oh = spanH / strides[0] + 1, ow = spanW / strides[1] + 1;
        if (node.GetInt("ceil_mode", 0) != 0)
        {
            long ch = (spanH + strides[0] - 1) / strides[0] + 1, cw = (spanW + strides[1] - 1) / strides[1] + 1;
            if (ch != oh || cw != ow)
                throw new NotSupportedException("ceil_mode = 1 with a partial last window is not supported");
        }
        return new Geo(strides[0], strides[1], pads[0], pads[1], pads[2], pads[3], dilations[0], dilations[1], oh, ow);
    }

    private QTensor Pool(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        if (x.Dims.Length != 3)
            throw new NotSupportedException("only 2-D pooling over NCHW is supported");
        if (x.Type != outType)
            throw new NotSupportedException($"pooling from {x.Type} to {outType} is not supported");
        long[] k = node.GetInts("kernel_shape") ?? throw Invalid(node, "kernel_shape is missing");
        if (k.Length != 2 || k.Any(v => v < 1))
            throw new NotSupportedException("only 2-D windows are supported");
        bool max = node.OpType == "MaxPool";
        if (max && node.GetInt("storage_order", 0) != 0)
            throw new NotSupportedException("storage_order = 1 is not supported");
        var geo = Geometry(node, x.Dims, k[0], k[1]);
        var source = Materialize(x);
        long[] outDims = [x.Dims[0], geo.OutH, geo.OutW];
        // MaxPool keeps the input's quantization; a different output quantization is a table after it.
        EngineQuant poolOut = max ? xq : outQuant;
        int id = _plan.AddTensor(outType, outDims);
        var w = PayloadWriter.OneInput(source.Id, id, xq, poolOut);
        foreach (long v in new[] { k[0], k[1], geo.Sh, geo.Sw, geo.Pt, geo.Pl, geo.Pb, geo.Pr, geo.Dh, geo.Dw })
            w.I64(v);
        w.U32(node.GetInt("count_include_pad", 0) != 0 ? 1u : 0u);
        Emit(max ? EngineOpKind.MaxPool : EngineOpKind.AveragePool, node.Describe, w);
        var pooled = new QTensor(id, outDims, outType, poolOut);
        return max && !poolOut.SameAs(outQuant) ? Table(node, pooled, xq, outType, outQuant, f => f) : pooled;
    }

    private QTensor GlobalAveragePool(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        if (x.Dims.Length != 3 || x.Type != outType)
            throw new NotSupportedException("only NCHW input of the output's type is supported");
        var source = Materialize(x);
        long[] outDims = [x.Dims[0], 1, 1];
        int id = _plan.AddTensor(outType, outDims);
        var w = PayloadWriter.OneInput(source.Id, id, xq, outQuant);
        Emit(EngineOpKind.GlobalAveragePool, node.Describe, w);
        return new QTensor(id, outDims, outType, outQuant);
    }

    /// <summary>An elementwise function between a DQ and a Q: Q(f(DQ(x))) for each of the 256 input values, as ONNX Runtime computes it in float.</summary>
    private QTensor Elementwise(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        Func<float, float> f = node.OpType switch
        {
            "Identity" or "Dropout" => v => v,
            _ => UnaryFunction(node),
        };
        return Table(node, x, xq, outType, outQuant, f);
    }

    private float FloatScalar(OnnxNode node, int index)
    {
        if (!_index.TryGetInitializer(node.Inputs[index], out var t) || t.ElementType != OnnxElementType.Float || t.ElementCount != 1)
            throw new NotSupportedException($"input {index} is not a constant float scalar");
        return t.ToFloatArray()[0];
    }

    /// <summary>Q -> Clip(qmin, qmax) on the integers (activations narrower than their 8-bit container): a table.</summary>
    private void VisitIntegerClip(OnnxNode node)
    {
        var x = _quantized[node.Inputs[0]];
        int lo = int.MinValue, hi = int.MaxValue;
        for (int i = 1; i <= 2; i++)
        {
            if (node.Inputs.Count <= i || node.Inputs[i].Length == 0)
                continue;
            if (!_index.TryGetInitializer(node.Inputs[i], out var t) || t.ElementCount != 1 || t.ElementType is not (OnnxElementType.UInt8 or OnnxElementType.Int8))
                throw new NotSupportedException($"clip bound {i} is not a constant of the activation's type");
            int v = t.ElementType == OnnxElementType.UInt8 ? t.ToUInt8Array()[0] : t.ToInt8Array()[0];
            if (i == 1) lo = v; else hi = v;
        }
        var table = new byte[256];
        for (int b = 0; b < 256; b++)
        {
            int v = x.Type == EngineType.UInt8 ? b : (sbyte)b;
            table[b] = (byte)Math.Min(Math.Max(v, lo), hi);
        }
        _quantized[node.Outputs[0]] = EmitTable(node.Describe, Materialize(x), x.Type, x.Quant, table);
    }

    private QTensor Table(OnnxNode node, QTensor x, EngineQuant xq, EngineType outType, EngineQuant outQuant, Func<float, float> f)
        => EmitTable(node.Describe, x, outType, outQuant, RequantizeTable(x.Type, xq, outType, outQuant, f));

    private QTensor EmitTable(string source, QTensor x, EngineType outType, EngineQuant outQuant, byte[] table)
    {
        int id = _plan.AddTensor(outType, x.Dims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        w.Bytes(table);
        Emit(EngineOpKind.Lut, source, w);
        return new QTensor(id, x.Dims, outType, outQuant);
    }

    /// <summary>Flatten / Reshape / Squeeze / Unsqueeze keeping the batch: the same integers under a new shape.</summary>
    private QTensor View(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        long[] dims = ViewDims(node, x.Dims);
        if (x.Type != outType || !xq.SameAs(outQuant))
            return Table(node, x with { Dims = dims }, xq, outType, outQuant, f => f);
        return x with { Dims = dims, Quant = outQuant };
    }

    /// <summary>The per-row shape after a Flatten / Reshape / Squeeze / Unsqueeze of a row of <paramref name="x"/>.</summary>
    private long[] ViewDims(OnnxNode node, long[] x)
    {
        long rowSize = x.Aggregate(1L, (a, b) => a * b);
        long[] dims = node.OpType switch
        {
            "Flatten" => node.GetInt("axis", 1) == 1 ? [rowSize] : throw new NotSupportedException("Flatten with axis != 1 is not supported"),
            "Reshape" => ReshapeDims(node, rowSize),
            "Squeeze" => SqueezeDims(node, x, squeeze: true),
            "Unsqueeze" => SqueezeDims(node, x, squeeze: false),
            _ => x,  // Identity, Dropout
        };
        if (dims.Length is < 1 or > 4 || dims.Aggregate(1L, (a, b) => a * b) != rowSize)
            throw new NotSupportedException($"the reshaped row [{string.Join(", ", dims)}] is not 1 to 4 dimensions of {rowSize} elements");
        return dims;
    }

    private long[] ReshapeDims(OnnxNode node, long rowSize)
    {
        if (node.Inputs.Count < 2 || !TryIntegerValue(node.Inputs[1], out long[] shape))
            throw new NotSupportedException("the target shape is not a constant");
        if (shape.Skip(1).Contains(BatchSymbol))
            throw new NotSupportedException("the target shape moves the batch away from the first dimension");
        if (shape.Length > 0 && shape[0] == BatchSymbol)
            shape = [0, .. shape[1..]];  // the run's batch, copied from the input
        if (shape.Length < 2 || node.GetInt("allowzero", 0) != 0)
            throw new NotSupportedException("the target shape must keep the batch as its first dimension");
        if (shape[0] is not (0 or -1) && shape[0] < 1)
            throw new NotSupportedException("the target shape's batch dimension is not 0, -1 or a size");
        long[] rest = shape[1..];
        if (shape[0] == -1 && rest.Any(d => d <= 0))
            throw new NotSupportedException("the target shape infers the batch and another dimension");
        int infer = Array.IndexOf(rest, -1L);
        if (rest.Any(d => d == 0 || d < -1) || rest.Count(d => d == -1) > 1)
            throw new NotSupportedException("the target shape copies dimensions (0) or is malformed");
        if (infer >= 0)
        {
            long known = rest.Where(d => d > 0).Aggregate(1L, (a, b) => a * b);
            rest[infer] = known > 0 && rowSize % known == 0 ? rowSize / known : throw Invalid(node, $"cannot reshape rows of {rowSize} elements to [{string.Join(", ", shape)}]");
        }
        return rest;
    }

    private long[] SqueezeDims(OnnxNode node, long[] dims, bool squeeze)
    {
        long[]? axes = node.GetInts("axes");
        if (axes is null && node.Inputs.Count > 1 && node.Inputs[1].Length > 0)
            axes = _index.TryGetInitializer(node.Inputs[1], out var t) ? t.ToInt64Array() : throw new NotSupportedException("axes are not constant");
        if (axes is null)
            return squeeze ? dims.Where(d => d != 1).DefaultIfEmpty(1).ToArray() : throw Invalid(node, "Unsqueeze needs axes");
        var full = new List<long> { -1 };
        full.AddRange(dims);
        int rank = squeeze ? full.Count : full.Count + axes.Length;
        var normalized = axes.Select(a => a < 0 ? a + rank : a).ToList();
        if (normalized.Contains(0))
            throw new NotSupportedException("squeezing or unsqueezing the batch dimension is not supported");
        if (squeeze)
            return full.Where((d, i) => !normalized.Contains(i)).Skip(1).ToArray();
        var result = new List<long>();
        int src = 0;
        for (int i = 0; i < rank; i++)
            result.Add(normalized.Contains(i) ? 1 : full[src++]);
        return result.Skip(1).ToArray();
    }

    /// <summary>
    /// The engine tensor holding <paramref name="x"/> with exactly its logical shape: a view whose shape differs from the
    /// tensor it aliases is copied (identity table) so shape-aware ops see the right dimensions.
    /// </summary>
    private QTensor Materialize(QTensor x)
        => _plan.Tensors[x.Id].Dims.SequenceEqual(x.Dims) ? x : x with { Id = CopyTensor(x.Id, x.Dims, x.Type, "reshape copy") };

    private FTensor Materialize(FTensor x)
        => _plan.Tensors[x.Id].Dims.SequenceEqual(x.Dims) ? x : x with { Id = CopyTensor(x.Id, x.Dims, EngineType.Float32, "reshape copy") };

    /// <summary>A new tensor of <paramref name="dims"/> holding the elements of tensor <paramref name="id"/> (one COPY op).</summary>
    private int CopyTensor(int id, long[] dims, EngineType type, string source)
    {
        long count = dims.Aggregate(1L, (a, b) => a * b);
        int copy = _plan.AddTensor(type, dims);
        EmitCopy(id, copy, [count], 0, [1], source);
        return copy;
    }

    private void Emit(EngineOpKind kind, string source, PayloadWriter payload) => _plan.Ops.Add(new EngineOp(kind, source, payload.ToArray()));

    private InvalidOnnxModelException Invalid(OnnxNode node, string problem)
        => new($"Model '{_modelName}': {node.Describe}: {problem}.");
}

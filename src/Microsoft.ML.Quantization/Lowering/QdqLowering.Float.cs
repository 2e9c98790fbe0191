using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Lowering;

/// <summary>
/// Float segments: a node the model leaves in float (no "DQ -> op -> Q" around it) runs as a float op of the engine on
/// float values - graph inputs, the outputs of other float ops, and activations dequantized on demand (one
/// DEQUANTIZE per activation); a QuantizeLinear of a float value closes the segment. Elementwise functions, broadcasting
/// arithmetic with float or dequantized constants, BatchNormalization, views, the data movement of the integer units,
/// Softmax, LayerNormalization, ReduceMean, GlobalAveragePool and MatMul of two activations.
/// </summary>
internal sealed partial class QdqLowering
{
    private static readonly HashSet<string> FloatOps = new(StringComparer.Ordinal)
    {
        "Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Clip", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal",
        "Softplus", "Identity", "Dropout", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "BatchNormalization", "Flatten", "Reshape",
        "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "Concat", "Pad", "DepthToSpace", "SpaceToDepth", "Resize", "Upsample",
        "Softmax", "LayerNormalization", "ReduceMean", "GlobalAveragePool", "MatMul", "Conv", "ConvTranspose",
    };

    /// <summary>The float value of <paramref name="name"/>: a float tensor, or an integer activation dequantized once.</summary>
    private FTensor FloatOf(string name)
    {
        if (_float.TryGetValue(name, out var value))
            return value;
        if (!_dqActivation.TryGetValue(name, out var dq))
            throw new NotSupportedException($"'{name}' is not a value the engine computes");
        var source = Materialize(dq.Source);
        int id = _plan.AddTensor(EngineType.Float32, source.Dims);
        var w = new PayloadWriter();
        w.U32((uint)source.Id);
        w.U32((uint)id);
        w.Quant(dq.Quant);
        Emit(EngineOpKind.Dequantize, $"dequantize '{name}'", w);
        return _float[name] = new FTensor(id, source.Dims);
    }

    /// <summary>A float op whose values are float tensors (or activations dequantized for it).</summary>
    private void VisitFloat(OnnxNode node)
    {
        switch (node.OpType)
        {
            case "Flatten" when node.GetInt("axis", 1) > 1 && (_consumers.GetValueOrDefault(node.Outputs[0]) ?? []) is { Count: > 0 } users
                                 && users.All(u => u.OpType == "Softmax" && u.GetInt("axis", -1) is -1 or 1):
            {
                // [b, d1, .., dn] -> [b * d1 * .. * d(axis-1), rest]: the batch merges into the rows of a softmax over the
                // last axis (the opset 13 upgrade of an older Softmax), which each row computes alone.
                var x = FloatOf(node.Inputs[0]);
                int axis = (int)node.GetInt("axis", 1) - 1;
                if (axis > x.Dims.Length)
                    throw Invalid(node, $"Flatten axis {axis + 1} exceeds the rank {x.Dims.Length + 1}");
                _float[node.Outputs[0]] = x with { Dims = [x.Dims[..axis].Aggregate(1L, (p, d) => p * d), x.Dims[axis..].Aggregate(1L, (p, d) => p * d)] };
                _batchMerged.Add(node.Outputs[0]);
                return;
            }
            case "Flatten" or "Reshape" or "Squeeze" or "Unsqueeze" or "Identity" or "Dropout":
            {
                var x = FloatOf(node.Inputs[0]);
                _float[node.Outputs[0]] = x with { Dims = ViewDims(node, x.Dims) };
                return;
            }
            case "Add" or "Sub" or "Mul" or "Div" or "Pow" or "Max" or "Min":
                FloatBinary(node);
                return;
            case "BatchNormalization":
                BatchNormalization(node);
                return;
            case "Transpose" or "Slice" or "Pad" or "DepthToSpace" or "SpaceToDepth" or "Resize" or "Upsample":
            {
                var moved = Move(node, ValueOf(Materialize(FloatOf(node.Inputs[0]))));
                _float[node.Outputs[0]] = new FTensor(moved.Id, moved.Dims);
                return;
            }
            case "Split":
                SplitParts(node, ValueOf(Materialize(FloatOf(node.Inputs[0]))));
                return;
            case "Concat":
            {
                var parts = node.Inputs.Select(i => Materialize(FloatOf(i))).ToList();
                int axis = RowAxis(node.GetInt("axis", 0), parts[0].Dims.Length, node);
                long[] dims = ConcatDims(parts.Select(p => p.Dims).ToList(), axis, node);
                int id = _plan.AddTensor(EngineType.Float32, dims);
                EmitConcat(id, axis, parts.Select(p => (p.Id, (byte[]?)null)).ToList(), node.Describe);
                _float[node.Outputs[0]] = new FTensor(id, dims);
                return;
            }
            case "Softmax":
                Softmax(node);
                return;
            case "Conv" or "ConvTranspose":
                FloatConvolution(node);
                return;
            case "LayerNormalization":
                LayerNormalization(node);
                return;
            case "ReduceMean" or "GlobalAveragePool":
                ReduceMean(node);
                return;
            case "MatMul":
            {
                if (_dqActivation.ContainsKey(node.Inputs[0]) && _dqConstant.ContainsKey(node.Inputs[1]))
                {
                    // DQ(x) x DQ(W) with a float output (ONNX Runtime's MatMulIntegerToFloat): an integer GEMM, float(acc) * sx * sw.
                    var product = Gemm(node, EngineType.Float32, new EngineQuant(1f, 0));
                    _float[node.Outputs[0]] = new FTensor(product.Id, product.Dims);
                    return;
                }
                var a = Materialize(FloatOf(node.Inputs[0]));
                if (!_float.ContainsKey(node.Inputs[1]) && !_dqActivation.ContainsKey(node.Inputs[1]))
                {
                    FloatGemm(node, a);
                    return;
                }
                var b = Materialize(FloatOf(node.Inputs[1]));
                long[] dims = MatMulDims(a.Dims, b.Dims, node);
                int id = _plan.AddTensor(EngineType.Float32, dims);
                var w = new PayloadWriter();
                w.U32((uint)a.Id);
                w.U32((uint)b.Id);
                w.U32((uint)id);
                Emit(EngineOpKind.MatMul, node.Describe, w);
                _float[node.Outputs[0]] = new FTensor(id, dims);
                return;
            }
            default:
                FloatUnary(node);
                return;
        }
    }

    /// <summary>Float values whose per-row shape comes from a Flatten that merged the batch into their first dim.</summary>
    private readonly HashSet<string> _batchMerged = new(StringComparer.Ordinal);

    /// <summary>A float MatMul [.., K] x constant [K, N] (float, or dequantized): FLOAT_GEMM.</summary>
    private void FloatGemm(OnnxNode node, FTensor a)
    {
        var (weights, dims) = ConstantOperand(node, 1, 2);
        if (dims.Length != 2 || dims[0] != a.Dims[^1])
            throw new NotSupportedException($"a float MatMul of [.., {a.Dims[^1]}] rows with constant weights of shape [{string.Join(", ", dims)}] is not supported (2-D [K, N] weights are)");
        long[] outDims = [.. a.Dims[..^1], dims[1]];
        int id = _plan.AddTensor(EngineType.Float32, outDims);
        var w = new PayloadWriter();
        w.U32((uint)a.Id);
        w.U32((uint)id);
        w.I64(dims[0]);
        w.I64(dims[1]);
        w.U32(0);
        foreach (float v in weights)
            w.F32(v);
        Emit(EngineOpKind.FloatGemm, node.Describe, w);
        _float[node.Outputs[0]] = new FTensor(id, outDims);
    }

    /// <summary>The engine function of an elementwise op, with alpha and beta.</summary>
    private (EngineUnary Func, float Alpha, float Beta) UnaryOf(OnnxNode node) => node.OpType switch
    {
        "Relu" => (EngineUnary.Relu, 0f, 0f),
        "Sigmoid" => (EngineUnary.Sigmoid, 0f, 0f),
        "Tanh" => (EngineUnary.Tanh, 0f, 0f),
        "HardSigmoid" => (EngineUnary.HardSigmoid, node.GetFloat("alpha", 0.2f), node.GetFloat("beta", 0.5f)),
        "HardSwish" => (EngineUnary.HardSwish, 0f, 0f),
        "LeakyRelu" => (EngineUnary.LeakyRelu, node.GetFloat("alpha", 0.01f), 0f),
        "Clip" => ClipBounds(node),
        "Erf" => (EngineUnary.Erf, 0f, 0f),
        "Exp" => (EngineUnary.Exp, 0f, 0f),
        "Log" => (EngineUnary.Log, 0f, 0f),
        "Sqrt" => (EngineUnary.Sqrt, 0f, 0f),
        "Neg" => (EngineUnary.Neg, 0f, 0f),
        "Abs" => (EngineUnary.Abs, 0f, 0f),
        "Reciprocal" => (EngineUnary.Reciprocal, 0f, 0f),
        "Softplus" => (EngineUnary.Softplus, 0f, 0f),
        _ => throw new NotSupportedException($"op type {node.OpType} has no float form in the engine"),
    };

    private (EngineUnary, float, float) ClipBounds(OnnxNode node)
    {
        float lo = float.NegativeInfinity, hi = float.PositiveInfinity;
        if (node.HasAttribute("min") || node.HasAttribute("max"))
        {
            lo = node.GetFloat("min", lo);
            hi = node.GetFloat("max", hi);
        }
        if (node.Inputs.Count > 1 && node.Inputs[1].Length > 0)
            lo = FloatScalar(node, 1);
        if (node.Inputs.Count > 2 && node.Inputs[2].Length > 0)
            hi = FloatScalar(node, 2);
        return (EngineUnary.Clip, lo, hi);
    }

    /// <summary>An elementwise function in float32 as the engine's float kernel computes it (for the tables of 8-bit units).</summary>
    private Func<float, float> UnaryFunction(OnnxNode node)
    {
        var (func, alpha, beta) = UnaryOf(node);
        return func switch
        {
            EngineUnary.Relu => v => v > 0f ? v : 0f,
            EngineUnary.Sigmoid => v => 1f / (1f + MathF.Exp(-v)),
            EngineUnary.Tanh => MathF.Tanh,
            EngineUnary.HardSigmoid => v => MathF.Max(0f, MathF.Min(1f, alpha * v + beta)),
            EngineUnary.HardSwish => v => v * MathF.Max(0f, MathF.Min(1f, (1f / 6f) * v + 0.5f)),
            EngineUnary.LeakyRelu => v => v < 0f ? alpha * v : v,
            EngineUnary.Clip => v => MathF.Min(MathF.Max(v, alpha), beta),
            EngineUnary.Erf => v => (float)Erf(v),
            EngineUnary.Exp => MathF.Exp,
            EngineUnary.Neg => v => -v,
            EngineUnary.Abs => MathF.Abs,
            EngineUnary.Softplus => v => MathF.Log(MathF.Exp(v) + 1f),
            _ => throw new NotSupportedException($"op type {node.OpType} has no table form in the engine"),
        };
    }

    /// <summary>erf in double (Abramowitz and Stegun 7.1.26 is too coarse for a table; this series and fraction are exact to float).</summary>
    private static double Erf(double x)
    {
        double ax = Math.Abs(x);
        double r;
        if (ax < 2.5)
        {
            double term = ax, sum = ax, x2 = ax * ax;  // Maclaurin series
            for (int n = 1; n < 80 && Math.Abs(term) > 1e-17 * Math.Abs(sum); n++)
            {
                term *= -x2 / n;
                sum += term / (2 * n + 1);
            }
            r = 2 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            double f = 0;  // continued fraction of erfc
            for (int n = 60; n >= 1; n--)
                f = n / 2.0 / (ax + f);
            r = 1 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / (ax + f);
        }
        return x < 0 ? -r : r;
    }

    private void FloatUnary(OnnxNode node)
    {
        var (func, alpha, beta) = UnaryOf(node);
        var x = FloatOf(node.Inputs[0]);
        int id = _plan.AddTensor(EngineType.Float32, _plan.Tensors[x.Id].Dims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        w.U32((uint)func);
        w.F32(alpha);
        w.F32(beta);
        Emit(EngineOpKind.Unary, node.Describe, w);
        _float[node.Outputs[0]] = new FTensor(id, x.Dims);
    }

    /// <summary>Broadcasting float arithmetic; a constant operand (float, or dequantized) travels in the op.</summary>
    private void FloatBinary(OnnxNode node)
    {
        var func = node.OpType switch
        {
            "Add" => EngineBinary.Add, "Sub" => EngineBinary.Sub, "Mul" => EngineBinary.Mul, "Div" => EngineBinary.Div, "Pow" => EngineBinary.Pow,
            "Max" => EngineBinary.Max, _ => EngineBinary.Min,
        };
        if (node.Inputs.Count != 2)
            throw new NotSupportedException($"{node.OpType} of {node.Inputs.Count} inputs is not supported (2 are)");
        bool IsValue(string n) => _float.ContainsKey(n) || _dqActivation.ContainsKey(n);
        string a = node.Inputs[0], b = node.Inputs[1];
        if (!IsValue(a) && IsValue(b))
        {
            if (func is EngineBinary.Add or EngineBinary.Mul or EngineBinary.Max or EngineBinary.Min)
                (a, b) = (b, a);
            else if (func is EngineBinary.Sub)
            {
                // c - x = (-x) + c
                var neg = FloatOf(b);
                int negated = _plan.AddTensor(EngineType.Float32, _plan.Tensors[neg.Id].Dims);
                var nw = new PayloadWriter();
                nw.U32((uint)neg.Id);
                nw.U32((uint)negated);
                nw.U32((uint)EngineUnary.Neg);
                nw.F32(0);
                nw.F32(0);
                Emit(EngineOpKind.Unary, node.Describe, nw);
                EmitFloatBinary(node, new FTensor(negated, neg.Dims), EngineBinary.Add, ConstantOperand(node, 0, neg.Dims.Length), null);
                return;
            }
            else
                throw new NotSupportedException($"{node.OpType} with a constant first operand is not supported");
        }
        var x = FloatOf(a);
        if (IsValue(b))
            EmitFloatBinary(node, x, func, null, FloatOf(b));
        else
            EmitFloatBinary(node, x, func, ConstantOperand(node, node.Inputs[1] == b ? 1 : 0, x.Dims.Length), null);
    }

    private (float[] Values, long[] Dims) ConstantOperand(OnnxNode node, int index, int rowRank)
    {
        float[] values;
        long[] dims;
        if (_dqConstant.TryGetValue(node.Inputs[index], out var dq))
            (values, dims) = DequantizedConstant(dq);
        else
        {
            var t = Constant(node, index);
            if (t.ElementType != OnnxElementType.Float)
                throw new NotSupportedException($"input {index} is a {t.ElementType} constant, not float");
            (values, dims) = (t.ToFloatArray(), t.Dims);
        }
        return (values, PerRowConstantDims(dims, rowRank));
    }

    private void EmitFloatBinary(OnnxNode node, FTensor a, EngineBinary func, (float[] Values, long[] Dims)? constant, FTensor? b)
    {
        a = Materialize(a);
        long[] bDims = constant?.Dims ?? Materialize(b!).Dims;
        long[] dims = BroadcastDims(a.Dims, bDims, node);
        int id = _plan.AddTensor(EngineType.Float32, dims);
        PayloadWriter w;
        if (constant is { } c)
        {
            w = BinaryHeader(a.Id, 0, id, func, c.Dims);
            foreach (float v in c.Values)
                w.F32(v);
        }
        else
        {
            w = BinaryHeader(a.Id, Materialize(b!).Id, id, func, null);
        }
        Emit(EngineOpKind.Binary, node.Describe, w);
        _float[node.Outputs[0]] = new FTensor(id, dims);
    }

    /// <summary>BatchNormalization (inference): x * a + b per channel, a = scale / sqrt(var + epsilon), b = B - mean * a.</summary>
    private void BatchNormalization(OnnxNode node)
    {
        var x = FloatOf(node.Inputs[0]);
        if (node.Outputs.Count(o => o.Length > 0) != 1)
            throw new NotSupportedException("BatchNormalization in training mode is not supported");
        float[] scale = ConstantFloats(node, 1), bias = ConstantFloats(node, 2), mean = ConstantFloats(node, 3), variance = ConstantFloats(node, 4);
        float epsilon = node.GetFloat("epsilon", 1e-5f);
        long channels = x.Dims[0];
        if (scale.Length != channels || bias.Length != channels || mean.Length != channels || variance.Length != channels)
            throw Invalid(node, $"the BatchNormalization parameters do not have {channels} values");
        var a = new float[channels];
        var b = new float[channels];
        for (int c = 0; c < channels; c++)
        {
            a[c] = scale[c] / MathF.Sqrt(variance[c] + epsilon);
            b[c] = bias[c] - mean[c] * a[c];
        }
        long[] cdims = [channels, .. Enumerable.Repeat(1L, x.Dims.Length - 1)];
        EmitFloatBinary(node, x, EngineBinary.Mul, (a, cdims), null);
        var scaled = _float[node.Outputs[0]];
        EmitFloatBinary(node, scaled, EngineBinary.Add, (b, cdims), null);
    }

    private void Softmax(OnnxNode node)
    {
        var x = Materialize(FloatOf(node.Inputs[0]));
        long[] logical = x.Dims;
        int rank = x.Dims.Length;
        // Rows of a Flatten that merged the batch: the softmax runs over the last axis (the only one it allows).
        int axis = _batchMerged.Contains(node.Inputs[0]) ? rank - 1 : RowAxis(node.GetInt("axis", _opset >= 13 ? -1 : 1), rank, node);
        long[] planDims = x.Dims;
        int planAxis = axis;
        if (_opset < 13 && axis < rank - 1)
        {
            // Before opset 13, Softmax works on the input coerced to 2-D at axis: one softmax over all dims from axis on.
            planDims = [.. x.Dims[..axis], x.Dims[axis..].Aggregate(1L, (p, d) => p * d)];
            if (planDims.Length > 4)
                throw new NotSupportedException("Softmax of this shape is not supported");
            x = x with { Id = CopyTensor(x.Id, planDims, EngineType.Float32, "softmax view") };
        }
        int id = _plan.AddTensor(EngineType.Float32, planDims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        w.U32((uint)planAxis);
        Emit(EngineOpKind.Softmax, node.Describe, w);
        _float[node.Outputs[0]] = new FTensor(id, logical);
    }

    private void LayerNormalization(OnnxNode node)
    {
        var x = Materialize(FloatOf(node.Inputs[0]));
        int axis = RowAxis(node.GetInt("axis", -1), x.Dims.Length, node);
        long n = x.Dims[axis..].Aggregate(1L, (p, d) => p * d);
        float[] scale = ConstantFloats(node, 1);
        float[]? bias = node.Inputs.Count > 2 && node.Inputs[2].Length > 0 ? ConstantFloats(node, 2) : null;
        if (scale.Length != n || (bias is not null && bias.Length != n))
            throw new NotSupportedException($"LayerNormalization scale or bias that is not one value per normalised element ({n})");
        if (node.Outputs.Skip(1).Any(o => o.Length > 0))
            throw new NotSupportedException("LayerNormalization's mean and inverse deviation outputs are not supported");
        int id = _plan.AddTensor(EngineType.Float32, x.Dims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        w.U32((uint)axis);
        w.F32(node.GetFloat("epsilon", 1e-5f));
        w.U32(bias is null ? 0u : 1u);
        foreach (float v in scale.Concat(bias ?? []))
            w.F32(v);
        Emit(EngineOpKind.LayerNorm, node.Describe, w);
        _float[node.Outputs[0]] = new FTensor(id, x.Dims);
    }

    /// <summary>ReduceMean over contiguous row axes, and GlobalAveragePool (the mean over every dim after the channels).</summary>
    private void ReduceMean(OnnxNode node)
    {
        var x = Materialize(FloatOf(node.Inputs[0]));
        int rank = x.Dims.Length;
        int[] axes;
        bool keep = true;
        if (node.OpType == "GlobalAveragePool")
        {
            if (rank < 2)
                throw new NotSupportedException("GlobalAveragePool of a row of rank < 2");
            axes = Enumerable.Range(1, rank - 1).ToArray();
        }
        else
        {
            long[] attr = node.GetInts("axes") ?? (node.Inputs.Count > 1 && node.Inputs[1].Length > 0 ? Constant(node, 1).ToInt64Array() : null)
                ?? throw new NotSupportedException("ReduceMean over every axis (the batch too) is not supported");
            axes = attr.Select(a => RowAxis(a, rank, node)).Distinct().Order().ToArray();
            keep = node.GetInt("keepdims", 1) != 0;
        }
        if (axes.Length == 0 || axes[^1] - axes[0] != axes.Length - 1)
            throw new NotSupportedException("ReduceMean over axes that are not contiguous is not supported");
        long[] kept = x.Dims.Select((d, i) => axes.Contains(i) ? 1L : d).ToArray();
        long[] dims = keep ? kept : x.Dims.Where((d, i) => !axes.Contains(i)).DefaultIfEmpty(1L).ToArray();
        int id = _plan.AddTensor(EngineType.Float32, dims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        w.U32((uint)axes[0]);
        w.U32((uint)axes.Length);
        Emit(EngineOpKind.ReduceMean, node.Describe, w);
        _float[node.Outputs[0]] = new FTensor(id, dims);
    }
}

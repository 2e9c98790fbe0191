using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Lowering;

/// <summary>
/// The integer units of wider models ("DQ inputs -> op -> Q"): Add and Mul with broadcasting and constant operands,
/// Concat requantized to the output's scale, MatMul of two activations, elementwise functions as tables, Split, and the
/// data movement of Transpose, Slice, Pad, DepthToSpace, SpaceToDepth and Resize on the integers (a table after them when
/// the output's quantization differs). The movement helpers serve float tensors too (QdqLowering.Float.cs).
/// </summary>
internal sealed partial class QdqLowering
{
    /// <summary>An engine tensor and its logical per-row shape, whatever its type.</summary>
    private readonly record struct Value(int Id, long[] Dims, EngineType Type);

    private static Value ValueOf(QTensor t) => new(t.Id, t.Dims, t.Type);

    private static Value ValueOf(FTensor t) => new(t.Id, t.Dims, EngineType.Float32);

    // ---- Add / Mul ---------------------------------------------------------------------------------------------

    /// <summary>QLinearAdd / QLinearMul: a the DQ of an activation, b the DQ of an activation or of a per-tensor 8-bit constant.</summary>
    private QTensor Binary(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        // Add and Mul commute: the activation first.
        int first = _dqActivation.ContainsKey(node.Inputs[0]) ? 0 : 1;
        var (a, aq) = Activation(node, first);
        string bName = node.Inputs[1 - first];
        var func = node.OpType == "Add" ? EngineBinary.Add : EngineBinary.Mul;
        if (a.Type != outType)
            throw new NotSupportedException($"{node.OpType} from {a.Type} to {outType} has no integer form");
        if (_dqActivation.TryGetValue(bName, out var bAct))
        {
            var (b, bq) = bAct;
            if (b.Type != outType)
                throw new NotSupportedException($"{node.OpType} of {a.Type} and {b.Type} has no integer form");
            long[] dims = BroadcastDims(a.Dims, b.Dims, node);
            a = Materialize(a);
            b = Materialize(b);
            int id = _plan.AddTensor(outType, dims);
            if (func == EngineBinary.Add && a.Dims.SequenceEqual(b.Dims))
            {
                // Same shapes: the ADD op (the CPU fuses it into the convolution that writes one of its inputs).
                Emit(EngineOpKind.Add, node.Describe, TwoInputs(a.Id, b.Id, id, aq, bq, outQuant));
                return new QTensor(id, dims, outType, outQuant);
            }
            var w = BinaryHeader(a.Id, b.Id, id, func, constDims: null);
            w.Quant(aq);
            w.Quant(bq);
            w.Quant(outQuant);
            Emit(EngineOpKind.Binary, node.Describe, w);
            return new QTensor(id, dims, outType, outQuant);
        }
        var (bytes, constType, cq, full) = QuantizedConstant(_dqConstant[bName]);
        if (constType != outType)
            throw new NotSupportedException($"the constant is {constType}, the activation {outType}");
        long[] cdims = PerRowConstantDims(full, a.Dims.Length);
        long[] ydims = BroadcastDims(a.Dims, cdims, node);
        a = Materialize(a);
        int yid = _plan.AddTensor(outType, ydims);
        var cw = BinaryHeader(a.Id, 0, yid, func, cdims);
        cw.Bytes(bytes);
        cw.Quant(aq);
        cw.Quant(cq);
        cw.Quant(outQuant);
        Emit(EngineOpKind.Binary, node.Describe, cw);
        return new QTensor(yid, ydims, outType, outQuant);
    }

    private static PayloadWriter BinaryHeader(int a, int b, int y, EngineBinary func, long[]? constDims)
    {
        var w = new PayloadWriter();
        w.U32((uint)a);
        w.U32((uint)b);
        w.U32((uint)y);
        w.U32((uint)func);
        w.U32(constDims is null ? 0u : 1u);
        if (constDims is not null)
        {
            w.U32((uint)constDims.Length);
            foreach (long d in constDims)
                w.I64(d);
        }
        return w;
    }

    /// <summary>The raw bytes, type and per-tensor quantization of an 8-bit constant behind a DequantizeLinear, and its full shape.</summary>
    private (byte[] Bytes, EngineType Type, EngineQuant Quant, long[] Dims) QuantizedConstant(OnnxNode dq)
    {
        _index.TryGetInitializer(dq.Inputs[0], out var values);
        var type = values.ElementType switch
        {
            OnnxElementType.UInt8 => EngineType.UInt8,
            OnnxElementType.Int8 => EngineType.Int8,
            var t => throw new NotSupportedException($"a constant of type {t} has no integer form"),
        };
        var (_, quant) = ActivationQuant(dq, 1, 2);
        return (values.ToRawBytes(), type, quant, values.Dims);
    }

    /// <summary>A constant's shape against rows of rank <paramref name="rowRank"/>: leading dims of 1 beyond it (the batch) dropped.</summary>
    private static long[] PerRowConstantDims(long[] full, int rowRank)
    {
        long[] dims = full;
        while (dims.Length > rowRank && dims[0] == 1)
            dims = dims[1..];
        if (dims.Length > rowRank)
            throw new NotSupportedException($"a constant of shape [{string.Join(", ", full)}] broadcasts along the batch");
        return dims.Length == 0 ? [1] : dims;
    }

    /// <summary>NumPy broadcasting of two per-row shapes (right-aligned).</summary>
    private long[] BroadcastDims(long[] a, long[] b, OnnxNode node)
    {
        int rank = Math.Max(a.Length, b.Length);
        var y = new long[rank];
        for (int i = 0; i < rank; i++)
        {
            long da = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : 1, db = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : 1;
            if (da != db && da != 1 && db != 1)
                throw new NotSupportedException($"[{string.Join(", ", a)}] and [{string.Join(", ", b)}] do not broadcast");
            y[i] = Math.Max(da, db);
        }
        if (rank > 4)
            throw new NotSupportedException($"the broadcast row has rank {rank} (at most 4)");
        return y;
    }

    // ---- Concat / Split ---------------------------------------------------------------------------------------------

    /// <summary>Concat of the DQs of activations, each requantized to the output's scale through a table (as ONNX Runtime computes DQ then Q).</summary>
    private QTensor IntegerConcat(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var parts = new List<(QTensor X, byte[]? Table)>();
        for (int i = 0; i < node.Inputs.Count; i++)
        {
            if (!_dqActivation.TryGetValue(node.Inputs[i], out var input))
                throw new NotSupportedException($"input {i} is not the DequantizeLinear of an activation");
            var (x, xq) = input;
            if (x.Type != outType)
                throw new NotSupportedException($"input {i} is {x.Type}, the output {outType}");
            parts.Add((Materialize(x), x.Type == outType && xq.SameAs(outQuant) ? null : RequantizeTable(x.Type, xq, outType, outQuant, v => v)));
        }
        int axis = RowAxis(node.GetInt("axis", 0), parts[0].X.Dims.Length, node);
        long[] dims = ConcatDims(parts.Select(p => p.X.Dims).ToList(), axis, node);
        int id = _plan.AddTensor(outType, dims);
        EmitConcat(id, axis, parts.Select(p => (p.X.Id, p.Table)).ToList(), node.Describe);
        return new QTensor(id, dims, outType, outQuant);
    }

    private long[] ConcatDims(List<long[]> inputs, int axis, OnnxNode node)
    {
        long[] dims = [.. inputs[0]];
        dims[axis] = 0;
        foreach (long[] d in inputs)
        {
            if (d.Length != dims.Length || d.Where((v, i) => i != axis && v != dims[i]).Any())
                throw Invalid(node, "the Concat inputs' shapes differ off the axis");
            dims[axis] += d[axis];
        }
        return dims;
    }

    private void EmitConcat(int y, int axis, List<(int Id, byte[]? Table)> inputs, string source)
    {
        if (inputs.Count > 1024)
            throw new NotSupportedException($"Concat of {inputs.Count} inputs (at most 1024)");
        var w = new PayloadWriter();
        w.U32((uint)y);
        w.U32((uint)axis);
        w.U32((uint)inputs.Count);
        foreach (var (id, table) in inputs)
        {
            w.U32((uint)id);
            w.U32(table is null ? 0u : 1u);
            if (table is not null)
                w.Bytes(table);
        }
        Emit(EngineOpKind.Concat, source, w);
    }

    /// <summary>DQ -> Split -> one Q per output: a copy of each part (and a table where its quantization differs).</summary>
    private bool TryIntegerSplit(OnnxNode node)
    {
        if (!_dqActivation.TryGetValue(node.Inputs[0], out var input))
            return false;
        var qs = new List<OnnxNode>();
        foreach (string o in node.Outputs)
        {
            var users = o.Length > 0 ? _consumers.GetValueOrDefault(o) ?? [] : [];
            if (o.Length == 0 || _index.IsGraphOutput(o) || users.Count != 1 || users[0].OpType != "QuantizeLinear" || users[0].Domain.Length != 0)
                return false;
            qs.Add(users[0]);
        }
        var (x, xq) = input;
        x = Materialize(x);
        var parts = SplitParts(node, ValueOf(x));
        for (int i = 0; i < qs.Count; i++)
        {
            var (outType, outQuant) = ActivationQuant(qs[i], 1, 2);
            var part = new QTensor(parts[i].Id, parts[i].Dims, x.Type, xq);
            _quantized[qs[i].Outputs[0]] = x.Type == outType && xq.SameAs(outQuant) ? part with { Quant = outQuant } : Table(node, part, xq, outType, outQuant, f => f);
            _done.Add(qs[i]);
        }
        return true;
    }

    /// <summary>The outputs of a Split of <paramref name="x"/>: one copy each.</summary>
    private List<Value> SplitParts(OnnxNode node, Value x)
    {
        int axis = RowAxis(node.GetInt("axis", 0), x.Dims.Length, node);
        int count = node.Outputs.Count;
        long[] sizes;
        if (node.GetInts("split") is { } attr)
            sizes = attr;
        else if (node.Inputs.Count > 1 && node.Inputs[1].Length > 0)
            sizes = Constant(node, 1).ToInt64Array();
        else
        {
            long each = (x.Dims[axis] + count - 1) / count;
            sizes = Enumerable.Range(0, count).Select(i => Math.Min(each, x.Dims[axis] - i * each)).ToArray();
        }
        if (sizes.Length != count || sizes.Any(v => v <= 0) || sizes.Sum() != x.Dims[axis])
            throw Invalid(node, $"split sizes [{string.Join(", ", sizes)}] do not cover the axis of {x.Dims[axis]}");
        var parts = new List<Value>();
        long start = 0;
        long[] strides = Strides(x.Dims);
        foreach (long size in sizes)
        {
            long[] dims = [.. x.Dims];
            dims[axis] = size;
            int id = _plan.AddTensor(x.Type, dims);
            EmitCopy(x.Id, id, dims, start * strides[axis], strides, node.Describe);
            parts.Add(new Value(id, dims, x.Type));
            if (node.Outputs[parts.Count - 1].Length > 0 && x.Type == EngineType.Float32)
                _float[node.Outputs[parts.Count - 1]] = new FTensor(id, dims);
            start += size;
        }
        return parts;
    }

    // ---- MatMul of two activations ------------------------------------------------------------------------------

    private QTensor ActivationMatMul(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (a, aq) = Activation(node, 0);
        var (b, bq) = Activation(node, 1);
        long[] dims = MatMulDims(a.Dims, b.Dims, node);
        a = Materialize(a);
        b = Materialize(b);
        int id = _plan.AddTensor(outType, dims);
        Emit(EngineOpKind.MatMul, node.Describe, TwoInputs(a.Id, b.Id, id, aq, bq, outQuant));
        return new QTensor(id, dims, outType, outQuant);
    }

    /// <summary>The payload of an op of two 8-bit inputs: a, b, y and their quantizations (ADD, MATMUL).</summary>
    private static PayloadWriter TwoInputs(int a, int b, int y, EngineQuant aq, EngineQuant bq, EngineQuant yq)
    {
        var w = new PayloadWriter();
        w.U32((uint)a);
        w.U32((uint)b);
        w.U32((uint)y);
        w.Quant(aq);
        w.Quant(bq);
        w.Quant(yq);
        return w;
    }

    /// <summary>[.., M, K] x [.., K, N] (b's leading dims equal to a's, or b one matrix) -> [.., M, N].</summary>
    private long[] MatMulDims(long[] a, long[] b, OnnxNode node)
    {
        if (a.Length < 2 || b.Length < 2)
            throw new NotSupportedException("MatMul of rows of rank < 2 is not supported");
        if (b.Length != 2 && (b.Length != a.Length || !a[..^2].SequenceEqual(b[..^2])))
            throw new NotSupportedException($"MatMul of [{string.Join(", ", a)}] and [{string.Join(", ", b)}]: b's leading dims must equal a's");
        if (a[^1] != b[^2])
            throw Invalid(node, $"MatMul of [{string.Join(", ", a)}] and [{string.Join(", ", b)}]: K differs");
        return [.. a[..^1], b[^1]];
    }

    // ---- data movement ------------------------------------------------------------------------------------------

    /// <summary>Transpose / Slice / Pad / DepthToSpace / SpaceToDepth / Resize on the integers, a table after when the quantization changes.</summary>
    private QTensor IntegerMovement(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        byte? padByte = null;
        if (node.OpType == "Pad")
        {
            float value = PadValue(node);
            int lo = x.Type == EngineType.UInt8 ? 0 : -128, hi = x.Type == EngineType.UInt8 ? 255 : 127;
            float q = MathF.Round(value / xq.Scale, MidpointRounding.ToEven) + xq.ZeroPoint;
            padByte = (byte)(int)Math.Clamp(q, lo, hi);
        }
        Value moved = Move(node, ValueOf(Materialize(x)), padByte);
        var result = new QTensor(moved.Id, moved.Dims, x.Type, xq);
        return x.Type == outType && xq.SameAs(outQuant) ? result with { Quant = outQuant } : Table(node, result, xq, outType, outQuant, f => f);
    }

    /// <summary>The data movement of <paramref name="node"/> on <paramref name="x"/> (any type); an 8-bit Pad fills with <paramref name="padByte"/>.</summary>
    private Value Move(OnnxNode node, Value x, byte? padByte = null)
    {
        int rank = x.Dims.Length;
        switch (node.OpType)
        {
            case "Transpose":
            {
                long[] perm = node.GetInts("perm") ?? Enumerable.Range(0, rank + 1).Reverse().Select(i => (long)i).ToArray();
                if (perm.Length != rank + 1 || perm[0] != 0)
                    throw new NotSupportedException($"Transpose with perm [{string.Join(", ", perm)}] moves the batch dimension");
                long[] strides = Strides(x.Dims);
                long[] dims = perm[1..].Select(p => x.Dims[p - 1]).ToArray();
                int id = _plan.AddTensor(x.Type, dims);
                EmitCopy(x.Id, id, dims, 0, perm[1..].Select(p => strides[p - 1]).ToArray(), node.Describe);
                return new Value(id, dims, x.Type);
            }
            case "Slice":
                return Slice(node, x);
            case "Pad":
                return Pad(node, x, padByte);
            case "DepthToSpace" or "SpaceToDepth":
                return SpaceDepth(node, x);
            default:
                return Resize(node, x);
        }
    }

    private Value Slice(OnnxNode node, Value x)
    {
        int rank = x.Dims.Length;
        long[] starts, ends, axes, steps;
        if (node.GetInts("starts") is { } s)
        {
            starts = s;
            ends = node.GetInts("ends") ?? throw Invalid(node, "Slice has starts but no ends");
            axes = node.GetInts("axes") ?? Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
            steps = Enumerable.Repeat(1L, starts.Length).ToArray();
        }
        else
        {
            starts = Constant(node, 1).ToInt64Array();
            ends = Constant(node, 2).ToInt64Array();
            axes = node.Inputs.Count > 3 && node.Inputs[3].Length > 0 ? Constant(node, 3).ToInt64Array() : Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
            steps = node.Inputs.Count > 4 && node.Inputs[4].Length > 0 ? Constant(node, 4).ToInt64Array() : Enumerable.Repeat(1L, starts.Length).ToArray();
        }
        if (ends.Length != starts.Length || axes.Length != starts.Length || steps.Length != starts.Length)
            throw Invalid(node, "Slice's starts, ends, axes and steps differ in length");
        long[] dims = [.. x.Dims];
        long[] strides = Strides(x.Dims), copyStrides = [.. strides];
        long offset = 0;
        for (int i = 0; i < starts.Length; i++)
        {
            int axis = RowAxis(axes[i], rank, node);
            long size = x.Dims[axis], step = steps[i];
            if (step == 0)
                throw Invalid(node, "Slice step 0");
            long start = starts[i] < 0 ? starts[i] + size : starts[i], end = ends[i] < 0 ? ends[i] + size : ends[i];
            (start, end) = step > 0 ? (Math.Clamp(start, 0, size), Math.Clamp(end, 0, size)) : (Math.Clamp(start, 0, size - 1), Math.Clamp(end, -1, size - 1));
            long count = step > 0 ? (end - start + step - 1) / step : (start - end - step - 1) / -step;
            if (count <= 0)
                throw new NotSupportedException("a Slice with an empty result is not supported");
            dims[axis] = count;
            offset += start * strides[axis];
            copyStrides[axis] = step * strides[axis];
        }
        int id = _plan.AddTensor(x.Type, dims);
        EmitCopy(x.Id, id, dims, offset, copyStrides, node.Describe);
        return new Value(id, dims, x.Type);
    }

    private float PadValue(OnnxNode node)
    {
        string mode = node.GetString("mode") ?? "constant";
        if (mode != "constant")
            throw new NotSupportedException($"Pad mode '{mode}' is not supported (constant is)");
        if (node.HasAttribute("value"))
            return node.GetFloat("value", 0f);
        return node.Inputs.Count > 2 && node.Inputs[2].Length > 0 ? ConstantFloats(node, 2)[0] : 0f;
    }

    private Value Pad(OnnxNode node, Value x, byte? padByte)
    {
        int rank = x.Dims.Length;
        long[] pads = node.GetInts("pads") ?? Constant(node, 1).ToInt64Array();
        long[] axes = node.Inputs.Count > 3 && node.Inputs[3].Length > 0 ? Constant(node, 3).ToInt64Array() : Enumerable.Range(0, rank + 1).Select(i => (long)i).ToArray();
        if (pads.Length != 2 * axes.Length)
            throw Invalid(node, $"{pads.Length} pads for {axes.Length} axes");
        var begins = new long[rank];
        var ends = new long[rank];
        for (int i = 0; i < axes.Length; i++)
        {
            long axis = axes[i] < 0 ? axes[i] + rank + 1 : axes[i];
            if (axis == 0)
            {
                if (pads[i] != 0 || pads[axes.Length + i] != 0)
                    throw new NotSupportedException("padding the batch dimension is not supported");
                continue;
            }
            if (pads[i] < 0 || pads[axes.Length + i] < 0)
                throw new NotSupportedException("negative pads (cropping) are not supported");
            begins[axis - 1] = pads[i];
            ends[axis - 1] = pads[axes.Length + i];
        }
        long[] dims = x.Dims.Select((d, i) => d + begins[i] + ends[i]).ToArray();
        int id = _plan.AddTensor(x.Type, dims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        foreach (long v in begins.Concat(ends).Concat(Enumerable.Repeat(1L, rank)))
            w.I64(v);
        w.U32(padByte is { } b ? b : unchecked((uint)BitConverter.SingleToInt32Bits(PadValue(node))));
        Emit(EngineOpKind.Pad, node.Describe, w);
        return new Value(id, dims, x.Type);
    }

    /// <summary>DepthToSpace (DCR or CRD) and SpaceToDepth of [C, H, W] rows: one five-dimensional copy.</summary>
    private Value SpaceDepth(OnnxNode node, Value x)
    {
        if (x.Dims.Length != 3)
            throw new NotSupportedException($"{node.OpType} of rows of rank {x.Dims.Length} (needs [C, H, W])");
        long b = node.GetInt("blocksize", 0), c = x.Dims[0], h = x.Dims[1], w = x.Dims[2];
        if (b < 1)
            throw Invalid(node, "blocksize must be >= 1");
        long[] dims, iter, strides;
        if (node.OpType == "DepthToSpace")
        {
            if (c % (b * b) != 0)
                throw Invalid(node, $"{c} channels are not a multiple of blocksize^2 = {b * b}");
            long co = c / (b * b), hw = h * w;
            dims = [co, h * b, w * b];
            iter = [co, h, b, w, b];  // output order: channel, row, row phase, column, column phase
            strides = node.GetString("mode") == "CRD" ? [b * b * hw, w, b * hw, 1, hw] : [hw, w, b * co * hw, 1, co * hw];
        }
        else
        {
            if (h % b != 0 || w % b != 0)
                throw Invalid(node, $"the {h}x{w} plane is not a multiple of blocksize {b}");
            dims = [c * b * b, h / b, w / b];
            iter = [b, b, c, h / b, w / b];  // output channel (i * b + j) * C + c
            strides = [w, 1, h * w, b * w, b];
        }
        int id = _plan.AddTensor(x.Type, dims);
        EmitCopy(x.Id, id, iter, 0, strides, node.Describe);
        return new Value(id, dims, x.Type);
    }

    /// <summary>Resize (or Upsample) of the last two dims of [C, H, W] rows, nearest or linear, with ONNX Runtime's coordinate rules.</summary>
    private Value Resize(OnnxNode node, Value x)
    {
        if (x.Dims.Length != 3)
            throw new NotSupportedException($"Resize of rows of rank {x.Dims.Length} (needs [C, H, W])");
        string mode = node.GetString("mode") ?? "nearest";
        if (mode is not ("nearest" or "linear"))
            throw new NotSupportedException($"Resize mode '{mode}' is not supported (nearest and linear are)");
        bool upsample = node.OpType == "Upsample" || _opset < 11;
        string transform = node.GetString("coordinate_transformation_mode") ?? (upsample ? "asymmetric" : "half_pixel");
        string nearest = node.GetString("nearest_mode") ?? (upsample ? "floor" : "round_prefer_floor");
        if (node.HasAttribute("antialias") && node.GetInt("antialias", 0) != 0)
            throw new NotSupportedException("antialiased Resize is not supported");
        float[]? scales = null;
        long[]? sizes = null;
        int scalesIndex = upsample ? 1 : 2;
        if (node.Inputs.Count > scalesIndex && node.Inputs[scalesIndex].Length > 0 && Constant(node, scalesIndex).ElementCount > 0)
            scales = Constant(node, scalesIndex).ToFloatArray();
        else if (node.Inputs.Count > 3 && node.Inputs[3].Length > 0)
            sizes = Constant(node, 3).ToInt64Array();
        if (node.HasAttribute("axes"))
            throw new NotSupportedException("Resize with axes is not supported");
        long[] inDims = [1, .. x.Dims];
        long oh, ow;
        float sh, sw;
        if (scales is not null)
        {
            if (scales.Length != 4 || scales[0] != 1f || scales[1] != 1f)
                throw new NotSupportedException($"Resize scales [{string.Join(", ", scales)}] change more than H and W");
            (sh, sw) = (scales[2], scales[3]);
            (oh, ow) = ((long)MathF.Floor(inDims[2] * sh), (long)MathF.Floor(inDims[3] * sw));
        }
        else if (sizes is not null)
        {
            if (sizes.Length != 4 || sizes[1] != inDims[1])
                throw new NotSupportedException($"Resize sizes [{string.Join(", ", sizes)}] change more than H and W");
            (oh, ow) = (sizes[2], sizes[3]);
            (sh, sw) = ((float)oh / inDims[2], (float)ow / inDims[3]);
        }
        else
        {
            throw Invalid(node, "Resize has neither scales nor sizes");
        }
        if (oh < 1 || ow < 1)
            throw Invalid(node, "Resize gives an empty plane");
        bool linear = mode == "linear";
        var w = new PayloadWriter();
        long[] dims = [x.Dims[0], oh, ow];
        int id = _plan.AddTensor(x.Type, dims);
        w.U32((uint)x.Id);
        w.U32((uint)id);
        w.U32(linear ? 2u : 1u);
        foreach (var (outSize, inSize, scale) in new[] { (oh, x.Dims[1], sh), (ow, x.Dims[2], sw) })
            for (long o = 0; o < outSize; o++)
            {
                float c = ResizeCoordinate(transform, o, scale, inSize, outSize, node);
                if (!linear)
                {
                    w.I32((int)Math.Clamp(NearestIndex(nearest, c, node), 0, inSize - 1));
                    continue;
                }
                c = Math.Clamp(c, 0f, inSize - 1);
                int i0 = (int)MathF.Floor(c), i1 = (int)Math.Min(i0 + 1, inSize - 1);
                w.I32(i0);
                w.I32(i1);
                w.F32(c - i0);
            }
        Emit(EngineOpKind.Resize, node.Describe, w);
        return new Value(id, dims, x.Type);
    }

    private float ResizeCoordinate(string transform, long o, float scale, long inSize, long outSize, OnnxNode node) => transform switch
    {
        "half_pixel" => (o + 0.5f) / scale - 0.5f,
        "pytorch_half_pixel" => outSize > 1 ? (o + 0.5f) / scale - 0.5f : 0f,
        "asymmetric" => o / scale,
        "align_corners" => outSize == 1 ? 0f : o * (inSize - 1) / (float)(outSize - 1),
        "tf_half_pixel_for_nn" => (o + 0.5f) / scale,
        _ => throw new NotSupportedException($"coordinate_transformation_mode '{transform}' is not supported"),
    };

    private long NearestIndex(string mode, float c, OnnxNode node) => mode switch
    {
        "round_prefer_floor" => c == MathF.Floor(c) + 0.5f ? (long)MathF.Floor(c) : (long)MathF.Round(c, MidpointRounding.AwayFromZero),
        "round_prefer_ceil" => (long)MathF.Round(c, MidpointRounding.AwayFromZero),
        "floor" => (long)MathF.Floor(c),
        "ceil" => (long)MathF.Ceiling(c),
        _ => throw new NotSupportedException($"nearest_mode '{mode}' is not supported"),
    };

    // ---- ConvTranspose ------------------------------------------------------------------------------------------

    /// <summary>
    /// The geometry of a ConvTranspose as a convolution: the input with (stride - 1) values inserted between its
    /// elements and (kernel - 1) * dilation - pad around it (plus output_padding after), convolved at stride 1 with the
    /// kernel flipped and its input and output channels swapped. Exact for integers; the zero insertion holds the zero
    /// point (real 0).
    /// </summary>
    private sealed record TransposedGeometry(long[] Begins, long[] Ends, long[] Steps, long Dh, long Dw, long OutH, long OutW);

    private TransposedGeometry TransposeGeometry(OnnxNode node, long[] x, long kh, long kw)
    {
        if (x.Length != 3)
            throw new NotSupportedException("only 2-D ConvTranspose over NCHW is supported");
        if (node.HasAttribute("output_shape"))
            throw new NotSupportedException("ConvTranspose with output_shape is not supported");
        string autoPad = node.GetString("auto_pad") ?? "NOTSET";
        if (autoPad is not ("NOTSET" or "VALID"))
            throw new NotSupportedException($"ConvTranspose with auto_pad '{autoPad}' is not supported");
        long[] strides = node.GetInts("strides") ?? [1, 1], dil = node.GetInts("dilations") ?? [1, 1];
        long[] pads = autoPad == "VALID" ? [0, 0, 0, 0] : node.GetInts("pads") ?? [0, 0, 0, 0], outPad = node.GetInts("output_padding") ?? [0, 0];
        if (strides.Length != 2 || dil.Length != 2 || pads.Length != 4 || outPad.Length != 2 || strides.Any(v => v < 1) || dil.Any(v => v < 1) ||
            pads.Any(v => v < 0) || outPad.Any(v => v < 0))
            throw Invalid(node, "strides, dilations, pads or output_padding do not describe a 2-D window");
        long[] k = [kh, kw];
        var begins = new long[3];
        var ends = new long[3];
        for (int i = 0; i < 2; i++)
        {
            begins[i + 1] = (k[i] - 1) * dil[i] - pads[i];
            ends[i + 1] = (k[i] - 1) * dil[i] - pads[i + 2] + outPad[i];
            if (begins[i + 1] < 0 || ends[i + 1] < 0)
                throw new NotSupportedException("ConvTranspose pads larger than the dilated kernel are not supported");
        }
        long oh = (x[1] - 1) * strides[0] - pads[0] - pads[2] + dil[0] * (kh - 1) + outPad[0] + 1;
        long ow = (x[2] - 1) * strides[1] - pads[1] - pads[3] + dil[1] * (kw - 1) + outPad[1] + 1;
        return new TransposedGeometry(begins, ends, [1, strides[0], strides[1]], dil[0], dil[1], oh, ow);
    }

    /// <summary>The zero insertion of a ConvTranspose input: a PAD with steps.</summary>
    private Value InsertZeros(Value x, TransposedGeometry t, uint fill, string source)
    {
        long[] dims = x.Dims.Select((d, i) => t.Begins[i] + (d - 1) * t.Steps[i] + 1 + t.Ends[i]).ToArray();
        int id = _plan.AddTensor(x.Type, dims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        foreach (long v in t.Begins.Concat(t.Ends).Concat(t.Steps))
            w.I64(v);
        w.U32(fill);
        Emit(EngineOpKind.Pad, source, w);
        return new Value(id, dims, x.Type);
    }

    /// <summary>
    /// ConvTranspose weights [Cin, Cout/g, kH, kW] as convolution weights [Cout, Cin/g, jH, jW], taps chosen by
    /// <paramref name="kyOf"/> / <paramref name="kxOf"/> (all of them flipped for the zero insertion, one phase's for the
    /// phase decomposition), channels swapped.
    /// </summary>
    private static T[] ConvWeights<T>(T[] w, long cin, long coutPerGroup, long groups, long kh, long kw, long jh, Func<long, long> kyOf, long jw,
        Func<long, long> kxOf)
    {
        long cinPerGroup = cin / groups;
        var result = new T[groups * coutPerGroup * cinPerGroup * jh * jw];
        for (long g = 0; g < groups; g++)
            for (long co = 0; co < coutPerGroup; co++)
                for (long ci = 0; ci < cinPerGroup; ci++)
                    for (long ty = 0; ty < jh; ty++)
                        for (long tx = 0; tx < jw; tx++)
                            result[(((g * coutPerGroup + co) * cinPerGroup + ci) * jh + ty) * jw + tx] =
                                w[(((g * cinPerGroup + ci) * coutPerGroup + co) * kh + kyOf(ty)) * kw + kxOf(tx)];
        return result;
    }

    /// <summary>One output phase (r, s) of a strided ConvTranspose along one axis: the taps k = a + j * stride, read at
    /// input q + b - j; as a convolution of J taps (flipped) with the given pads, producing Count outputs.</summary>
    private sealed record Phase(long A, long J, long PadBegin, long PadEnd, long Count);

    /// <summary>
    /// The phase decomposition of a ConvTranspose along one axis (dilation 1): output o = q * stride + r takes the taps
    /// k with (r + pad - k) divisible by stride. Null when a phase has no tap, negative padding, or the phases differ in
    /// size (then the zero insertion runs instead).
    /// </summary>
    private static Phase[]? Phases(long inSize, long outSize, long k, long stride, long pad, long dilation)
    {
        if (dilation != 1 || outSize % stride != 0)
            return null;
        var phases = new Phase[stride];
        for (long r = 0; r < stride; r++)
        {
            long a = ((r + pad) % stride + stride) % stride, b = (r + pad - a) / stride;
            long j = a < k ? (k - 1 - a) / stride + 1 : 0, count = outSize / stride;
            long padBegin = j - 1 - b, padEnd = count - 1 + j - inSize - padBegin;
            if (j == 0 || padBegin < 0 || padEnd < 0)
                return null;
            phases[r] = new Phase(a, j, padBegin, padEnd, count);
        }
        return phases;
    }

    /// <summary>
    /// ConvTranspose as a convolution per output phase (stride_h x stride_w of them, each with its taps only) whose
    /// outputs a Concat along the channels and a DepthToSpace-order copy interleave: no multiplication by inserted
    /// zeros. <paramref name="emitConv"/> emits one phase's convolution (weights, taps, pads) and returns its tensor.
    /// Null when the geometry does not decompose evenly.
    /// </summary>
    private Value? ConvTransposeByPhases<T>(OnnxNode node, Value x, T[] w, long cin, long coutPerGroup, long groups, long kh, long kw, TransposedGeometry t,
        Func<T[], long, long, long[], Value> emitConv)
    {
        long[] pads = node.GetInts("pads") ?? [0, 0, 0, 0];
        if ((node.GetString("auto_pad") ?? "NOTSET") != "NOTSET")
            pads = [0, 0, 0, 0];
        var py = Phases(x.Dims[1], t.OutH, kh, t.Steps[1], pads[0], t.Dh);
        var px = Phases(x.Dims[2], t.OutW, kw, t.Steps[2], pads[1], t.Dw);
        if (py is null || px is null)
            return null;
        long m = coutPerGroup * groups, sy = t.Steps[1], sx = t.Steps[2];
        var outputs = new List<(int Id, byte[]? Table)>();
        foreach (var ry in py)
            foreach (var rx in px)
            {
                T[] sub = ConvWeights(w, cin, coutPerGroup, groups, kh, kw, ry.J, ty => ry.A + (ry.J - 1 - ty) * sy, rx.J, tx => rx.A + (rx.J - 1 - tx) * sx);
                outputs.Add((emitConv(sub, ry.J, rx.J, [ry.PadBegin, rx.PadBegin, ry.PadEnd, rx.PadEnd]).Id, null));
            }
        long qh = t.OutH / sy, qw = t.OutW / sx;
        long[] stacked = [sy * sx * m, qh, qw];
        int cat = _plan.AddTensor(x.Type, stacked);
        EmitConcat(cat, 0, outputs, node.Describe);
        // y[c][q * sy + i][r * sx + j] = stacked[(i * sx + j) * M + c][q][r]
        long[] dims = [m, t.OutH, t.OutW];
        int id = _plan.AddTensor(x.Type, dims);
        long hw = qh * qw;
        EmitCopy(cat, id, [m, qh, sy, qw, sx], 0, [hw, qw, sx * m * hw, 1, m * hw], node.Describe);
        return new Value(id, dims, x.Type);
    }

    /// <summary>DQ(x) -> ConvTranspose(DQ(int8 or int4 weights), DQ(int32 bias)) -> Q: integer convolutions per phase (or after the zero insertion).</summary>
    private QTensor IntegerConvTranspose(OnnxNode node, EngineType outType, EngineQuant outQuant)
    {
        var (x, xq) = Activation(node, 0);
        var weight = ConstantWeights(node, 1, out long[] wDims);
        if (wDims.Length != 4)
            throw new NotSupportedException($"only 2-D ConvTranspose is supported (weight rank {wDims.Length})");
        long groups = node.GetInt("group", 1), cin = wDims[0], coutPerGroup = wDims[1], kh = wDims[2], kw = wDims[3], m = coutPerGroup * groups;
        if (groups < 1 || cin % groups != 0 || x.Dims[0] != cin)
            throw Invalid(node, $"input has {x.Dims[0]} channels, the weight expects {cin} ({groups} groups)");
        if (weight.Scales.Length != 1 && (weight.Axis != 1 || groups != 1 || weight.Scales.Length != m))
            throw new NotSupportedException("ConvTranspose weights must be quantized per tensor or along axis 1 (output channels, one group)");
        var t = TransposeGeometry(node, x.Dims, kh, kw);
        sbyte[] raw = weight.Values.ElementType == OnnxElementType.Int8 ? weight.Values.ToInt8Array() : weight.Values.ToInt4Array();
        float[] scales = weight.Scales.Length == 1 ? Enumerable.Repeat(weight.Scales[0], (int)m).ToArray() : weight.Scales;
        int[]? zps = weight.ZeroPoints is { } z ? (z.Length == 1 ? Enumerable.Repeat(z[0], (int)m).ToArray() : z) : null;
        int[]? bias = node.Inputs.Count > 2 && node.Inputs[2].Length > 0 ? Bias(node, 2, m) : null;
        Value input = ValueOf(Materialize(x));
        Value Conv(Value from, sbyte[] w, long jh, long jw, long[] pads, long dh, long dw, long[] dims)
        {
            int id = _plan.AddTensor(outType, dims);
            var p = PayloadWriter.OneInput(from.Id, id, xq, outQuant);
            foreach (long v in new[] { m, cin / groups, jh, jw, groups, 1, 1, pads[0], pads[1], pads[2], pads[3], dh, dw })
                p.I64(v);
            p.U32(2u);  // INT8 (int4 weights widened here)
            p.U32(zps is null ? 0u : 1u);
            p.U32(bias is null ? 0u : 1u);
            foreach (float s in scales)
                p.F32(s);
            foreach (int v in zps ?? [])
                p.I32(v);
            foreach (int v in bias ?? [])
                p.I32(v);
            p.Bytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.AsSpan()));
            Emit(EngineOpKind.Conv, node.Describe, p);
            return new Value(id, dims, outType);
        }
        Value? phased = outType == x.Type
            ? ConvTransposeByPhases(node, input, raw, cin, coutPerGroup, groups, kh, kw, t,
                (w, jh, jw, pads) => Conv(input, w, jh, jw, pads, 1, 1, [m, t.OutH / t.Steps[1], t.OutW / t.Steps[2]]))
            : null;
        if (phased is { } v)
            return new QTensor(v.Id, v.Dims, outType, outQuant);
        var inserted = InsertZeros(input, t, (uint)(byte)xq.ZeroPoint, node.Describe);
        sbyte[] all = ConvWeights(raw, cin, coutPerGroup, groups, kh, kw, kh, ty => kh - 1 - ty, kw, tx => kw - 1 - tx);
        var y = Conv(inserted, all, kh, kw, [0, 0, 0, 0], t.Dh, t.Dw, [m, t.OutH, t.OutW]);
        return new QTensor(y.Id, y.Dims, outType, outQuant);
    }

    /// <summary>A float Conv or ConvTranspose (float weights, or weights behind a DequantizeLinear): FLOAT_CONV (per phase, or after the zero insertion).</summary>
    private void FloatConvolution(OnnxNode node)
    {
        var x = ValueOf(Materialize(FloatOf(node.Inputs[0])));
        var (wv, wDims) = _dqConstant.TryGetValue(node.Inputs[1], out var dq) ? DequantizedConstant(dq) : (ConstantFloats(node, 1), Constant(node, 1).Dims);
        if (wDims.Length != 4 || x.Dims.Length != 3)
            throw new NotSupportedException($"only 2-D convolutions over NCHW are supported (input rank {x.Dims.Length + 1}, weight rank {wDims.Length})");
        float[]? bias = node.Inputs.Count > 2 && node.Inputs[2].Length > 0 ? ConstantFloats(node, 2) : null;
        long groups = node.GetInt("group", 1), kh = wDims[2], kw = wDims[3];
        Value Conv(Value from, float[] w, long m, long cpg, long jh, long jw, Geo geo)
        {
            if (bias is not null && bias.Length != m)
                throw Invalid(node, $"bias has {bias.Length} values for {m} output channels");
            long[] dims = [m, geo.OutH, geo.OutW];
            int id = _plan.AddTensor(EngineType.Float32, dims);
            var p = new PayloadWriter();
            p.U32((uint)from.Id);
            p.U32((uint)id);
            foreach (long v in new[] { m, cpg, jh, jw, groups, geo.Sh, geo.Sw, geo.Pt, geo.Pl, geo.Pb, geo.Pr, geo.Dh, geo.Dw })
                p.I64(v);
            p.U32(bias is null ? 0u : 1u);
            foreach (float v in w.Concat(bias ?? []))
                p.F32(v);
            Emit(EngineOpKind.FloatConv, node.Describe, p);
            return new Value(id, dims, EngineType.Float32);
        }
        Value y;
        if (node.OpType == "ConvTranspose")
        {
            long cin = wDims[0], coutPerGroup = wDims[1], m = coutPerGroup * groups;
            if (groups < 1 || cin % groups != 0 || x.Dims[0] != cin)
                throw Invalid(node, $"input has {x.Dims[0]} channels, the weight expects {cin} ({groups} groups)");
            var t = TransposeGeometry(node, x.Dims, kh, kw);
            Value input = x;
            y = ConvTransposeByPhases(node, x, wv, cin, coutPerGroup, groups, kh, kw, t, (w, jh, jw, pads) =>
                    Conv(input, w, m, cin / groups, jh, jw, new Geo(1, 1, pads[0], pads[1], pads[2], pads[3], 1, 1, t.OutH / t.Steps[1], t.OutW / t.Steps[2])))
                ?? Conv(InsertZeros(x, t, 0u, node.Describe), ConvWeights(wv, cin, coutPerGroup, groups, kh, kw, kh, ty => kh - 1 - ty, kw, tx => kw - 1 - tx),
                    m, cin / groups, kh, kw, new Geo(1, 1, 0, 0, 0, 0, t.Dh, t.Dw, t.OutH, t.OutW));
        }
        else
        {
            long m = wDims[0], cpg = wDims[1];
            if (groups < 1 || x.Dims[0] != cpg * groups)
                throw Invalid(node, $"input has {x.Dims[0]} channels, the weight expects {cpg} x {groups} groups");
            y = Conv(x, wv, m, cpg, kh, kw, Geometry(node, x.Dims, kh, kw));
        }
        _float[node.Outputs[0]] = new FTensor(y.Id, y.Dims);
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    private void EmitCopy(int x, int y, long[] dims, long offset, long[] strides, string source)
    {
        var w = new PayloadWriter();
        w.U32((uint)x);
        w.U32((uint)y);
        w.U32((uint)dims.Length);
        foreach (long d in dims)
            w.I64(d);
        w.I64(offset);
        foreach (long s in strides)
            w.I64(s);
        Emit(EngineOpKind.Copy, source, w);
    }

    /// <summary>Row-major strides of a per-row shape.</summary>
    private static long[] Strides(long[] dims)
    {
        var s = new long[dims.Length];
        long v = 1;
        for (int i = dims.Length - 1; i >= 0; i--)
        {
            s[i] = v;
            v *= dims[i];
        }
        return s;
    }

    /// <summary>An ONNX axis (over the batch and the row) as an axis of the per-row shape; the batch axis is not supported.</summary>
    private int RowAxis(long axis, int rowRank, OnnxNode node)
    {
        long a = axis < 0 ? axis + rowRank + 1 : axis;
        if (a < 0 || a > rowRank)
            throw Invalid(node, $"axis {axis} is outside a tensor of rank {rowRank + 1}");
        if (a == 0)
            throw new NotSupportedException("an op along the batch dimension is not supported");
        return (int)(a - 1);
    }

    private OnnxTensor Constant(OnnxNode node, int index)
    {
        if (index >= node.Inputs.Count || !_index.TryGetInitializer(node.Inputs[index], out var t))
            throw new NotSupportedException($"input {index} ('{(index < node.Inputs.Count ? node.Inputs[index] : "")}') is not a constant");
        return t;
    }

    private float[] ConstantFloats(OnnxNode node, int index)
    {
        if (index < node.Inputs.Count && _dqConstant.TryGetValue(node.Inputs[index], out var dq))
            return DequantizedConstant(dq).Values;
        var t = Constant(node, index);
        if (t.ElementType != OnnxElementType.Float)
            throw new NotSupportedException($"input {index} is a {t.ElementType} constant, not float");
        return t.ToFloatArray();
    }

    /// <summary>The values of a constant behind a DequantizeLinear (per tensor or per axis) in float, as ONNX Runtime dequantizes them.</summary>
    private (float[] Values, long[] Dims) DequantizedConstant(OnnxNode dq)
    {
        _index.TryGetInitializer(dq.Inputs[0], out var values);
        if (!_index.TryGetInitializer(dq.Inputs[1], out var scaleTensor) || scaleTensor.ElementType != OnnxElementType.Float)
            throw new NotSupportedException("the constant's scale is not a float constant");
        float[] scales = scaleTensor.ToFloatArray();
        int[] zps = dq.Inputs.Count > 2 && dq.Inputs[2].Length > 0 && _index.TryGetInitializer(dq.Inputs[2], out var zp)
            ? zp.ElementType switch
            {
                OnnxElementType.UInt8 => zp.ToUInt8Array().Select(v => (int)v).ToArray(),
                OnnxElementType.Int8 => zp.ToInt8Array().Select(v => (int)v).ToArray(),
                OnnxElementType.Int32 => zp.ToInt32Array(),
                _ => throw new NotSupportedException($"a zero point of type {zp.ElementType}"),
            }
            : new int[scales.Length];
        int[] raw = values.ElementType switch
        {
            OnnxElementType.UInt8 => values.ToUInt8Array().Select(v => (int)v).ToArray(),
            OnnxElementType.Int8 => values.ToInt8Array().Select(v => (int)v).ToArray(),
            OnnxElementType.Int32 => values.ToInt32Array(),
            OnnxElementType.Int4 => values.ToInt4Array().Select(v => (int)v).ToArray(),
            var t => throw new NotSupportedException($"a constant of type {t}"),
        };
        long[] dims = values.Dims;
        int axis = (int)dq.GetInt("axis", 1);
        if (axis < 0)
            axis += dims.Length;
        long inner = scales.Length == 1 ? 1 : dims.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        var result = new float[raw.Length];
        for (int i = 0; i < raw.Length; i++)
        {
            int c = scales.Length == 1 ? 0 : (int)(i / inner % scales.Length);
            result[i] = (raw[i] - zps[c]) * scales[c];
        }
        return (result, dims);
    }

    /// <summary>A table from one 8-bit quantization to another through <paramref name="f"/> (DQ, f, then Q, as ONNX Runtime computes it in float).</summary>
    private static byte[] RequantizeTable(EngineType inType, EngineQuant inQuant, EngineType outType, EngineQuant outQuant, Func<float, float> f)
    {
        var (lo, hi) = outType == EngineType.UInt8 ? (0, 255) : (-128, 127);
        var table = new byte[256];
        for (int b = 0; b < 256; b++)
        {
            int v = inType == EngineType.UInt8 ? b : (sbyte)b;
            float real = f((float)(v - inQuant.ZeroPoint) * inQuant.Scale);
            float q = float.IsNaN(real) ? 0f : MathF.Round(real / outQuant.Scale, MidpointRounding.ToEven);
            table[b] = (byte)(int)Math.Clamp(q + outQuant.ZeroPoint, lo, hi);
        }
        return table;
    }
}

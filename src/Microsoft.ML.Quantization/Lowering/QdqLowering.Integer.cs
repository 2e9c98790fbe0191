using System.Runtime.InteropServices;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Lowering;

/// <summary>
/// Integer graph inputs (token ids, segments, attention masks): int64 / int32 plan inputs, the Gather of an embedding
/// table they index (GATHER: rows of a quantized table copied as integers, or of a float table), their views
/// (Unsqueeze / Squeeze / Reshape / Flatten / Identity) and their Cast (CAST: to float for the mask arithmetic of a
/// float segment, or to the other integer type).
/// </summary>
internal sealed partial class QdqLowering
{
    /// <summary>An integer value the engine computes: its tensor, logical per-row shape and type (Int64 or Int32).</summary>
    private sealed record ITensor(int Id, long[] Dims, EngineType Type);

    private readonly Dictionary<string, ITensor> _integers = new(StringComparer.Ordinal);

    /// <summary>Integer tensors known while lowering (a slice of a constant, e.g. position ids cut to the sequence length): values and full dims.</summary>
    private readonly Dictionary<string, (long[] Values, long[] Dims)> _integerConstants = new(StringComparer.Ordinal);

    /// <summary>
    /// Slice of an int64 / int32 constant of any rank with bounds known while lowering (constants or shape values):
    /// evaluated here. False when the data is not such a constant.
    /// </summary>
    private bool TryConstantSlice(OnnxNode node)
    {
        if (!_index.TryGetInitializer(node.Inputs[0], out var data) || data.ElementType is not (OnnxElementType.Int64 or OnnxElementType.Int32) || data.Dims.Length < 1)
            return false;
        long[] Bound(int i, string what) => node.Inputs.Count > i && node.Inputs[i].Length > 0
            ? TryIntegerValue(node.Inputs[i], out long[] v) ? v : throw new NotSupportedException($"its {what} are not known while lowering")
            : [];
        long[] starts = Bound(1, "starts"), ends = Bound(2, "ends"), axes = Bound(3, "axes"), steps = Bound(4, "steps");
        if (axes.Length == 0)
            axes = Enumerable.Range(0, starts.Length).Select(a => (long)a).ToArray();
        if (ends.Length != starts.Length || axes.Length != starts.Length || (steps.Length != 0 && steps.Length != starts.Length))
            throw Invalid(node, "starts, ends, axes and steps differ in length");
        long[] dims = data.Dims;
        int rank = dims.Length;
        long[] begin = new long[rank], size = (long[])dims.Clone();
        for (int i = 0; i < starts.Length; i++)
        {
            if (steps.Length != 0 && steps[i] != 1)
                throw new NotSupportedException("it slices a constant with a step other than 1");
            int axis = (int)(axes[i] < 0 ? axes[i] + rank : axes[i]);
            if (axis < 0 || axis >= rank || starts[i] == BatchSymbol || ends[i] == BatchSymbol)
                throw new NotSupportedException("it slices a constant along an axis it does not have, or by the batch size");
            long b = Math.Clamp(starts[i] < 0 ? starts[i] + dims[axis] : starts[i], 0, dims[axis]);
            long e = Math.Clamp(ends[i] < 0 ? ends[i] + dims[axis] : ends[i], 0, dims[axis]);
            begin[axis] = b;
            size[axis] = Math.Max(0, e - b);
        }
        long[] source = data.ElementType == OnnxElementType.Int64 ? data.ToInt64Array() : data.ToInt32Array().Select(v => (long)v).ToArray();
        long count = size.Aggregate(1L, (a, b) => a * b);
        var values = new long[count];
        for (long k = 0; k < count; k++)
        {
            long rest = k, offset = 0, stride = 1;
            for (int d = rank - 1; d >= 0; d--)
            {
                offset += (begin[d] + rest % size[d]) * stride;
                rest /= size[d];
                stride *= dims[d];
            }
            values[k] = source[offset];
        }
        _integerConstants[node.Outputs[0]] = (values, size);
        return true;
    }

    private static readonly HashSet<string> IntegerViewOps = new(StringComparer.Ordinal) { "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity" };

    /// <summary>
    /// Lowers <paramref name="node"/> when it reads an integer value the engine computes; false for every other node. A
    /// node that reads one in a way the engine has no op for throws with the reason.
    /// </summary>
    private bool TryIntegerNode(OnnxNode node)
    {
        if (node.OpType == "Slice" && TryConstantSlice(node))
            return true;
        if (node.OpType == "Gather" && node.Inputs.Count > 1 && _integerConstants.TryGetValue(node.Inputs[1], out var constant))
        {
            Gather(node, null, constant);
            return true;
        }
        if (node.OpType == "Gather" && node.Inputs.Count > 1 && !_integers.ContainsKey(node.Inputs[1]) && _index.TryGetInitializer(node.Inputs[1], out var at)
            && at.ElementCount == 1 && at.ElementType is OnnxElementType.Int64 or OnnxElementType.Int32 && at.Dims.Length == 0
            && (_float.ContainsKey(node.Inputs[0]) || _dqActivation.ContainsKey(node.Inputs[0])))
        {
            GatherOne(node, at.ElementType == OnnxElementType.Int64 ? at.ToInt64Array()[0] : at.ToInt32Array()[0]);
            return true;
        }
        int index = node.Inputs.ToList().FindIndex(_integers.ContainsKey);
        if (index < 0 || node.OpType == "Shape")  // a Shape reads only dims (QdqLowering.Shapes)
            return false;
        ITensor x = _integers[node.Inputs[index]];
        switch (node.OpType)
        {
            case "Gather" when index == 1:
                Gather(node, x, null);
                return true;
            case "Cast":
                Cast(node, x);
                return true;
            case var op when IntegerViewOps.Contains(op) && index == 0:
                _integers[node.Outputs[0]] = x with { Dims = ViewDims(node, x.Dims) };
                return true;
            default:
                throw new NotSupportedException($"it reads the integer tensor '{node.Inputs[index]}' (input {index}); the engine gathers with integer tensors and casts them, nothing else");
        }
    }

    /// <summary>
    /// Gather(table, ids) along axis 0 of a constant table: the DequantizeLinear of an 8-bit table whose output one
    /// QuantizeLinear reads (the rows copied as integers, then a table when the quantization changes), or a float table.
    /// </summary>
    private void Gather(OnnxNode node, ITensor? ids, (long[] Values, long[] Dims)? constantIds)
    {
        if (node.GetInt("axis", 0) != 0)
            throw new NotSupportedException("it gathers along an axis other than 0");
        string table = node.Inputs[0];
        OnnxTensor values;
        EngineType type;
        EngineQuant quant = default;
        if (_dqConstant.TryGetValue(table, out var dq))
        {
            _index.TryGetInitializer(dq.Inputs[0], out values);
            (type, quant) = ActivationQuant(dq, 1, 2);
            if (values.ElementType != (type == EngineType.UInt8 ? OnnxElementType.UInt8 : OnnxElementType.Int8))
                throw new NotSupportedException($"its table is {values.ElementType} behind a DequantizeLinear of {type}");
        }
        else if (_index.TryGetInitializer(table, out values) && values.ElementType == OnnxElementType.Float)
        {
            type = EngineType.Float32;
        }
        else
        {
            throw new NotSupportedException($"its table '{table}' is neither a float constant nor the DequantizeLinear of an 8-bit constant");
        }
        if (values.Dims.Length < 1 || values.Dims[0] < 1)
            throw Invalid(node, "the table has no rows");
        long[] rowDims = values.Dims[1..];
        // Constant indices (position ids) give the same rows to every batch row: their leading 1 is the broadcast batch.
        long[] idDims = ids?.Dims ?? constantIds!.Value.Dims switch
        {
            [var n] => [n],
            [1, .. var rest] => rest,
            var d => throw new NotSupportedException($"its constant indices of shape [{string.Join(", ", d)}] do not broadcast over the batch"),
        };
        long[] outDims = [.. idDims, .. rowDims];
        if (outDims.Length > 4)
            throw new NotSupportedException($"its output rows have {outDims.Length} dimensions (the engine's tensors have at most 4)");
        long rowElements = rowDims.Aggregate(1L, (a, b) => a * b);

        // An 8-bit table read by one QuantizeLinear stays integer; otherwise the rows are gathered as floats.
        string y = node.Outputs[0];
        var users = _consumers.GetValueOrDefault(y) ?? [];
        bool integer = type != EngineType.Float32 && !_index.IsGraphOutput(y) && users.Count == 1 && users[0].OpType == "QuantizeLinear" && users[0].Domain.Length == 0;
        byte[] bytes;
        if (integer || type == EngineType.Float32)
        {
            bytes = values.ToRawBytes();
        }
        else
        {
            bytes = MemoryMarshal.AsBytes<float>(DequantizedConstant(dq!).Values).ToArray();
            type = EngineType.Float32;
        }
        int id = _plan.AddTensor(type, outDims);
        var w = new PayloadWriter();
        w.U32((uint)id);
        if (ids is not null)
        {
            w.U32(0);
            w.U32((uint)ids.Id);
        }
        else
        {
            long[] constant = constantIds!.Value.Values;
            long tableRows = values.Dims[0];
            if (constant.Any(i => i < -tableRows || i >= tableRows))
                throw Invalid(node, $"a constant index lies outside the table's {tableRows} rows");
            w.U32(1);
            w.I64(constant.Length);
            foreach (long i in constant)
                w.I64(i);
        }
        w.I64(values.Dims[0]);
        w.I64(rowElements);
        w.Bytes(bytes);
        Emit(EngineOpKind.Gather, node.Describe, w);
        if (type == EngineType.Float32)
        {
            _float[y] = new FTensor(id, outDims);
            return;
        }
        OnnxNode q8 = users[0];
        var (outType, outQuant) = ActivationQuant(q8, 1, 2);
        var gathered = new QTensor(id, outDims, type, quant);
        _quantized[q8.Outputs[0]] = type == outType && quant.SameAs(outQuant) ? gathered : Table(node, gathered, quant, outType, outQuant, f => f);
        _done.Add(q8);
    }

    /// <summary>
    /// Gather of one constant index along a non-batch axis of an activation (a pooler's first token): a COPY, on the
    /// integers when one QuantizeLinear reads the result (Gather shares its input's quantization), else on floats.
    /// </summary>
    private void GatherOne(OnnxNode node, long at)
    {
        string y = node.Outputs[0];
        var users = _consumers.GetValueOrDefault(y) ?? [];
        bool integer = _dqActivation.ContainsKey(node.Inputs[0]) && !_index.IsGraphOutput(y) && users.Count == 1 && users[0].OpType == "QuantizeLinear";
        long[] dims;
        int source;
        EngineType type;
        if (integer)
        {
            var x = Materialize(_dqActivation[node.Inputs[0]].Source);
            (dims, source, type) = (x.Dims, x.Id, x.Type);
        }
        else
        {
            var x = Materialize(FloatOf(node.Inputs[0]));
            (dims, source, type) = (x.Dims, x.Id, EngineType.Float32);
        }
        int axis = RowAxis(node.GetInt("axis", 0), dims.Length, node);
        long i = at < 0 ? at + dims[axis] : at;
        if (i < 0 || i >= dims[axis])
            throw Invalid(node, $"index {at} is outside axis {axis + 1} of {dims[axis]}");
        long[] strides = Strides(dims);
        long[] outDims = dims.Where((_, d) => d != axis).DefaultIfEmpty(1).ToArray();
        long[] outStrides = dims.Length == 1 ? [1] : strides.Where((_, d) => d != axis).ToArray();
        int id = _plan.AddTensor(type, outDims);
        EmitCopy(source, id, outDims, i * strides[axis], outStrides, node.Describe);
        if (!integer)
        {
            _float[y] = new FTensor(id, outDims);
            return;
        }
        EngineQuant quant = _dqActivation[node.Inputs[0]].Quant;
        var (outType, outQuant) = ActivationQuant(users[0], 1, 2);
        var copied = new QTensor(id, outDims, type, quant);
        _quantized[users[0].Outputs[0]] = type == outType && quant.SameAs(outQuant) ? copied : Table(node, copied, quant, outType, outQuant, f => f);
        _done.Add(users[0]);
    }

    /// <summary>Cast of an integer value: to float (a mask entering float arithmetic) or to the other integer type.</summary>
    private void Cast(OnnxNode node, ITensor x)
    {
        var to = (OnnxElementType)node.GetInt("to", 0);
        EngineType type = to switch
        {
            OnnxElementType.Float => EngineType.Float32,
            OnnxElementType.Int64 => EngineType.Int64,
            OnnxElementType.Int32 => EngineType.Int32,
            _ => throw new NotSupportedException($"it casts an integer tensor to {to} (the engine casts to float, int64 and int32)"),
        };
        if (type == x.Type)
        {
            _integers[node.Outputs[0]] = x;
            return;
        }
        int id = _plan.AddTensor(type, x.Dims);
        var w = new PayloadWriter();
        w.U32((uint)x.Id);
        w.U32((uint)id);
        Emit(EngineOpKind.Cast, node.Describe, w);
        if (type == EngineType.Float32)
            _float[node.Outputs[0]] = new FTensor(id, x.Dims);
        else
            _integers[node.Outputs[0]] = new ITensor(id, x.Dims, type);
    }
}

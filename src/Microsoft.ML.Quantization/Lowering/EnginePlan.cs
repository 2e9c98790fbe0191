using System.Buffers.Binary;

namespace Microsoft.ML.Quantization.Lowering;

/// <summary>Element types of engine tensors (qatml_dtype values).</summary>
internal enum EngineType
{
    UInt8 = 1,
    Int8 = 2,
    Int32 = 3,
    Float32 = 4,
    Int64 = 7,
}

/// <summary>Op kinds of a plan (qatml_engine_op values).</summary>
internal enum EngineOpKind
{
    Quantize = 1,
    Dequantize = 2,
    Conv = 3,
    Gemm = 4,
    MaxPool = 5,
    AveragePool = 6,
    GlobalAveragePool = 7,
    Add = 8,
    Lut = 9,
    Unary = 10,
    Binary = 11,
    Concat = 12,
    Copy = 13,
    Pad = 14,
    Resize = 15,
    Softmax = 16,
    LayerNorm = 17,
    MatMul = 18,
    ReduceMean = 19,
    FloatConv = 20,
    Gather = 21,
    Cast = 22,
    FloatGemm = 23,
}

/// <summary>Functions of <see cref="EngineOpKind.Unary"/> (qatml_engine_unary values).</summary>
internal enum EngineUnary
{
    Relu = 1,
    Sigmoid = 2,
    Tanh = 3,
    HardSigmoid = 4,
    HardSwish = 5,
    LeakyRelu = 6,
    Clip = 7,
    Erf = 8,
    Gelu = 9,
    Exp = 10,
    Log = 11,
    Sqrt = 12,
    Neg = 13,
    Abs = 14,
    Reciprocal = 15,
    Softplus = 16,
    Identity = 17,
}

/// <summary>Functions of <see cref="EngineOpKind.Binary"/> (qatml_engine_binary values).</summary>
internal enum EngineBinary
{
    Add = 1,
    Sub = 2,
    Mul = 3,
    Div = 4,
    Pow = 5,
    Max = 6,
    Min = 7,
}

/// <summary>Per-tensor quantization of an activation.</summary>
internal readonly record struct EngineQuant(float Scale, int ZeroPoint)
{
    public bool SameAs(EngineQuant other)
        => BitConverter.SingleToInt32Bits(Scale) == BitConverter.SingleToInt32Bits(other.Scale) && ZeroPoint == other.ZeroPoint;
}

/// <summary>A tensor of the plan: its type and per-row shape (the batch is the leading dimension at run time).</summary>
internal sealed record EngineTensor(EngineType Type, long[] Dims)
{
    public long RowElements => Dims.Aggregate(1L, (a, b) => checked(a * b));
}

/// <summary>One op of the plan, with the ONNX node(s) it came from (for messages and documentation).</summary>
internal sealed record EngineOp(EngineOpKind Kind, string Source, byte[] Payload);

/// <summary>
/// A lowered model in the binary form qatml_engine_create reads (format: src/Native/include/qatml/qatml_engine.h).
/// Built by <see cref="QdqLowering"/>; the native loader validates every field again.
/// </summary>
internal sealed class EnginePlan
{
    public List<EngineTensor> Tensors { get; } = [];
    public List<int> Inputs { get; } = [];
    public List<int> Outputs { get; } = [];
    public List<EngineOp> Ops { get; } = [];

    public int AddTensor(EngineType type, long[] dims)
    {
        if (dims.Length is < 1 or > 4)
            throw new ArgumentException($"Engine tensors have 1 to 4 dimensions per row, not {dims.Length}.", nameof(dims));
        Tensors.Add(new EngineTensor(type, dims));
        return Tensors.Count - 1;
    }

    public byte[] ToBytes()
    {
        using var stream = new MemoryStream();
        var w = new PayloadWriter(stream);
        w.Bytes("QEP1"u8);
        w.U32(1);
        w.U32((uint)Tensors.Count);
        w.U32((uint)Ops.Count);
        w.U32((uint)Inputs.Count);
        w.U32((uint)Outputs.Count);
        foreach (var t in Tensors)
        {
            w.U32((uint)t.Type);
            w.U32((uint)t.Dims.Length);
            foreach (long d in t.Dims)
                w.I64(d);
        }
        foreach (int i in Inputs)
            w.U32((uint)i);
        foreach (int o in Outputs)
            w.U32((uint)o);
        foreach (var op in Ops)
        {
            w.U32((uint)op.Kind);
            w.U32((uint)op.Payload.Length);
            w.Bytes(op.Payload);
        }
        return stream.ToArray();
    }
}

/// <summary>Little-endian writer of plan fields.</summary>
internal sealed class PayloadWriter(Stream stream)
{
    public PayloadWriter() : this(new MemoryStream()) { }

    /// <summary>The header every one-input integer op starts with: input and output tensor ids, their quantizations.</summary>
    public static PayloadWriter OneInput(int input, int output, EngineQuant inputQuant, EngineQuant outputQuant)
    {
        var w = new PayloadWriter();
        w.U32((uint)input);
        w.U32((uint)output);
        w.Quant(inputQuant);
        w.Quant(outputQuant);
        return w;
    }

    public void U32(uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        stream.Write(b);
    }

    public void I32(int v) => U32(unchecked((uint)v));

    public void I64(long v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, v);
        stream.Write(b);
    }

    public void F32(float v) => U32(unchecked((uint)BitConverter.SingleToInt32Bits(v)));

    public void Quant(EngineQuant q)
    {
        F32(q.Scale);
        I32(q.ZeroPoint);
    }

    public void Bytes(ReadOnlySpan<byte> b) => stream.Write(b);

    public byte[] ToArray() => ((MemoryStream)stream).ToArray();
}

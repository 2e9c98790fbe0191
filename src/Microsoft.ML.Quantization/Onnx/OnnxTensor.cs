using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Onnx;

/// <summary>ONNX TensorProto.DataType numbers.</summary>
internal enum OnnxElementType
{
    Undefined = 0, Float = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7,
    String = 8, Bool = 9, Float16 = 10, Double = 11, UInt32 = 12, UInt64 = 13, Complex64 = 14,
    Complex128 = 15, BFloat16 = 16, Float8E4M3FN = 17, Float8E4M3FNUZ = 18, Float8E5M2 = 19,
    Float8E5M2FNUZ = 20, UInt4 = 21, Int4 = 22, Float4E2M1 = 23,
}

/// <summary>
/// An initializer (or constant) tensor over a <see cref="TensorProto"/>. Reads data stored either as
/// raw little-endian bytes or in the typed fields (float_data, int32_data, ...); the From* factories
/// always write raw bytes. External data is resolved into raw bytes by <see cref="OnnxModel.Load"/>.
/// </summary>
internal sealed class OnnxTensor
{
    internal OnnxTensor(TensorProto proto) => Proto = proto;

    internal TensorProto Proto { get; }

    public string Name { get => Proto.Name; set => Proto.Name = value; }

    public OnnxElementType ElementType => (OnnxElementType)Proto.DataType;

    public long[] Dims => [.. Proto.Dims];

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in Proto.Dims)
                n *= d;
            return n;
        }
    }

    public bool IsRaw => !Proto.RawData.IsEmpty || (ElementCount == 0);

    public OnnxTensor Clone() => new(Proto.Clone());

    public OnnxTensor WithName(string name)
    {
        var t = Clone();
        t.Name = name;
        return t;
    }

    /// <summary>Bytes per element, or 0 for the packed 4-bit types and -1 for variable-size ones.</summary>
    public static int ElementSize(OnnxElementType type) => type switch
    {
        OnnxElementType.Float or OnnxElementType.Int32 or OnnxElementType.UInt32 => 4,
        OnnxElementType.UInt8 or OnnxElementType.Int8 or OnnxElementType.Bool => 1,
        OnnxElementType.Float8E4M3FN or OnnxElementType.Float8E4M3FNUZ or OnnxElementType.Float8E5M2 or OnnxElementType.Float8E5M2FNUZ => 1,
        OnnxElementType.UInt16 or OnnxElementType.Int16 or OnnxElementType.Float16 or OnnxElementType.BFloat16 => 2,
        OnnxElementType.Int64 or OnnxElementType.UInt64 or OnnxElementType.Double or OnnxElementType.Complex64 => 8,
        OnnxElementType.Complex128 => 16,
        OnnxElementType.UInt4 or OnnxElementType.Int4 or OnnxElementType.Float4E2M1 => 0,
        _ => -1,
    };

    /// <summary>The data as raw little-endian bytes (int4/uint4 packed two per byte, low nibble first).</summary>
    public byte[] ToRawBytes()
    {
        if (Proto.DataLocation == TensorProto.Types.DataLocation.External)
            throw new InvalidOperationException($"Tensor '{Name}' still refers to external data; load the model with OnnxModel.Load so it is resolved.");
        if (!Proto.RawData.IsEmpty)
            return Proto.RawData.ToByteArray();
        long n = ElementCount;
        var type = ElementType;
        switch (type)
        {
            case OnnxElementType.Float:
                return MemoryMarshal.AsBytes(Typed(Proto.FloatData, n).AsSpan()).ToArray();
            case OnnxElementType.Double:
                return MemoryMarshal.AsBytes(Typed(Proto.DoubleData, n).AsSpan()).ToArray();
            case OnnxElementType.Int64:
                return MemoryMarshal.AsBytes(Typed(Proto.Int64Data, n).AsSpan()).ToArray();
            case OnnxElementType.UInt64:
                return MemoryMarshal.AsBytes(Typed(Proto.Uint64Data, n).AsSpan()).ToArray();
            case OnnxElementType.UInt32:
                return MemoryMarshal.AsBytes(Typed(Proto.Uint64Data, n).Select(v => (uint)v).ToArray().AsSpan()).ToArray();
            case OnnxElementType.Int32:
                return MemoryMarshal.AsBytes(Typed(Proto.Int32Data, n).AsSpan()).ToArray();
            case OnnxElementType.Int4 or OnnxElementType.UInt4 or OnnxElementType.Float4E2M1:
            {
                // Typed 4-bit data: one packed byte per int32_data element (as onnx.helper writes it).
                long bytes = (n + 1) / 2;
                return Typed(Proto.Int32Data, bytes).Select(v => (byte)v).ToArray();
            }
            default:
            {
                int size = ElementSize(type);
                if (size is 1 or 2)
                {
                    // int8/uint8/int16/uint16/bool/float16/bfloat16/float8 live in int32_data, one value each.
                    int[] values = Typed(Proto.Int32Data, n);
                    var result = new byte[n * size];
                    for (long i = 0; i < n; i++)
                    {
                        if (size == 1)
                            result[i] = (byte)values[i];
                        else
                            BitConverter.TryWriteBytes(result.AsSpan((int)(i * 2), 2), (ushort)values[i]);
                    }
                    return result;
                }
                throw new NotSupportedException($"Tensor '{Name}': element type {type} has no raw byte form.");
            }
        }
    }

    private T[] Typed<T>(Google.Protobuf.Collections.RepeatedField<T> field, long expected)
    {
        if (field.Count != expected)
            throw new InvalidOnnxModelException($"Tensor '{Name}' ({ElementType}, dims [{string.Join(",", Proto.Dims)}]) holds {field.Count} values where {expected} are expected.");
        return [.. field];
    }

    private byte[] CheckedRaw(int elementSize)
    {
        byte[] raw = ToRawBytes();
        long expected = elementSize == 0 ? (ElementCount + 1) / 2 : ElementCount * elementSize;
        if (raw.Length != expected)
            throw new InvalidOnnxModelException($"Tensor '{Name}' ({ElementType}, dims [{string.Join(",", Proto.Dims)}]) holds {raw.Length} bytes where {expected} are expected.");
        return raw;
    }

    private void Require(params OnnxElementType[] types)
    {
        if (!types.Contains(ElementType))
            throw new InvalidOperationException($"Tensor '{Name}' is {ElementType}, not {string.Join(" or ", types)}.");
    }

    /// <summary>Float data; float16 and double are converted, integer tensors are rejected.</summary>
    public float[] ToFloatArray()
    {
        switch (ElementType)
        {
            case OnnxElementType.Float:
                if (Proto.RawData.IsEmpty)
                    return Typed(Proto.FloatData, ElementCount);
                return MemoryMarshal.Cast<byte, float>(CheckedRaw(4)).ToArray();
            case OnnxElementType.Float16:
                return [.. MemoryMarshal.Cast<byte, Half>(CheckedRaw(2)).ToArray().Select(h => (float)h)];
            case OnnxElementType.Double:
                return [.. MemoryMarshal.Cast<byte, double>(CheckedRaw(8)).ToArray().Select(d => (float)d)];
            default:
                throw new InvalidOperationException($"Tensor '{Name}' is {ElementType}, not a floating-point tensor.");
        }
    }

    public double[] ToDoubleArray()
    {
        Require(OnnxElementType.Double);
        return MemoryMarshal.Cast<byte, double>(CheckedRaw(8)).ToArray();
    }

    public Half[] ToFloat16Array()
    {
        Require(OnnxElementType.Float16);
        return MemoryMarshal.Cast<byte, Half>(CheckedRaw(2)).ToArray();
    }

    public sbyte[] ToInt8Array()
    {
        Require(OnnxElementType.Int8);
        return MemoryMarshal.Cast<byte, sbyte>(CheckedRaw(1)).ToArray();
    }

    public byte[] ToUInt8Array()
    {
        Require(OnnxElementType.UInt8, OnnxElementType.Bool);
        return CheckedRaw(1);
    }

    public short[] ToInt16Array()
    {
        Require(OnnxElementType.Int16);
        return MemoryMarshal.Cast<byte, short>(CheckedRaw(2)).ToArray();
    }

    public ushort[] ToUInt16Array()
    {
        Require(OnnxElementType.UInt16);
        return MemoryMarshal.Cast<byte, ushort>(CheckedRaw(2)).ToArray();
    }

    public int[] ToInt32Array()
    {
        Require(OnnxElementType.Int32);
        return MemoryMarshal.Cast<byte, int>(CheckedRaw(4)).ToArray();
    }

    public long[] ToInt64Array()
    {
        Require(OnnxElementType.Int64);
        return MemoryMarshal.Cast<byte, long>(CheckedRaw(8)).ToArray();
    }

    /// <summary>Unpacked int4 values (-8..7), low nibble first.</summary>
    public sbyte[] ToInt4Array()
    {
        Require(OnnxElementType.Int4);
        byte[] raw = CheckedRaw(0);
        var result = new sbyte[ElementCount];
        for (long i = 0; i < result.Length; i++)
        {
            int nibble = (raw[i >> 1] >> (int)((i & 1) * 4)) & 0xF;
            result[i] = (sbyte)((nibble ^ 8) - 8);
        }
        return result;
    }

    /// <summary>Unpacked uint4 values (0..15), low nibble first.</summary>
    public byte[] ToUInt4Array()
    {
        Require(OnnxElementType.UInt4);
        byte[] raw = CheckedRaw(0);
        var result = new byte[ElementCount];
        for (long i = 0; i < result.Length; i++)
            result[i] = (byte)((raw[i >> 1] >> (int)((i & 1) * 4)) & 0xF);
        return result;
    }

    /// <summary>Numeric data widened to double (for constant folding and inspection).</summary>
    public double[] ToDoubles() => ElementType switch
    {
        OnnxElementType.Float or OnnxElementType.Float16 => [.. ToFloatArray().Select(v => (double)v)],
        OnnxElementType.Double => ToDoubleArray(),
        OnnxElementType.Int8 => [.. ToInt8Array().Select(v => (double)v)],
        OnnxElementType.UInt8 or OnnxElementType.Bool => [.. ToUInt8Array().Select(v => (double)v)],
        OnnxElementType.Int16 => [.. ToInt16Array().Select(v => (double)v)],
        OnnxElementType.UInt16 => [.. ToUInt16Array().Select(v => (double)v)],
        OnnxElementType.Int32 => [.. ToInt32Array().Select(v => (double)v)],
        OnnxElementType.Int64 => [.. ToInt64Array().Select(v => (double)v)],
        OnnxElementType.Int4 => [.. ToInt4Array().Select(v => (double)v)],
        OnnxElementType.UInt4 => [.. ToUInt4Array().Select(v => (double)v)],
        _ => throw new NotSupportedException($"Tensor '{Name}': element type {ElementType} is not numeric here."),
    };

    /// <summary>A tensor of <paramref name="type"/> from doubles (rounded/truncated the way Cast does).</summary>
    public static OnnxTensor FromDoubles(string name, OnnxElementType type, long[] dims, ReadOnlySpan<double> v)
    {
        switch (type)
        {
            case OnnxElementType.Float: { var a = new float[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (float)v[i]; return FromFloats(name, dims, a); }
            case OnnxElementType.Double: return FromRaw(name, type, dims, MemoryMarshal.AsBytes(v).ToArray());
            case OnnxElementType.Float16: { var a = new Half[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (Half)v[i]; return FromFloat16(name, dims, a); }
            case OnnxElementType.Int8: { var a = new sbyte[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (sbyte)v[i]; return FromInt8(name, dims, a); }
            case OnnxElementType.UInt8: { var a = new byte[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (byte)v[i]; return FromUInt8(name, dims, a); }
            case OnnxElementType.Bool: { var a = new byte[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = v[i] != 0 ? (byte)1 : (byte)0; return FromRaw(name, type, dims, a); }
            case OnnxElementType.Int16: { var a = new short[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (short)v[i]; return FromInt16(name, dims, a); }
            case OnnxElementType.UInt16: { var a = new ushort[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (ushort)v[i]; return FromUInt16(name, dims, a); }
            case OnnxElementType.Int32: { var a = new int[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (int)v[i]; return FromInt32(name, dims, a); }
            case OnnxElementType.Int64: { var a = new long[v.Length]; for (int i = 0; i < a.Length; i++) a[i] = (long)v[i]; return FromInt64(name, dims, a); }
            default: throw new NotSupportedException($"Tensor '{name}': cannot build element type {type} from numbers.");
        }
    }

    public static OnnxTensor FromRaw(string name, OnnxElementType type, long[] dims, byte[] raw)
    {
        var p = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(raw) };
        p.Dims.AddRange(dims);
        var t = new OnnxTensor(p);
        int size = ElementSize(type);
        long expected = size == 0 ? (t.ElementCount + 1) / 2 : t.ElementCount * size;
        if (size >= 0 && raw.Length != expected)
            throw new ArgumentException($"Tensor '{name}': {raw.Length} bytes for {type} dims [{string.Join(",", dims)}], expected {expected}.");
        return t;
    }

    public static OnnxTensor FromFloats(string name, long[] dims, ReadOnlySpan<float> values) =>
        FromRaw(name, OnnxElementType.Float, dims, MemoryMarshal.AsBytes(values).ToArray());

    public static OnnxTensor FromFloat16(string name, long[] dims, ReadOnlySpan<Half> values) =>
        FromRaw(name, OnnxElementType.Float16, dims, MemoryMarshal.AsBytes(values).ToArray());

    public static OnnxTensor FromInt8(string name, long[] dims, ReadOnlySpan<sbyte> values) =>
        FromRaw(name, OnnxElementType.Int8, dims, MemoryMarshal.AsBytes(values).ToArray());

    public static OnnxTensor FromUInt8(string name, long[] dims, ReadOnlySpan<byte> values) =>
        FromRaw(name, OnnxElementType.UInt8, dims, values.ToArray());

    public static OnnxTensor FromInt16(string name, long[] dims, ReadOnlySpan<short> values) =>
        FromRaw(name, OnnxElementType.Int16, dims, MemoryMarshal.AsBytes(values).ToArray());

    public static OnnxTensor FromUInt16(string name, long[] dims, ReadOnlySpan<ushort> values) =>
        FromRaw(name, OnnxElementType.UInt16, dims, MemoryMarshal.AsBytes(values).ToArray());

    public static OnnxTensor FromInt32(string name, long[] dims, ReadOnlySpan<int> values) =>
        FromRaw(name, OnnxElementType.Int32, dims, MemoryMarshal.AsBytes(values).ToArray());

    public static OnnxTensor FromInt64(string name, long[] dims, ReadOnlySpan<long> values) =>
        FromRaw(name, OnnxElementType.Int64, dims, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>int4 values (-8..7) packed two per byte, low nibble first.</summary>
    public static OnnxTensor FromInt4(string name, long[] dims, ReadOnlySpan<sbyte> values)
    {
        var packed = new byte[(values.Length + 1) / 2];
        for (int i = 0; i < values.Length; i++)
        {
            if (values[i] is < -8 or > 7)
                throw new ArgumentOutOfRangeException(nameof(values), $"Tensor '{name}': int4 value {values[i]} at {i} is outside -8..7.");
            packed[i >> 1] |= (byte)((values[i] & 0xF) << ((i & 1) * 4));
        }
        return FromRaw(name, OnnxElementType.Int4, dims, packed);
    }

    /// <summary>uint4 values (0..15) packed two per byte, low nibble first.</summary>
    public static OnnxTensor FromUInt4(string name, long[] dims, ReadOnlySpan<byte> values)
    {
        var packed = new byte[(values.Length + 1) / 2];
        for (int i = 0; i < values.Length; i++)
        {
            if (values[i] > 15)
                throw new ArgumentOutOfRangeException(nameof(values), $"Tensor '{name}': uint4 value {values[i]} at {i} is outside 0..15.");
            packed[i >> 1] |= (byte)((values[i] & 0xF) << ((i & 1) * 4));
        }
        return FromRaw(name, OnnxElementType.UInt4, dims, packed);
    }

    /// <summary>Converts typed-field storage to raw bytes in place (what the writers emit).</summary>
    internal void MakeRaw()
    {
        if (!Proto.RawData.IsEmpty || ElementType == OnnxElementType.String || Proto.DataLocation == TensorProto.Types.DataLocation.External)
            return;
        byte[] raw = ToRawBytes();
        Proto.FloatData.Clear(); Proto.Int32Data.Clear(); Proto.Int64Data.Clear(); Proto.DoubleData.Clear(); Proto.Uint64Data.Clear();
        Proto.RawData = ByteString.CopyFrom(raw);
    }
}

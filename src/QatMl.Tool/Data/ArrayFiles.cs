using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text.RegularExpressions;

namespace QatMl.Tool.Data;

/// <summary>A dense array read from a file: its shape (first dimension: rows) and values as float.</summary>
internal sealed record ArrayData(int[] Shape, float[] Values)
{
    public int Rows => Shape[0];

    public int RowElements => Shape.Skip(1).Aggregate(1, (a, b) => checked(a * b));

    public ReadOnlySpan<float> Row(int i) => Values.AsSpan(i * RowElements, RowElements);
}

/// <summary>Readers of the array formats the tool takes: IDX (Fashion-MNIST's, optionally gzipped) and NumPy .npy.</summary>
internal static partial class ArrayFiles
{
    /// <summary>True when the file starts like an IDX file (two zero bytes, a type byte, a dimension count).</summary>
    public static bool LooksLikeIdx(string path)
    {
        try
        {
            using Stream s = Open(path);
            Span<byte> head = stackalloc byte[4];
            return s.ReadAtLeast(head, 4, throwOnEndOfStream: false) == 4 && head[0] == 0 && head[1] == 0 && head[2] is 0x08 or 0x09 or 0x0B or 0x0C or 0x0D or 0x0E && head[3] >= 1;
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>Reads an IDX file: unsigned/signed bytes, int16, int32, float32 or float64, big-endian, gzipped or not.</summary>
    public static ArrayData ReadIdx(string path, int? limit = null)
    {
        using Stream stream = Open(path);
        using var reader = new BinaryReader(stream);
        byte[] header = reader.ReadBytes(4);
        if (header.Length != 4 || header[0] != 0 || header[1] != 0)
            throw new ToolException($"'{path}' is not an IDX file (it does not start with two zero bytes).");
        int size = header[2] switch
        {
            0x08 or 0x09 => 1,
            0x0B => 2,
            0x0C or 0x0D => 4,
            0x0E => 8,
            _ => throw new ToolException($"'{path}': unknown IDX element type 0x{header[2]:x2}."),
        };
        int rank = header[3];
        if (rank < 1)
            throw new ToolException($"'{path}': an IDX file needs at least one dimension.");
        int[] shape = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            byte[] d = reader.ReadBytes(4);
            if (d.Length != 4)
                throw new ToolException($"'{path}': the IDX header is truncated.");
            shape[i] = BinaryPrimitives.ReadInt32BigEndian(d);
            if (shape[i] < 0)
                throw new ToolException($"'{path}': dimension {i} is negative ({shape[i]}).");
        }
        int rows = Math.Min(shape[0], limit ?? shape[0]);
        int rowElements = shape.Skip(1).Aggregate(1, (a, b) => checked(a * b));
        int count = checked(rows * rowElements);
        byte[] data = ReadData(reader, path, count, size);
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            values[i] = header[2] switch
            {
                0x08 => data[i],
                0x09 => (sbyte)data[i],
                0x0B => BinaryPrimitives.ReadInt16BigEndian(data.AsSpan(i * 2)),
                0x0C => BinaryPrimitives.ReadInt32BigEndian(data.AsSpan(i * 4)),
                0x0D => BinaryPrimitives.ReadSingleBigEndian(data.AsSpan(i * 4)),
                _ => (float)BinaryPrimitives.ReadDoubleBigEndian(data.AsSpan(i * 8)),
            };
        }
        shape[0] = rows;
        return new ArrayData(shape, values);
    }

    /// <summary>Reads a NumPy .npy file (version 1-3, C order): float32/64, (u)int8/16/32/64, bool.</summary>
    public static ArrayData ReadNpy(string path, int? limit = null)
    {
        using Stream stream = Open(path);
        using var reader = new BinaryReader(stream);
        byte[] magic = reader.ReadBytes(8);
        if (magic.Length != 8 || magic[0] != 0x93 || magic[1] != (byte)'N' || magic[2] != (byte)'U' || magic[3] != (byte)'M' || magic[4] != (byte)'P' || magic[5] != (byte)'Y')
            throw new ToolException($"'{path}' is not a NumPy .npy file.");
        int headerLength = magic[6] == 1 ? reader.ReadUInt16() : reader.ReadInt32();
        string header = System.Text.Encoding.Latin1.GetString(reader.ReadBytes(headerLength));
        var descr = DescrPattern().Match(header);
        var order = FortranPattern().Match(header);
        var shapeMatch = ShapePattern().Match(header);
        if (!descr.Success || !shapeMatch.Success)
            throw new ToolException($"'{path}': the .npy header '{header.Trim()}' has no descr or shape.");
        if (order.Success && order.Groups[1].Value == "True")
            throw new ToolException($"'{path}' is in Fortran order; save it in C order (numpy.ascontiguousarray).");
        int[] shape = shapeMatch.Groups[1].Value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(d => int.Parse(d, CultureInfo.InvariantCulture)).ToArray();
        if (shape.Length == 0)
            throw new ToolException($"'{path}' holds a scalar; the tool needs rows.");
        string type = descr.Groups[1].Value;
        bool bigEndian = type[0] == '>';
        string kind = type.TrimStart('<', '>', '|', '=');
        int size = kind switch
        {
            "f4" or "i4" or "u4" => 4,
            "f8" or "i8" or "u8" => 8,
            "i2" or "u2" => 2,
            "i1" or "u1" or "b1" => 1,
            _ => throw new ToolException($"'{path}': NumPy type '{type}' is not supported (float32/64, (u)int8-64, bool)."),
        };
        int rows = Math.Min(shape[0], limit ?? shape[0]);
        int rowElements = shape.Skip(1).Aggregate(1, (a, b) => checked(a * b));
        int count = checked(rows * rowElements);
        byte[] data = ReadData(reader, path, count, size);
        if (bigEndian && size > 1)
            for (int i = 0; i < count; i++)
                data.AsSpan(i * size, size).Reverse();
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> v = data.AsSpan(i * size, size);
            values[i] = kind switch
            {
                "f4" => BinaryPrimitives.ReadSingleLittleEndian(v),
                "f8" => (float)BinaryPrimitives.ReadDoubleLittleEndian(v),
                "i8" => BinaryPrimitives.ReadInt64LittleEndian(v),
                "u8" => BinaryPrimitives.ReadUInt64LittleEndian(v),
                "i4" => BinaryPrimitives.ReadInt32LittleEndian(v),
                "u4" => BinaryPrimitives.ReadUInt32LittleEndian(v),
                "i2" => BinaryPrimitives.ReadInt16LittleEndian(v),
                "u2" => BinaryPrimitives.ReadUInt16LittleEndian(v),
                "i1" => (sbyte)v[0],
                _ => v[0],
            };
        }
        shape[0] = rows;
        return new ArrayData(shape, values);
    }

    private static byte[] ReadData(BinaryReader reader, string path, int count, int size)
    {
        byte[] data = reader.ReadBytes(checked(count * size));
        if (data.Length != count * size)
            throw new ToolException($"'{path}' is truncated: {data.Length} of {count * size} data bytes.");
        return data;
    }

    private static Stream Open(string path)
    {
        if (!File.Exists(path))
            throw new ToolException($"Data file '{path}' does not exist.");
        Stream file = File.OpenRead(path);
        return path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file;
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']+)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}

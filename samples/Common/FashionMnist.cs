using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace QatMl.Samples;

/// <summary>
/// Reads Fashion-MNIST's gzipped IDX files (images and labels) and turns them into ML.NET rows with
/// FmnistNet's preprocessing: pixel / 255, then (x - 0.2860) / 0.3530. Shared (as linked source) by
/// the samples, the benchmarks and the tests.
/// </summary>
public static class FashionMnist
{
    public const float Mean = 0.2860f;
    public const float Std = 0.3530f;
    public const int Pixels = 28 * 28;

    /// <summary>One image: FmnistNet's input tensor [1, 28, 28] flattened, and its class 0..9.</summary>
    public sealed class Row
    {
        [VectorType(Pixels)]
        [ColumnName("input")]
        public float[] Input { get; set; } = [];

        public uint Label { get; set; }
    }

    /// <summary>Raw images (row-major uint8, 784 per image) and labels.</summary>
    public sealed record Set(byte[] Images, byte[] Labels, int Count);

    /// <summary>Reads an images file and its labels file (gzipped or not), optionally the first <paramref name="limit"/> images.</summary>
    public static Set Read(string imagesPath, string labelsPath, int? limit = null)
    {
        byte[] images = ReadIdx(imagesPath, 0x803, out int count, out int[] dims);
        if (dims.Length != 2 || dims[0] != 28 || dims[1] != 28)
            throw new InvalidDataException($"'{imagesPath}' holds images of [{string.Join(", ", dims)}], not 28x28.");
        byte[] labels = ReadIdx(labelsPath, 0x801, out int labelCount, out _);
        if (labelCount != count)
            throw new InvalidDataException($"'{imagesPath}' has {count} images but '{labelsPath}' has {labelCount} labels.");
        int n = Math.Min(count, limit ?? count);
        return new Set(images.AsSpan(0, n * Pixels).ToArray(), labels.AsSpan(0, n).ToArray(), n);
    }

    /// <summary>Reads the test set (t10k) from a folder holding the standard file names.</summary>
    public static Set ReadTest(string folder, int? limit = null)
        => Read(Find(folder, "t10k-images-idx3-ubyte"), Find(folder, "t10k-labels-idx1-ubyte"), limit);

    /// <summary>
    /// Reads the 1000 training images FmnistNet is calibrated on (../shared/models/fmnistnet_calibration_indices.txt,
    /// shipped as calibration-1000-*-ubyte.gz in tests/data/fashion-mnist), from a folder holding them.
    /// </summary>
    public static Set ReadCalibration(string folder, int? limit = null)
        => Read(Find(folder, "calibration-1000-images-idx3-ubyte"), Find(folder, "calibration-1000-labels-idx1-ubyte"), limit);

    /// <summary>FmnistNet's preprocessing of one image into <paramref name="target"/> (784 floats).</summary>
    public static void Normalize(ReadOnlySpan<byte> pixels, Span<float> target)
    {
        for (int i = 0; i < Pixels; i++)
            target[i] = (pixels[i] / 255f - Mean) / Std;
    }

    /// <summary>Preprocessed rows, ready for <see cref="DataOperationsCatalog.LoadFromEnumerable{TRow}(IEnumerable{TRow}, SchemaDefinition)"/>.</summary>
    public static List<Row> Rows(Set set)
    {
        var rows = new List<Row>(set.Count);
        for (int i = 0; i < set.Count; i++)
        {
            var input = new float[Pixels];
            Normalize(set.Images.AsSpan(i * Pixels, Pixels), input);
            rows.Add(new Row { Input = input, Label = set.Labels[i] });
        }
        return rows;
    }

    /// <summary>An IDataView of preprocessed rows: column "input" (Vector&lt;Single, 784&gt;) and "Label" (UInt32).</summary>
    public static IDataView Load(MLContext context, Set set) => context.Data.LoadFromEnumerable(Rows(set));

    private static string Find(string folder, string stem)
    {
        foreach (string name in new[] { stem + ".gz", stem })
        {
            string path = Path.Combine(folder, name);
            if (File.Exists(path))
                return path;
        }
        throw new FileNotFoundException($"Fashion-MNIST file '{stem}[.gz]' not found in '{folder}'.");
    }

    private static byte[] ReadIdx(string path, int expectedMagic, out int count, out int[] dims)
    {
        using Stream file = File.OpenRead(path);
        using Stream stream = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file;
        using var reader = new BinaryReader(stream);
        int magic = ReadBigEndian(reader);
        if (magic != expectedMagic)
            throw new InvalidDataException($"'{path}' is not an IDX file of the expected kind (magic 0x{magic:x8}, expected 0x{expectedMagic:x8}).");
        count = ReadBigEndian(reader);
        dims = new int[(magic & 0xff) - 1];
        for (int i = 0; i < dims.Length; i++)
            dims[i] = ReadBigEndian(reader);
        int size = checked(count * dims.Aggregate(1, (a, b) => a * b));
        byte[] data = reader.ReadBytes(size);
        if (data.Length != size)
            throw new InvalidDataException($"'{path}' is truncated: {data.Length} of {size} data bytes.");
        return data;
    }

    private static int ReadBigEndian(BinaryReader reader)
    {
        byte[] b = reader.ReadBytes(4);
        if (b.Length != 4)
            throw new InvalidDataException("IDX header is truncated.");
        return (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    }
}

using System.Buffers.Binary;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace QatMl.Benchmarks.Zoo;

/// <summary>A model input: tensor name, element type (float or int64) and the shape of one row.</summary>
internal sealed record ZooTensor(string Name, bool IsFloat, int[] RowDims)
{
    public int Size => RowDims.Aggregate(1, (a, b) => a * b);
}

/// <summary>
/// Rows for a model's inputs (one float[] or long[] per input and row), turned into an IDataView whose columns are
/// named after the tensors. The first <see cref="CalibrationCount"/> rows calibrate, the rest are held out.
/// </summary>
internal sealed class ZooRows(IReadOnlyList<ZooTensor> tensors, IReadOnlyList<Array[]> rows, int calibrationCount)
{
    public IReadOnlyList<ZooTensor> Tensors { get; } = tensors;

    public IReadOnlyList<Array[]> Rows { get; } = rows;

    public int CalibrationCount { get; } = calibrationCount;

    public int HeldOutCount => Rows.Count - CalibrationCount;

    /// <summary>Row-wise ground truth for task metrics that have one (e.g. the text orientation), or null.</summary>
    public int[]? Labels { get; init; }

    public IDataView Calibration(MLContext context) => ToDataView(context, 0, CalibrationCount);

    public IDataView HeldOut(MLContext context) => ToDataView(context, CalibrationCount, HeldOutCount);

    private sealed class Row
    {
        public float[] F0 { get; set; } = [];
        public float[] F1 { get; set; } = [];
        public float[] F2 { get; set; } = [];
        public long[] L0 { get; set; } = [];
        public long[] L1 { get; set; } = [];
        public long[] L2 { get; set; } = [];
    }

    private IDataView ToDataView(MLContext context, int start, int count)
    {
        // Slots: the i-th float input goes to F<i>, the i-th int64 input to L<i>; unused slots are dropped from the schema.
        var slots = new string[Tensors.Count];
        int floats = 0, longs = 0;
        for (int t = 0; t < Tensors.Count; t++)
            slots[t] = Tensors[t].IsFloat ? $"F{floats++}" : $"L{longs++}";
        if (floats > 3 || longs > 3)
            throw new NotSupportedException("The zoo rows hold at most three float and three int64 inputs.");
        var definition = SchemaDefinition.Create(typeof(Row));
        foreach (var column in definition.ToList())
        {
            int t = Array.IndexOf(slots, column.MemberName);
            if (t < 0)
            {
                definition.Remove(column);
                continue;
            }
            column.ColumnName = Tensors[t].Name;
            column.ColumnType = new VectorDataViewType(Tensors[t].IsFloat ? NumberDataViewType.Single : NumberDataViewType.Int64, Tensors[t].Size);
        }
        var rows = new List<Row>(count);
        foreach (Array[] values in Rows.Skip(start).Take(count))
        {
            var row = new Row();
            for (int t = 0; t < Tensors.Count; t++)
                typeof(Row).GetProperty(slots[t])!.SetValue(row, values[t]);
            rows.Add(row);
        }
        return context.Data.LoadFromEnumerable(rows, definition);
    }
}

/// <summary>Readers for the zoo's real inputs: images, WAV audio, sentences.</summary>
internal static class ZooData
{
    private sealed class ImagePath
    {
        public string Path { get; set; } = "";
    }

    /// <summary>
    /// Images decoded and resized (stretched) to width x height through ML.NET's image transforms, as planar CHW
    /// floats in 0..255, channels in RGB or BGR order.
    /// </summary>
    public static List<float[]> LoadPixels(MLContext context, IEnumerable<string> files, int width, int height, bool bgr)
    {
        var data = context.Data.LoadFromEnumerable(files.Select(f => new ImagePath { Path = Path.GetFullPath(f) }));
        var pipeline = context.Transforms.LoadImages("Image", null, nameof(ImagePath.Path))
            .Append(context.Transforms.ResizeImages("Resized", width, height, "Image", ImageResizingEstimator.ResizingKind.Fill))
            .Append(context.Transforms.ExtractPixels("Pixels", "Resized", ImagePixelExtractingEstimator.ColorBits.Rgb,
                bgr ? ImagePixelExtractingEstimator.ColorsOrder.ABGR : ImagePixelExtractingEstimator.ColorsOrder.ARGB, interleavePixelColors: false));
        IDataView pixels = pipeline.Fit(data).Transform(data);
        return [.. pixels.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray())];
    }

    /// <summary>Files of a folder with one of the extensions, in ordinal name order (stable across machines).</summary>
    public static string[] Files(string folder, params string[] extensions) =>
        Directory.Exists(folder)
            ? [.. Directory.EnumerateFiles(folder).Where(f => extensions.Contains(Path.GetExtension(f), StringComparer.OrdinalIgnoreCase)).Order(StringComparer.Ordinal)]
            : [];

    /// <summary>A PCM WAV file (8/16-bit, any channel count) as mono samples in [-1, 1] and its sample rate.</summary>
    public static float[] ReadWav(string path, out int sampleRate)
    {
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < 12 || BinaryPrimitives.ReadUInt32BigEndian(bytes) != 0x52494646 /* RIFF */ || BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(8)) != 0x57415645 /* WAVE */)
            throw new InvalidDataException($"'{path}' is not a RIFF/WAVE file.");
        int channels = 0, bits = 0;
        sampleRate = 0;
        for (int offset = 12; offset + 8 <= bytes.Length;)
        {
            uint id = BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(offset));
            int size = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(offset + 4)), (uint)(bytes.Length - offset - 8));
            var body = bytes.AsSpan(offset + 8, size);
            if (id == 0x666d7420 /* fmt  */)
            {
                if (BinaryPrimitives.ReadUInt16LittleEndian(body) != 1)
                    throw new InvalidDataException($"'{path}' is not PCM.");
                channels = BinaryPrimitives.ReadUInt16LittleEndian(body[2..]);
                sampleRate = (int)BinaryPrimitives.ReadUInt32LittleEndian(body[4..]);
                bits = BinaryPrimitives.ReadUInt16LittleEndian(body[14..]);
            }
            else if (id == 0x64617461 /* data */)
            {
                if (channels == 0 || bits is not (8 or 16))
                    throw new InvalidDataException($"'{path}': data before a PCM 8/16-bit fmt chunk.");
                int frame = channels * bits / 8, frames = size / frame;
                var samples = new float[frames];
                for (int i = 0; i < frames; i++)
                {
                    float sum = 0;
                    for (int c = 0; c < channels; c++)
                        sum += bits == 16
                            ? BinaryPrimitives.ReadInt16LittleEndian(body[(i * frame + 2 * c)..]) / 32768f
                            : (body[i * frame + c] - 128) / 128f;
                    samples[i] = sum / channels;
                }
                return samples;
            }
            offset += 8 + size + (size & 1);
        }
        throw new InvalidDataException($"'{path}' has no data chunk.");
    }

    /// <summary>Non-empty, non-comment lines of a text file.</summary>
    public static string[] Lines(string path) =>
        [.. File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#'))];
}

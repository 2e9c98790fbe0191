using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// The rows of a training run, in memory: features [N, D] row-major and class labels. Read once from the
/// IDataView; training draws its batches from here in a seeded order, and calibration and evaluation read it too.
/// </summary>
internal sealed record TrainingRows(float[] Features, long[] Labels, int RowSize, long[] InputDims)
{
    public int Count => Labels.Length;

    /// <summary>The first <paramref name="count"/> rows and the rest (the validation split takes the last rows).</summary>
    public (TrainingRows First, TrainingRows Remainder) SplitAt(int count)
        => (new TrainingRows(Features[..(count * RowSize)], Labels[..count], RowSize, InputDims),
            new TrainingRows(Features[(count * RowSize)..], Labels[count..], RowSize, InputDims));

    /// <summary>The first <paramref name="count"/> rows (all when there are fewer).</summary>
    public TrainingRows Take(int count) => count >= Count ? this : SplitAt(count).First;

    /// <summary>
    /// This epoch's row order: Fisher-Yates driven by SplitMix64 seeded from (seed, epoch). Unlike
    /// <see cref="HashCode"/> (randomised per process) or <see cref="Random"/>'s algorithms (free to change between
    /// .NET versions), this is the same order in every process, so a run resumed elsewhere sees every row once.
    /// </summary>
    public int[] EpochOrder(int seed, int epoch)
    {
        var order = new int[Count];
        for (int i = 0; i < order.Length; i++)
            order[i] = i;
        var random = new SplitMix64(((ulong)(uint)seed << 32) | (uint)epoch);
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = random.NextBelow(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    /// <summary>SHA-256 of the rows' shape, features and labels (hex): identifies the data a checkpoint was trained on.</summary>
    public string ContentHash()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> header = stackalloc byte[8];
        BinaryPrimitives.WriteInt32LittleEndian(header, Count);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], RowSize);
        hash.AppendData(header);
        hash.AppendData(MemoryMarshal.AsBytes(Features.AsSpan(0, Count * RowSize)));
        hash.AppendData(MemoryMarshal.AsBytes(Labels.AsSpan()));
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>The first <paramref name="count"/> rows as an IDataView with one vector column (what the calibrator reads).</summary>
    public IDataView ToDataView(MLContext context, string column, int count)
    {
        var definition = SchemaDefinition.Create(typeof(FeatureRow));
        definition[0].ColumnName = column;
        definition[0].ColumnType = new VectorDataViewType(NumberDataViewType.Single, RowSize);
        int n = Math.Min(count, Count);
        var rows = Enumerable.Range(0, n).Select(i => new FeatureRow { Features = Features.AsSpan(i * RowSize, RowSize).ToArray() });
        return context.Data.LoadFromEnumerable(rows, definition);
    }

    /// <summary>Top-1 accuracy of an ONNX model on these rows (ONNX Runtime, CPU, one thread; ties to the lowest class).</summary>
    public double Accuracy(byte[] model)
    {
        using var sessionOptions = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
        using var session = new InferenceSession(model, sessionOptions);
        using var runOptions = new RunOptions();
        string input = session.InputMetadata.Keys.First(), output = session.OutputMetadata.Keys.First();
        long correct = 0;
        const int batch = 256;
        for (int start = 0; start < Count; start += batch)
        {
            int count = Math.Min(batch, Count - start);
            long[] shape = [count, .. InputDims];
            using var x = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, Features.AsMemory(start * RowSize, count * RowSize), shape);
            using var results = session.Run(runOptions, [input], [x], [output]);
            ReadOnlySpan<float> logits = results[0].GetTensorDataAsSpan<float>();
            int classes = logits.Length / count;
            for (int r = 0; r < count; r++)
                correct += QuantizationComparer.ArgMax(logits.Slice(r * classes, classes)) == Labels[start + r] ? 1 : 0;
        }
        return (double)correct / Count;
    }

    /// <summary>
    /// Reads a features column (Vector&lt;Single&gt; of the model's row size) and a class label column (UInt32, Int32,
    /// Int64, Single or a key type, keys made 0-based) into memory.
    /// </summary>
    public static TrainingRows Load(IDataView data, string featureColumn, string labelColumn, long[] rowDims, string paramName)
    {
        int rowSize = checked((int)rowDims.Aggregate(1L, (a, b) => a * b));
        var features = data.Schema.GetColumnOrNull(featureColumn) ?? throw Internal.SchemaErrors.MissingColumn(paramName, featureColumn, data.Schema,
            $"Set {nameof(AwareTrainingOptions)}.{nameof(AwareTrainingOptions.FeatureColumnName)} to the column that feeds the model (default: the column named like its input).");
        if (features.Type is not VectorDataViewType { ItemType: var item } vector || item != NumberDataViewType.Single || (vector.Size != 0 && vector.Size != rowSize))
            throw Internal.SchemaErrors.Mismatch(paramName, featureColumn, $"Vector<Single, {rowSize}>", Internal.SchemaShapes.Describe(features.Type));
        var label = data.Schema.GetColumnOrNull(labelColumn) ?? throw Internal.SchemaErrors.MissingColumn(paramName, labelColumn, data.Schema,
            $"Set {nameof(AwareTrainingOptions)}.{nameof(AwareTrainingOptions.LabelColumnName)} to the class label column (default \"Label\").");
        var labelType = label.Type;
        bool key = labelType is KeyDataViewType;
        if (!(key || labelType == NumberDataViewType.UInt32 || labelType == NumberDataViewType.Int32 || labelType == NumberDataViewType.Int64 || labelType == NumberDataViewType.Single))
            throw Internal.SchemaErrors.Mismatch(paramName, labelColumn, "UInt32, Int32, Int64, Single or a key type", Internal.SchemaShapes.Describe(labelType));

        // Rows are copied whole into one growing array (preallocated when the row count is known).
        long known = data.GetRowCount() ?? 1024;
        var xs = new float[checked((int)Math.Min(known * rowSize, Array.MaxLength))];
        var ys = new List<long>((int)Math.Min(known, int.MaxValue));
        int filled = 0;
        using var cursor = data.GetRowCursor([features, label]);
        var getFeatures = cursor.GetGetter<VBuffer<float>>(features);
        Func<long> getLabel = labelType switch
        {
            _ when key || labelType == NumberDataViewType.UInt32 => Getter<uint>(cursor, label, v => key ? (long)v - 1 : v),
            _ when labelType == NumberDataViewType.Int32 => Getter<int>(cursor, label, v => v),
            _ when labelType == NumberDataViewType.Int64 => Getter<long>(cursor, label, v => v),
            _ => Getter<float>(cursor, label, v => float.IsFinite(v) ? (long)v : throw new InvalidOperationException($"Label column '{labelColumn}' has the non-finite value {v} at row {cursor.Position}.")),
        };
        VBuffer<float> row = default;
        while (cursor.MoveNext())
        {
            getFeatures(ref row);
            if (row.Length != rowSize)
                throw new InvalidOperationException($"Column '{featureColumn}' row {cursor.Position} has {row.Length} values; the model takes {rowSize}.");
            if (filled + rowSize > xs.Length)
                Array.Resize(ref xs, checked(Math.Max(xs.Length * 2, filled + rowSize)));
            row.CopyTo(xs.AsSpan(filled, rowSize));
            filled += rowSize;
            ys.Add(getLabel());
        }
        return new TrainingRows(filled == xs.Length ? xs : xs[..filled], [.. ys], rowSize, rowDims);
    }

    private static Func<long> Getter<T>(DataViewRow row, DataViewSchema.Column column, Func<T, long> convert)
    {
        var g = row.GetGetter<T>(column);
        return () => { T v = default!; g(ref v); return convert(v); };
    }

    /// <summary>One row of the calibrator's view (column name and vector size are set by the schema definition).</summary>
    private sealed class FeatureRow
    {
        public float[] Features { get; set; } = [];
    }

    /// <summary>SplitMix64 (Steele, Lea, Flood 2014): a fixed 64-bit mixing generator, the same on every platform.</summary>
    private struct SplitMix64(ulong seed)
    {
        private ulong _state = seed;

        private ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Uniform in [0, bound) without modulo bias (Lemire's multiply-shift with rejection).</summary>
        public int NextBelow(int bound)
        {
            ulong range = (ulong)bound;
            ulong threshold = (0UL - range) % range;
            while (true)
            {
                ulong product = Math.BigMul(Next(), range, out ulong low);
                if (low >= threshold)
                    return (int)product;
            }
        }
    }
}

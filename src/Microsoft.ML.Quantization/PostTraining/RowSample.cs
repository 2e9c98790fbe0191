using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>The first calibration rows, held in memory typed as their inputs, with their labels when a target needs them.</summary>
internal sealed class RowSample
{
    public required InputSpec[] Inputs { get; init; }
    public required Array[] Data { get; init; }
    public long[]? Labels { get; init; }
    public required int Count { get; init; }
    public required bool FixedBatch { get; init; }
    public required string[] Outputs { get; init; }

    /// <summary>The outputs a sample is scored on: <see cref="PostTrainingOptions.Outputs"/>, or every float graph output.</summary>
    public static string[] ScoredOutputs(OnnxModel model, PostTrainingOptions options)
        => options.Outputs.Count > 0 ? [.. options.Outputs.Select(o => o.TensorName)]
            : [.. model.Graph.Outputs.Where(o => o.ElementType == OnnxElementType.Float).Select(o => o.Name)];

    /// <summary>Reads the first rows (<paramref name="rowCount"/>, or <see cref="PostTrainingOptions.SensitivityRowCount"/> when null) into memory.</summary>
    public static RowSample Load(MLContext context, OnnxModel model, PostTrainingOptions options, IDataView data, string modelName, int? rowCount = null)
    {
        string[] outputs = ScoredOutputs(model, options);
        var result = OrtSessionFactory.Create(context, SampleRunner.WithOutputs(model, outputs).ToBytes(), options, modelName);
        using var session = result.Session;
        var (inputs, _, fixedBatch) = OrtBatchScorer.Describe(session, modelName, options.Inputs,
            outputs.Select(o => new OnnxColumnBinding(o, o)).ToList(), options.InputShapes, options.BatchSize);
        BatchScorerSchema.ValidateInputSchema(inputs, data.Schema, "input", options.InputsOptionName);

        int wanted = Math.Max(1, rowCount ?? options.SensitivityRowCount);
        var store = new RowStore(inputs, wanted);
        var columns = inputs.Select(i => data.Schema[i.ColumnName]).ToList();
        DataViewSchema.Column? label = options.MaxAccuracyDrop is null ? null
            : data.Schema.GetColumnOrNull(options.LabelColumnName!) ?? throw Internal.SchemaErrors.MissingColumn("input", options.LabelColumnName!, data.Schema,
                $"The sensitivity analysis's MaxAccuracyDrop reads labels from it; set {nameof(PostTrainingOptions)}.{nameof(PostTrainingOptions.LabelColumnName)}.");
        using var cursor = data.GetRowCursor(label is { } l ? columns.Append(l) : columns);
        var readers = columns.Select((c, k) => BatchScorerSchema.CreateReader(cursor, c, inputs[k], k)).ToArray();
        Func<long>? getLabel = label is { } lc ? QuantizationComparer.LabelGetter(cursor, lc) : null;
        var labels = new List<long>();
        int count = 0;
        while (count < wanted && cursor.MoveNext())
        {
            foreach (var read in readers)
                read(store, count, cursor.Position);
            if (getLabel is not null)
                labels.Add(getLabel() - options.LabelOffset);
            count++;
        }
        if (count == 0)
            throw new InvalidOperationException("The calibration data is empty: the input IDataView returned no rows.");
        return new RowSample
        {
            Inputs = inputs, Data = store.Data, Labels = getLabel is null ? null : [.. labels], Count = count, FixedBatch = fixedBatch, Outputs = outputs,
        };
    }
}

/// <summary>A model's session over the row sample: the float model, or a switchable one (a bool flag per switched node).</summary>
internal sealed class SampleRunner : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();
    private readonly int _switchCount;
    private readonly int _chunk;
    private int[]? _referenceArgMax;
    private readonly string[] _outputs;

    public SampleRunner(MLContext context, OnnxModel model, int switchCount, PostTrainingOptions options, string modelName, RowSample rows, string[]? outputs = null)
    {
        _outputs = outputs ?? rows.Outputs;
        _session = OrtSessionFactory.Create(context, WithOutputs(model, _outputs).ToBytes(), options, modelName).Session;
        _switchCount = switchCount;
        _chunk = options.BatchSize;
        Rows = rows;
    }

    public RowSample Rows { get; }

    /// <summary>The model with the tensors it runs for as graph outputs (a copy when some are intermediate).</summary>
    internal static OnnxModel WithOutputs(OnnxModel model, IEnumerable<string> outputs)
    {
        var graphOutputs = model.Graph.Proto.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var missing = outputs.Where(o => !graphOutputs.Contains(o)).ToList();
        if (missing.Count == 0)
            return model;
        var copy = model.Clone();
        copy.Graph.AddOutputs(missing);
        return copy;
    }

    /// <summary>The float model's outputs on the rows.</summary>
    public float[][]? Reference { get; init; }

    public int Evaluations { get; private set; }

    /// <summary>The shape of each output in the last batch run (its first dimension is that batch's rows).</summary>
    public long[][] OutputShapes { get; private set; } = [];

    /// <summary>Mean row cosine of the worst output against the reference, or the accuracy drop in points.</summary>
    public double Measure(bool[] quantized, bool accuracy)
    {
        float[][] reference = Reference!;
        float[][] result = Run(quantized);
        int rows = Rows.Count;
        if (accuracy)
        {
            _referenceArgMax ??= ArgMaxes(reference[0], rows);
            int[] q = ArgMaxes(result[0], rows);
            int floatCorrect = _referenceArgMax.Where((a, r) => a == Rows.Labels![r]).Count();
            int quantCorrect = q.Where((a, r) => a == Rows.Labels![r]).Count();
            return 100.0 * (floatCorrect - quantCorrect) / rows;
        }
        return WorstMeanCosine(reference, result, rows);
    }

    /// <summary>The mean row cosine of each output against the reference, the worst output.</summary>
    internal static double WorstMeanCosine(float[][] reference, float[][] result, int rows)
    {
        double worst = double.PositiveInfinity;
        for (int o = 0; o < result.Length; o++)
        {
            int size = result[o].Length / rows;
            double sum = 0;
            int counted = 0;
            for (int r = 0; r < rows; r++)
            {
                // Rows the float model itself turns into NaN or infinities (NaN inputs) say nothing about quantization.
                var expected = reference[o].AsSpan(r * size, size);
                if (!AllFinite(expected))
                    continue;
                var row = result[o].AsSpan(r * size, size);
                sum += AllFinite(row) ? Cosine(expected, row) : 0;
                counted++;
            }
            worst = Math.Min(worst, counted == 0 ? 1 : sum / counted);
        }
        return worst;
    }

    internal static bool AllFinite(ReadOnlySpan<float> values)
    {
        foreach (float v in values)
            if (!float.IsFinite(v))
                return false;
        return true;
    }

    internal static int[] ArgMaxes(float[] output, int rows)
    {
        int size = output.Length / rows;
        return [.. Enumerable.Range(0, rows).Select(r => QuantizationComparer.ArgMax(output.AsSpan(r * size, size)))];
    }

    private static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            aa += (double)a[i] * a[i];
            bb += (double)b[i] * b[i];
        }
        return aa == 0 && bb == 0 ? 1 : dot / Math.Sqrt(aa * bb + double.Epsilon);
    }

    /// <summary>Every output over all rows, rows in order (a fixed-batch graph runs padded batches).</summary>
    public float[][] Run(bool[]? quantized)
    {
        Evaluations++;
        var collected = _outputs.Select(_ => new List<float>()).ToArray();
        using var switches = quantized is null ? null : OrtValue.CreateTensorValueFromMemory(quantized, [_switchCount]);
        string[] names = [.. Rows.Inputs.Select(i => i.TensorName), .. switches is null ? Array.Empty<string>() : [FakeQuantGraph.SwitchInput]];
        for (int start = 0; start < Rows.Count; start += _chunk)
        {
            int rows = Math.Min(_chunk, Rows.Count - start);
            int run = Rows.FixedBatch ? _chunk : rows;
            var values = new List<OrtValue>();
            try
            {
                for (int k = 0; k < Rows.Inputs.Length; k++)
                    values.Add(Slice(Rows.Data[k], Rows.Inputs[k], start, rows, run));
                using var results = _session.Run(_runOptions, names, switches is null ? values : [.. values, switches], _outputs);
                OutputShapes = [.. results.Select(r => r.GetTensorTypeAndShape().Shape)];
                for (int o = 0; o < _outputs.Length; o++)
                {
                    var span = results[o].GetTensorDataAsSpan<float>();
                    collected[o].AddRange(span[..(span.Length / run * rows)].ToArray());
                }
            }
            finally
            {
                foreach (var v in values)
                    v.Dispose();
            }
        }
        return [.. collected.Select(c => c.ToArray())];
    }

    /// <summary>Rows [start, start + rows) of an input, padded with its first row up to <paramref name="run"/> rows.</summary>
    private static OrtValue Slice(Array data, InputSpec spec, int start, int rows, int run)
    {
        long[] shape = spec.Batched ? [run, .. spec.RowDims.Select(d => (long)d)] : [.. spec.RowDims.Select(d => (long)d)];
        int size = spec.RowSize;
        return data switch
        {
            float[] f => Value(f, size, start, rows, run, shape),
            long[] l => Value(l, size, start, rows, run, shape),
            int[] i => Value(i, size, start, rows, run, shape),
            bool[] b => Value(b, size, start, rows, run, shape),
            _ => throw new InvalidOperationException($"Input '{spec.TensorName}' has an unsupported type."),
        };
    }

    private static OrtValue Value<T>(T[] data, int size, int start, int rows, int run, long[] shape)
        where T : unmanaged
    {
        if (run == rows)
            return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, data.AsMemory(start * size, rows * size), shape);
        var padded = new T[run * size];
        Array.Copy(data, start * size, padded, 0, rows * size);
        for (int r = rows; r < run; r++)
            Array.Copy(data, start * size, padded, r * size, size);
        return OrtValue.CreateTensorValueFromMemory(padded, shape);
    }

    public void Dispose()
    {
        _runOptions.Dispose();
        _session.Dispose();
    }
}

/// <summary>Rows held in memory, typed as their inputs.</summary>
internal sealed class RowStore(InputSpec[] inputs, int capacity) : IScoringBatch
{
    public Array[] Data { get; } = [.. inputs.Select(i => BatchScorerSchema.CreateInputBuffer(i, capacity))];

    public float[][] InputBuffers => [.. Data.Select(d => d as float[] ?? [])];

    public float[][] OutputBuffers => [];

    public int[] OutputRowSizes => [];

    public void SetRow<T>(int input, int slot, in VBuffer<T> row, long rowIndex)
        where T : unmanaged
    {
        InputSpec spec = inputs[input];
        BatchScorerSchema.CopyRow(spec, row, ((T[])Data[input]).AsSpan(slot * spec.RowSize, spec.RowSize), rowIndex);
    }

    public void Run(int rows)
    {
    }

    public void Dispose()
    {
    }
}

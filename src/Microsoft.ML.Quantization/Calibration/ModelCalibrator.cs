using System.Diagnostics;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>The outcome of one calibration run.</summary>
internal sealed record CalibrationRun(CalibrationTable Table, long RowsObserved, GraphPreparation? Preparation, IReadOnlyList<InputColumn> InputColumns);

/// <summary>A vector column a transformer reads: its name, size and item type (Single unless the input is Int64, Int32 or Bool).</summary>
internal sealed record InputColumn(string Name, int Size, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType ElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float);

/// <summary>
/// Runs a float model over representative rows in one streaming pass and feeds every planned tensor to its
/// <see cref="TensorObserver"/>: weights once, graph inputs from the staged rows, intermediate tensors as extra
/// graph outputs of each batch. Memory is bounded by the observers (histograms) and one batch of staging.
/// </summary>
internal static class ModelCalibrator
{
    /// <summary>Staging budget for one batch of observed activations; the batch shrinks to fit it.</summary>
    internal const long StagingBudgetBytes = 256L << 20;

    /// <summary>Calibrates the model <paramref name="options"/> names.</summary>
    public static CalibrationRun Run(MLContext context, CalibrationEstimatorOptions options, IDataView data) => Run(context, options, data, null);

    /// <summary>
    /// Calibrates <paramref name="prepared"/>, a model a caller has read and prepared already (PostTraining's graph; not
    /// changed here), or, when it is null, the model <paramref name="options"/> names (prepared when <see cref="CalibrationEstimatorOptions.PrepareGraph"/>).
    /// <paramref name="observers"/>, when given, receives each observed activation's observer by tensor name, so other
    /// methods' ranges can be computed from the same pass.
    /// </summary>
    public static CalibrationRun Run(MLContext context, CalibrationEstimatorOptions options, IDataView data, OnnxModel? prepared,
        IDictionary<string, TensorObserver>? observers = null)
    {
        options.Validate();
        var clock = Stopwatch.StartNew();
        string modelName = options.ModelName();
        OnnxModel model = prepared ?? OnnxModelSource.Load(options.ModelPath, options.ModelBytes);
        GraphPreparation? preparation = prepared is null && options.PrepareGraph ? OnnxRewrites.PrepareForQuantization(model) : null;
        if (preparation is not null)
            OnnxRewrites.AnnotateElementTypes(model);
        CalibrationPlan plan = CalibrationPlan.Create(model, options);
        // A model computing inside control flow (If/Loop/Scan branches) may have nothing to observe here; its branches'
        // weights are quantized without calibration.
        if (plan.Activations.Count == 0 && plan.Weights.Count == 0 && !model.Graph.Nodes.Any(n => n.Proto.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)))
            throw new InvalidOperationException($"Model '{modelName}' has no float tensors to calibrate for the op types {string.Join(", ", options.OpTypes)}.");

        // mlContext.Log messages and ML.NET's progress channel (rows observed of rows planned), besides options.Progress.
        using var progress = new OperationProgress(context, "QatMl.Calibrate", ["rows"]);
        IChannel channel = progress.Channel;
        channel.Info(MessageSensitivity.None, "{0}", $"Calibrating '{modelName}': {plan.Activations.Count} activations ({options.Activations.Method}; {plan.Shared.Count} more share their input's range), " +
            $"{plan.Weights.Count} weights ({options.Weights.Method}{(options.WeightsPerChannel ? ", per channel" : "")}), up to {options.SampleCount} rows" +
            (preparation is null ? "." : $"; graph prepared: {preparation.BatchNormsFolded} BatchNormalization folded, {preparation.IdentitiesRemoved} Identity/Dropout removed, {preparation.ConstantsFolded} constants folded."));

        var entries = new Dictionary<string, CalibrationTableEntry>(StringComparer.Ordinal);
        var unusable = new List<string>();
        foreach (PlannedWeight w in plan.Weights)
        {
            if (CalibrateWeight(w, out string? why) is { } entry)
                entries[w.Name] = entry;
            else
                unusable.Add(why!);
        }

        long rows = 0;
        var inputColumns = new List<InputColumn>();
        if (plan.Activations.Count > 0)
            rows = ObserveActivations(context, options, model, modelName, plan, data, entries, progress, clock, inputColumns, observers);

        foreach (SharedActivation shared in plan.Shared)
            if (entries.TryGetValue(shared.Source, out var source))
                entries[shared.Name] = source.SharedAs(shared.Name);
        // Table order: the graph's topological order of the plan (weights and activations interleaved as planned).
        var table = new CalibrationTable();
        foreach (string name in plan.Order)
            if (entries.TryGetValue(name, out var entry))
                table.Add(entry);
        foreach (string why in unusable)
            channel.Warning(MessageSensitivity.None, "{0}", $"{why}; it has no entry, and nodes reading it stay float.");
        channel.Info(MessageSensitivity.None, "{0}", $"Calibrated {table.Count} tensors over {rows} rows in {clock.Elapsed.TotalSeconds:F2} s.");
        return new CalibrationRun(table, rows, preparation, inputColumns);
    }

    /// <summary>The weight's entry, or null with the reason when its range has no float32 scale (a -FLT_MAX mask constant).</summary>
    private static CalibrationTableEntry? CalibrateWeight(PlannedWeight w, out string? unusable)
    {
        unusable = null;
        try
        {
            return CalibrateWeight(w);
        }
        catch (ArgumentException e)
        {
            unusable = $"Weight '{w.Name}' cannot be calibrated: {e.Message}";
            return null;
        }
    }

    private static CalibrationTableEntry CalibrateWeight(PlannedWeight w)
    {
        float[] values = w.Tensor.ToFloatArray();
        if (w.Axis is int axis)
        {
            long[] dims = w.Tensor.Dims;
            int channels = checked((int)dims[axis]);
            int inner = checked((int)dims.Skip(axis + 1).Aggregate(1L, (a, b) => a * b));
            var observer = new TensorObserver(w.Options, channels);
            if (values.Length > 0)
                observer.Observe(values, channels, inner);
            return ToEntry(observer, w.Name, TensorKind.Weight, axis);
        }
        var perTensor = new TensorObserver(w.Options);
        perTensor.Observe(values);
        return ToEntry(perTensor, w.Name, TensorKind.Weight, null);
    }

    /// <summary>The observer's entry; a tensor with nothing finite to calibrate is an error naming it (and its column, for graph inputs).</summary>
    private static CalibrationTableEntry ToEntry(TensorObserver observer, string name, TensorKind kind, int? axis, string? column = null)
    {
        try
        {
            return observer.ToEntry(name, kind, axis);
        }
        catch (InvalidOperationException e)
        {
            string what = column is not null ? $"input '{name}' (column '{column}')" : $"{(kind == TensorKind.Weight ? "weight" : "activation")} '{name}'";
            throw new InvalidOperationException($"Cannot calibrate {what}: {e.Message}", e);
        }
    }

    private static long ObserveActivations(MLContext context, CalibrationEstimatorOptions options, OnnxModel model, string modelName,
        CalibrationPlan plan, IDataView data, Dictionary<string, CalibrationTableEntry> entries, OperationProgress progress, Stopwatch clock,
        List<InputColumn> inputColumns, IDictionary<string, TensorObserver>? kept)
    {
        IChannel channel = progress.Channel;
        OnnxModelScoringOptions scoring = options.ToScoringOptions();
        var observed = plan.Activations.Where(a => !a.IsGraphInput).ToList();
        foreach (var a in observed)
            scoring.Outputs.Add(new OnnxColumnBinding(a.Name, a.Name));
        byte[] runnable = OnnxModelSource.PrepareForScoring(model, observed.Select(a => a.Name), options.BatchSize, modelName, options.InputShapes).ToBytes();

        OrtSessionFactory.Result session = OrtSessionFactory.Create(context, runnable, scoring, modelName);
        using var scorer = CreateScorer(session, modelName, scoring);
        scorer.ValidateInputSchema(data.Schema, "input", options.InputsOptionName);
        inputColumns.AddRange(scorer.Inputs.Select(i => new InputColumn(i.ColumnName, i.RowSize, i.ElementType)));

        var inputObservers = new TensorObserver?[scorer.Inputs.Length];
        for (int k = 0; k < scorer.Inputs.Length; k++)
            if (plan.Activations.FirstOrDefault(a => a.IsGraphInput && a.Name == scorer.Inputs[k].TensorName) is { } plannedInput)
                inputObservers[k] = new TensorObserver(plannedInput.Options);
        var outputObservers = observed.Select(a => new TensorObserver(a.Options)).ToArray();

        long? known = data.GetRowCount();
        long planned = known is long n ? Math.Min(n, options.SampleCount) : options.SampleCount;
        var columns = scorer.Inputs.Select(i => data.Schema[i.ColumnName]).ToArray();
        using DataViewRowCursor cursor = data.GetRowCursor(columns);
        var readers = columns.Select((c, k) => BatchScorerSchema.CreateReader(cursor, c, scorer.Inputs[k], k)).ToArray();
        var all = Enumerable.Repeat(true, scorer.Outputs.Length).ToArray();

        // The first batch holds two rows: it measures the per-row size of every observed tensor, which sets the batch
        // size, and tells batch-major tensors from those that do not grow with the batch (broadcast position embeddings).
        OrtBatchScorer.Batch batch = new(scorer, all, capacity: scorer.Inputs.All(i => i.Batched) ? (int)Math.Min(2, options.SampleCount) : 1);
        long rows = 0;
        var modelTime = new Stopwatch();
        var observeTime = new Stopwatch();
        try
        {
            while (rows < options.SampleCount)
            {
                options.CancellationToken.ThrowIfCancellationRequested();
                int want = (int)Math.Min(batch.Capacity, options.SampleCount - rows);
                int filled = 0;
                while (filled < want && cursor.MoveNext())
                {
                    foreach (InputReader read in readers)
                        read(batch, filled, cursor.Position);
                    filled++;
                }
                if (filled == 0)
                    break;
                modelTime.Start();
                batch.Run(filled);
                modelTime.Stop();
                observeTime.Start();
                for (int k = 0; k < inputObservers.Length; k++)
                    inputObservers[k]?.Observe(batch.InputBuffers[k].AsSpan(0, filled * scorer.Inputs[k].RowSize));
                for (int j = 0; j < outputObservers.Length; j++)
                    outputObservers[j].Observe(batch.OutputBuffers[j].AsSpan(0, batch.OutputCounts[j]));
                observeTime.Stop();
                rows += filled;
                progress.ReportSteps(rows, Math.Max(planned, rows), (done, all) => $"Calibrating '{modelName}': {done} of {all} rows, {clock.Elapsed.TotalSeconds:F1} s.");
                options.Progress?.Report(new CalibrationProgress(rows, Math.Max(planned, rows), clock.Elapsed));
                if (filled < want)
                    break;
                if (rows == filled && !scorer.FixedBatch && options.BatchSize > 1)
                {
                    int size = ChooseBatchSize(options.BatchSize, scorer, batch);
                    int[]?[] learned = batch.RunRowDims;
                    batch.Dispose();
                    batch = new OrtBatchScorer.Batch(scorer, all, size, learned);
                    channel.Info(MessageSensitivity.None, "{0}", $"Observed tensors take {RowBytes(scorer, batch) / 1024.0:F0} KiB per row: {size} rows per batch.");
                }
            }
        }
        finally
        {
            batch.Dispose();
        }
        if (rows == 0)
            throw new InvalidOperationException("The calibration data is empty: the input IDataView returned no rows.");
        progress.Checkpoint();
        channel.Info(MessageSensitivity.None, "{0}", $"Model runs took {modelTime.Elapsed.TotalSeconds:F3} s, observers {observeTime.Elapsed.TotalSeconds:F3} s.");
        var finalize = Stopwatch.StartNew();

        for (int k = 0; k < inputObservers.Length; k++)
            if (inputObservers[k] is { } o)
            {
                entries[scorer.Inputs[k].TensorName] = ToEntry(o, scorer.Inputs[k].TensorName, TensorKind.Activation, null, scorer.Inputs[k].ColumnName);
                kept?.Add(scorer.Inputs[k].TensorName, o);
            }
        for (int j = 0; j < outputObservers.Length; j++)
        {
            try
            {
                entries[observed[j].Name] = ToEntry(outputObservers[j], observed[j].Name, TensorKind.Activation, null);
                kept?.Add(observed[j].Name, outputObservers[j]);
            }
            catch (ArgumentException e)
            {
                channel.Warning(MessageSensitivity.None, "{0}", $"Activation '{observed[j].Name}' cannot be calibrated: {e.Message}; it has no entry, and nodes reading it stay float.");
            }
        }

        channel.Info(MessageSensitivity.None, "{0}", $"Ranges computed in {finalize.Elapsed.TotalSeconds:F3} s.");
        foreach (var e in entries.Values.Where(e => e.NonFiniteCount > 0))
            channel.Warning(MessageSensitivity.None, "{0}",
                $"Tensor '{e.TensorName}': {e.NonFiniteCount} NaN or infinite values were seen and left out of its range ({e.Histogram.Count} finite values).");
        return rows;
    }

    private static OrtBatchScorer CreateScorer(OrtSessionFactory.Result session, string modelName, OnnxModelScoringOptions scoring)
    {
        try
        {
            var (inputs, outputs, fixedBatch) = OrtBatchScorer.Describe(session.Session, modelName, scoring.Inputs, scoring.Outputs, scoring.InputShapes, scoring.BatchSize);
            return new OrtBatchScorer(session.Session, session.Provider, inputs, outputs, scoring.BatchSize, fixedBatch);
        }
        catch
        {
            session.Session.Dispose();
            throw;
        }
    }

    private static long RowBytes(OrtBatchScorer scorer, OrtBatchScorer.Batch batch)
        => scorer.Inputs.Sum(i => (long)i.RowSize * i.ElementBytes) + 4L * batch.OutputRowSizes.Sum(s => (long)Math.Max(s, 0));

    private static int ChooseBatchSize(int requested, OrtBatchScorer scorer, OrtBatchScorer.Batch probe)
    {
        long perRow = Math.Max(1, RowBytes(scorer, probe));
        return (int)Math.Clamp(StagingBudgetBytes / perRow, 1, requested);
    }
}

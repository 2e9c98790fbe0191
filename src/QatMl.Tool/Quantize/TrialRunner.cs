using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;

namespace QatMl.Tool.Quantize;

/// <summary>What the budget measures: accuracy (labels), top-1 agreement with the float model, or the outputs' cosine.</summary>
internal enum QualityMetric
{
    Accuracy,
    Agreement,
    Cosine,
}

/// <summary>Session settings every trial shares.</summary>
internal sealed record RunSettings(QuantizedBackend Backend, int BatchSize, int Threads, double? Budget, QualityMetric Metric)
{
    public string MetricName => Metric switch
    {
        QualityMetric.Accuracy => "accuracy",
        QualityMetric.Agreement => "top-1 agreement",
        _ => "output cosine",
    };
}

/// <summary>One quantized candidate and how it compares with the float model.</summary>
internal sealed class Trial(Scheme scheme, QuantizedModelTransformer model, QuantizationComparison comparison, LatencyResult latency, QualityMetric metric, double? budget) : IDisposable
{
    public Scheme Scheme => scheme;

    public QuantizedModelTransformer Model => model;

    public QuantizationComparison Comparison => comparison;

    public LatencyResult Latency => latency;

    public long Bytes => comparison.QuantizedModelBytes;

    /// <summary>The metric's value (0..1): accuracy, top-1 agreement with the float model, or mean output cosine.</summary>
    public double Quality => metric switch
    {
        QualityMetric.Accuracy => comparison.QuantizedAccuracy ?? throw new InvalidOperationException("No accuracy without labels."),
        QualityMetric.Agreement => comparison.Top1Agreement,
        _ => comparison.MeanCosineSimilarity,
    };

    /// <summary>Percentage points lost: accuracy drop, 100 - agreement%, or 100 * (1 - cosine).</summary>
    public double Loss => metric == QualityMetric.Accuracy ? comparison.AccuracyDrop!.Value : (1 - Quality) * 100;

    /// <summary>Within the budget (a loss equal to it, up to float rounding, is within).</summary>
    public bool? MeetsBudget => budget is { } b ? Loss <= b + 1e-9 : null;

    public void Dispose() => model.Dispose();

    public override string ToString()
    {
        var c = CultureInfo.InvariantCulture;
        string quality = comparison.QuantizedAccuracy is { } a
            ? string.Create(c, $"accuracy {a:P2} (drop {comparison.AccuracyDrop:F2} points), agreement {comparison.Top1Agreement:P2}")
            : string.Create(c, $"agreement {comparison.Top1Agreement:P2}");
        string budget = MeetsBudget is { } ok ? ok ? ", within budget" : ", over budget" : "";
        return string.Create(c, $"{scheme.Name}: {quality}, cosine {comparison.MeanCosineSimilarity:F4}, {Bytes / 1024.0:F0} KiB, {latency.MillisecondsPerRow:F3} ms/row ({latency.Backend}){budget}");
    }
}

/// <summary>
/// Calibrates (once per method, through <c>mlContext.Quantization.Calibrate</c>), quantizes (<c>PostTraining</c> with that
/// table), compares (<c>Compare</c>) and times each scheme on the rows it was given, with a progress step for each.
/// </summary>
internal sealed class TrialRunner(MLContext context, ModelInfo model, IDataView calibration, int calibrationRows, IDataView evaluation, int evaluationRows,
    string? labelColumn, RunSettings settings, ProgressBoard board, CancellationToken cancel)
{
    private readonly Dictionary<CalibrationMethod, CalibrationTable> _tables = [];

    public string? LabelColumn => labelColumn;

    public MLContext Context => context;

    public IDataView Calibration => calibration;

    public int CalibrationRows => calibrationRows;

    public IDataView EvaluationData => evaluation;

    public int EvaluationRows => evaluationRows;

    public CancellationToken Cancel => cancel;

    public RunSettings Settings => settings;

    /// <summary>The calibration table of <paramref name="method"/>, computed on first use.</summary>
    public CalibrationTable Table(CalibrationMethod method)
    {
        if (_tables.TryGetValue(method, out var table))
            return table;
        var step = board.Add($"calibration ({Method(method)})", calibrationRows);
        var options = new CalibrationEstimatorOptions
        {
            ModelPath = model.Path,
            SampleCount = calibrationRows,
            Activations = new CalibrationOptions { Method = method },
            BatchSize = settings.BatchSize,
            IntraOpNumThreads = settings.Threads,
            Progress = new SyncProgress<CalibrationProgress>(p => step.Report(p.RowsObserved, p.RowsPlanned)),
            CancellationToken = cancel,
        };
        // The tensors PostTraining may quantize (its default op types) are calibrated too, so the table serves every scheme.
        foreach (string op in PostTrainingOptions.DefaultOpTypes)
            options.OpTypes.Add(op);
        table = context.Quantization.Calibrate(options).Fit(calibration).Table;
        step.Complete($"{table.Count} tensors");
        _tables[method] = table;
        return table;
    }

    public Trial Run(Scheme scheme)
    {
        CalibrationTable table = Table(scheme.Method);
        PostTrainingOptions options = Configure(scheme.ToOptions(model.Path, table), settings.Backend);
        return Evaluate(scheme, context.Quantization.PostTraining(options).Fit(calibration));
    }

    /// <summary>Compares and times a quantized model (the trial owns it from here).</summary>
    public Trial Evaluate(Scheme scheme, QuantizedModelTransformer quantized)
    {
        try
        {
            cancel.ThrowIfCancellationRequested();
            var step = board.Add($"scoring {scheme.Name} vs float", 2.0 * evaluationRows);
            var counted = new CountingDataView(evaluation, n => step.Report(n), cancel);
            QuantizationComparison comparison = context.Quantization.Compare(model.Path, quantized, counted, new ComparisonOptions
            {
                LabelColumnName = labelColumn,
                MaxAccuracyDrop = settings.Budget,
                PerLayer = true,
                MeasureLatency = false,
            });
            step.Complete();
            LatencyResult latency = Time(quantized, quantized.Backend == QuantizedBackend.Native ? "QatMl native" : "ONNX Runtime");
            return new Trial(scheme, quantized, comparison, latency, settings.Metric, settings.Budget);
        }
        catch
        {
            quantized.Dispose();
            throw;
        }
    }

    /// <summary>The same scheme and table on another backend (for the per-backend latency); null when it falls back.</summary>
    public QuantizedModelTransformer? OnBackend(Trial trial, QuantizedBackend backend)
    {
        var options = Configure(trial.Scheme.ToOptions(model.Path, Table(trial.Scheme.Method)), backend);
        options.AllowBackendFallback = false;
        try
        {
            return context.Quantization.PostTraining(options).Fit(calibration);
        }
        catch (NotSupportedException)
        {
            return null;
        }
    }

    /// <summary>Times <paramref name="transformer"/> on evaluation rows: enough of them for about a second per pass, best of three.</summary>
    public LatencyResult Time(ITransformer transformer, string backend)
    {
        string output = model.Output.Name;
        int probeRows = Math.Min(evaluationRows, 16);
        TimeSpan probe = Latency.BestPass(transformer, context.Data.TakeRows(evaluation, probeRows), output, 1, cancel);
        double perRow = probe.TotalSeconds / probeRows;
        int rows = (int)Math.Clamp(1.0 / Math.Max(perRow, 1e-6), probeRows, Math.Min(evaluationRows, 512));
        TimeSpan best = Latency.BestPass(transformer, context.Data.TakeRows(evaluation, rows), output, 3, cancel, TimeSpan.FromSeconds(6));
        return new LatencyResult(backend, rows, settings.BatchSize, settings.Threads, best);
    }

    /// <summary>The float model scored by ONNX Runtime with the same batch and threads.</summary>
    public ITransformer FloatModel()
    {
        var options = new OnnxModelScoringOptions { ModelPath = model.Path, BatchSize = settings.BatchSize, IntraOpNumThreads = settings.Threads };
        return context.Quantization.ScoreOnnxModel(options).Fit(evaluation);
    }

    private PostTrainingOptions Configure(PostTrainingOptions options, QuantizedBackend backend)
    {
        options.Backend = backend;
        options.BatchSize = settings.BatchSize;
        options.IntraOpNumThreads = settings.Threads;
        options.CancellationToken = cancel;
        return options;
    }

    internal static string Method(CalibrationMethod method) => method switch
    {
        CalibrationMethod.MinMax => "MinMax",
        CalibrationMethod.Percentile => "Percentile 99.99",
        _ => method.ToString(),
    };
}

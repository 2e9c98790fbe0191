using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Auto;

/// <summary>What <see cref="AutoQuantizationExperiment"/> minimises among the configurations that meet the constraint.</summary>
public enum AutoQuantizationObjective
{
    /// <summary>The smallest model (bytes of the quantized ONNX model).</summary>
    Size = 0,

    /// <summary>
    /// The lowest latency per row on the backend and thread count of <see cref="AutoQuantizationOptions.PostTraining"/> (Backend,
    /// IntraOpNumThreads): each accepted trial runs one batch of validation rows through that backend, best of a few runs after a warm-up.
    /// </summary>
    Latency = 1,

    /// <summary>The best metric (<see cref="AutoQuantizationOptions.Metric"/>).</summary>
    Accuracy = 2,
}

/// <summary>
/// Options of <c>mlContext.Quantization.Auto</c>: the float model, how a configuration is scored on the validation rows,
/// the objective and the constraint, and the experiment's budget.
/// </summary>
public sealed class AutoQuantizationOptions
{
    /// <summary>
    /// The float model and how it runs: ModelPath or ModelBytes, Inputs, InputShapes, BatchSize, IntraOpNumThreads, SampleCount
    /// (calibration rows), OpTypes, ExcludedNodes, Backend of the result. What the experiment chooses (Precision, the
    /// first/last layer and per-node precisions, CalibrationMethod, AdaRound, the sensitivity analysis) is set per trial.
    /// </summary>
    public PostTrainingOptions PostTraining { get; set; } = new();

    /// <summary>
    /// How a trial is scored: <see cref="AutoQuantizationMetric.MulticlassAccuracy"/>, <see cref="AutoQuantizationMetric.AreaUnderRocCurve"/>
    /// and <see cref="AutoQuantizationMetric.RSquared"/> against <see cref="LabelColumnName"/> (ML.NET's evaluators), held to
    /// <see cref="MaxAccuracyDrop"/>; <see cref="AutoQuantizationMetric.OutputCosine"/> and <see cref="AutoQuantizationMetric.OutputSqnr"/>
    /// against the float model's outputs, held to <see cref="MinOutputCosine"/> and <see cref="MinOutputSqnr"/>. Null (default):
    /// multiclass accuracy when <see cref="LabelColumnName"/> is set, the output cosine otherwise.
    /// </summary>
    public AutoQuantizationMetric? Metric { get; set; }

    /// <summary>
    /// The label column of the validation rows for the label metrics: a class index (UInt32, Int32, Int64, Single or a key) for
    /// multiclass accuracy, Boolean for AUC, Single for R-squared (ML.NET's label types). Null (default): no label; the output
    /// metrics only. The output metrics ignore it.
    /// </summary>
    public string? LabelColumnName { get; set; }

    /// <summary>Multiclass accuracy: key-typed labels count from 1 in ML.NET; set to 1 to compare argmax with label - 1. Default 0.</summary>
    public int LabelOffset { get; set; }

    /// <summary>
    /// The model output (a float graph output, or one of <see cref="PostTrainingOptions.Outputs"/>) that holds the score for the label
    /// metrics: the class scores for multiclass accuracy, the score for AUC, the prediction for R-squared. Null (default): the first output.
    /// </summary>
    public string? ScoreOutputName { get; set; }

    /// <summary>
    /// AUC and R-squared: the value of the score output's row that is the score (e.g. the logit of the positive class of a multiclass
    /// net used one-vs-rest). Null (default): the score output must have one value per row.
    /// </summary>
    public int? ScoreIndex { get; set; }

    /// <summary>
    /// The largest loss of the label metric against the float model on the validation rows, in the metric's unit: percentage points
    /// for multiclass accuracy (0.5 is half a point), a fraction for AUC and R-squared (0.005 is half a point). Default 0.5.
    /// </summary>
    public double MaxAccuracyDrop { get; set; } = 0.5;

    /// <summary>Output cosine: the least mean cosine similarity of the outputs (the worst output) on the validation rows. Default 0.99.</summary>
    public double MinOutputCosine { get; set; } = 0.99;

    /// <summary>Output SQNR: the least signal-to-quantization-noise ratio of the outputs (the worst output), in dB. Default 20.</summary>
    public double MinOutputSqnr { get; set; } = 20;

    /// <summary>What to minimise among the configurations that meet the constraint. Default <see cref="AutoQuantizationObjective.Size"/>.</summary>
    public AutoQuantizationObjective Objective { get; set; } = AutoQuantizationObjective.Size;

    /// <summary>Trials at most (each writes and scores one quantized model). Default 20.</summary>
    public int MaxTrials { get; set; } = 20;

    /// <summary>Wall-clock budget in seconds; no trial starts after it (the preparation always runs). 0 (default): none.</summary>
    public double TimeBudgetSeconds { get; set; }

    /// <summary>Validation rows scored per trial (the first ones, held in memory with the float model's outputs). Default 2000.</summary>
    public int ValidationRowCount { get; set; } = 2000;

    /// <summary>The first and last Conv/Gemm/MatMul start with 8-bit weights when the search tries 4-bit weights (local refinement may still lower them). Default true.</summary>
    public bool KeepFirstAndLastLayersAt8Bits { get; set; } = true;

    /// <summary>
    /// Whether the search may try AdaRound on its best 4-bit configuration that misses the constraint (TorchSharp-cpu in the app,
    /// as for <see cref="PostTrainingOptions.AdaRound"/>; a trial whose AdaRound cannot run is recorded as rejected). Default false:
    /// opt-in for its time (minutes per trial on ResNet18-sized models; its memory is bounded, about 2.3 GB there, docs/auto.md).
    /// </summary>
    public bool AdaRound { get; set; }

    /// <summary>
    /// Quantization-aware training as the last resort: when no post-training trial meets the constraint, the last trial
    /// fine-tunes the closest miss's scheme with <c>AwareTraining</c> on the training rows for at most this many epochs (fewer
    /// when the time budget ends first), and is scored like every other trial. It runs only when the training rows have the
    /// class label column <see cref="AwareTrainingLabelColumnName"/> (TorchSharp-cpu in the app, as for AwareTraining); while it
    /// can run, the post-training search keeps one of <see cref="MaxTrials"/> for it until a trial is accepted. 0 turns it off.
    /// Default 2 (AwareTraining's default).
    /// </summary>
    public int AwareTrainingEpochs { get; set; } = 2;

    /// <summary>
    /// The class label column of the training rows that quantization-aware training learns from. Null (default):
    /// <see cref="LabelColumnName"/> when the metric is multiclass accuracy, otherwise none (no training).
    /// </summary>
    public string? AwareTrainingLabelColumnName { get; set; }

    /// <summary>Receives every trial as it ends. Default null.</summary>
    public IProgress<QuantizationTrial>? Progress { get; set; }

    /// <summary>Cancels the experiment between trials (and inside calibration). Default none.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>The metric the experiment scores by (<see cref="Metric"/>, or its default).</summary>
    internal AutoQuantizationMetric EffectiveMetric => Metric ?? (LabelColumnName is null ? AutoQuantizationMetric.OutputCosine : AutoQuantizationMetric.MulticlassAccuracy);

    /// <summary>The class label column quantization-aware training would learn from, or null when it cannot run.</summary>
    internal string? TrainingLabelColumn => AwareTrainingEpochs == 0 ? null
        : AwareTrainingLabelColumnName ?? (EffectiveMetric == AutoQuantizationMetric.MulticlassAccuracy ? LabelColumnName : null);

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(PostTraining, nameof(PostTraining));
        if (MaxTrials < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxTrials), MaxTrials, "MaxTrials must be at least 1.");
        if (!(TimeBudgetSeconds >= 0))
            throw new ArgumentOutOfRangeException(nameof(TimeBudgetSeconds), TimeBudgetSeconds, "TimeBudgetSeconds must be 0 (none) or positive.");
        if (!(MaxAccuracyDrop >= 0))
            throw new ArgumentOutOfRangeException(nameof(MaxAccuracyDrop), MaxAccuracyDrop, "MaxAccuracyDrop must be at least 0 points.");
        if (!(MinOutputCosine is >= -1 and <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinOutputCosine), MinOutputCosine, "MinOutputCosine must be in [-1, 1].");
        if (ValidationRowCount < 1)
            throw new ArgumentOutOfRangeException(nameof(ValidationRowCount), ValidationRowCount, "ValidationRowCount must be at least 1.");
        if (!double.IsFinite(MinOutputSqnr))
            throw new ArgumentOutOfRangeException(nameof(MinOutputSqnr), MinOutputSqnr, "MinOutputSqnr must be a finite number of dB.");
        if (Metric is { } metric && !Enum.IsDefined(metric))
            throw new ArgumentOutOfRangeException(nameof(Metric), metric, "Unknown metric.");
        if (EffectiveMetric is AutoQuantizationMetric.MulticlassAccuracy or AutoQuantizationMetric.AreaUnderRocCurve or AutoQuantizationMetric.RSquared
            && string.IsNullOrEmpty(LabelColumnName))
            throw new ArgumentException($"Metric {EffectiveMetric} is scored against a label: set {nameof(LabelColumnName)}.", nameof(LabelColumnName));
        if (AwareTrainingEpochs < 0)
            throw new ArgumentOutOfRangeException(nameof(AwareTrainingEpochs), AwareTrainingEpochs, "AwareTrainingEpochs must be 0 (no training) or positive.");
        if (ScoreIndex is < 0)
            throw new ArgumentOutOfRangeException(nameof(ScoreIndex), ScoreIndex, "ScoreIndex must be at least 0.");
        if (!Enum.IsDefined(Objective))
            throw new ArgumentOutOfRangeException(nameof(Objective), Objective, "Unknown objective.");
        PostTraining.Validate();
    }
}

/// <summary>One configuration the experiment tried and what it measured on the validation rows.</summary>
/// <param name="Index">Its place in the experiment, from 1.</param>
/// <param name="Configuration">The configuration in words (precision, calibration, 8-bit, 16-bit and float nodes, AdaRound).</param>
/// <param name="Metric">The metric of <see cref="AutoQuantizationOptions.Metric"/>: accuracy in percent, AUC or R-squared (fractions), mean output cosine or output SQNR in dB; NaN when the trial failed.</param>
/// <param name="SizeBytes">Bytes of the quantized ONNX model.</param>
/// <param name="LatencyMilliseconds">
/// Milliseconds per row of one batch on the result's backend and thread count (best of a few runs after a warm-up); measured for
/// accepted trials only (NaN for the others).
/// </param>
/// <param name="Time">The trial's wall time: writing, any AdaRound, the session, the scoring pass and (accepted trials) the latency runs.</param>
/// <param name="Accepted">Whether it meets the constraint.</param>
/// <param name="Reason">Why it was not accepted (null when accepted).</param>
public sealed record QuantizationTrial(int Index, string Configuration, double Metric, long SizeBytes, double LatencyMilliseconds, TimeSpan Time, bool Accepted, string? Reason)
{
    /// <summary>Whether this is one of the plain schemes a user would try first (INT8, W4A8, W4A4 with MinMax), tried before the search.</summary>
    public bool FixedScheme { get; init; }

    /// <summary>The activation calibration method of the trial.</summary>
    public Calibration.CalibrationMethod CalibrationMethod { get; init; }

    /// <summary>The precision of every quantized node without an entry in <see cref="NodePrecision"/>.</summary>
    public QuantizationPrecision Precision { get; init; } = QuantizationPrecision.Int8;

    /// <summary>The nodes given another precision (8-bit weights, 16-bit activations).</summary>
    public IReadOnlyDictionary<string, QuantizationPrecision> NodePrecision { get; init; } = new Dictionary<string, QuantizationPrecision>();

    /// <summary>The nodes the trial left float.</summary>
    public IReadOnlyList<string> FloatNodes { get; init; } = [];

    /// <summary>Whether the trial learned its 4-bit weights' rounding with AdaRound.</summary>
    public bool AdaRound { get; init; }

    /// <summary>
    /// Epochs of quantization-aware training the trial ran (0: a post-training trial). Such a trial's model has trained weights
    /// and ranges; <see cref="ApplyTo"/> sets the post-training options of its scheme only.
    /// </summary>
    public int AwareTrainingEpochs { get; init; }

    /// <summary>The SmoothQuant alpha the trial smoothed its MatMul/Gemm inputs with (null: not smoothed).</summary>
    public double? SmoothQuantAlpha { get; init; }

    /// <summary>
    /// Sets <paramref name="options"/> to this trial's configuration (precisions, calibration method, float nodes, AdaRound,
    /// SmoothQuant with the trial's alpha (PostTraining still compares it with no smoothing); the sensitivity analysis off), so PostTraining writes the same kind of model, e.g. on another backend.
    /// </summary>
    public void ApplyTo(PostTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Precision = Precision;
        options.FirstLayerPrecision = options.LastLayerPrecision = null;
        options.CalibrationMethod = CalibrationMethod;
        options.NodePrecision.Clear();
        foreach (var (node, precision) in NodePrecision)
            options.NodePrecision[node] = precision;
        foreach (string node in FloatNodes)
            options.ExcludedNodes.Add(node);
        options.AdaRound = AdaRound;
        options.SmoothQuant = SmoothQuantAlpha is not null;
        if (SmoothQuantAlpha is { } alpha)
        {
            options.SmoothQuantAlphas.Clear();
            options.SmoothQuantAlphas.Add(alpha);
        }
        options.MinOutputCosine = 0;
        options.MaxAccuracyDrop = null;
    }

    /// <inheritdoc/>
    public override string ToString()
        => $"#{Index} {Configuration}: metric {Metric:0.#####}, {SizeBytes / 1024.0:F0} KiB, {(double.IsNaN(LatencyMilliseconds) ? "-" : LatencyMilliseconds.ToString("F3", System.Globalization.CultureInfo.InvariantCulture))} ms/row, {Time.TotalSeconds:F1} s, {(Accepted ? "accepted" : "rejected: " + Reason)}";
}

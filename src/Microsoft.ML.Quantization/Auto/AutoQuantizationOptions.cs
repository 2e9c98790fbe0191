using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Auto;

/// <summary>What <see cref="AutoQuantizationExperiment"/> minimises among the configurations that meet the constraint.</summary>
public enum AutoQuantizationObjective
{
    /// <summary>The smallest model (bytes of the quantized ONNX model).</summary>
    Size = 0,

    /// <summary>The lowest latency per row, measured on the validation pass with ONNX Runtime and the session settings of <see cref="AutoQuantizationOptions.PostTraining"/>.</summary>
    Latency = 1,

    /// <summary>The best metric (accuracy, or output cosine without a label).</summary>
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
    /// The label column (UInt32, Int32, Int64, Single or a key) of a multiclass model whose first output holds the class
    /// scores: trials are scored by accuracy (argmax against the label) and held to <see cref="MaxAccuracyDrop"/>. Null
    /// (default): trials are scored by the output cosine against the float model and held to <see cref="MinOutputCosine"/>.
    /// </summary>
    public string? LabelColumnName { get; set; }

    /// <summary>Key-typed labels count from 1 in ML.NET; set to 1 to compare argmax with label - 1. Default 0.</summary>
    public int LabelOffset { get; set; }

    /// <summary>With a label: the largest loss of accuracy against the float model on the validation rows, in percentage points. Default 0.5.</summary>
    public double MaxAccuracyDrop { get; set; } = 0.5;

    /// <summary>Without a label: the least mean cosine similarity of the outputs (the worst output) on the validation rows. Default 0.99.</summary>
    public double MinOutputCosine { get; set; } = 0.99;

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
    /// opt-in while AdaRound's memory on large layers is unbounded (9 GB and more on ResNet18, docs/auto.md).
    /// </summary>
    public bool AdaRound { get; set; }

    /// <summary>Receives every trial as it ends. Default null.</summary>
    public IProgress<QuantizationTrial>? Progress { get; set; }

    /// <summary>Cancels the experiment between trials (and inside calibration). Default none.</summary>
    public CancellationToken CancellationToken { get; set; }

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
        if (!Enum.IsDefined(Objective))
            throw new ArgumentOutOfRangeException(nameof(Objective), Objective, "Unknown objective.");
        PostTraining.Validate();
    }
}

/// <summary>One configuration the experiment tried and what it measured on the validation rows.</summary>
/// <param name="Index">Its place in the experiment, from 1.</param>
/// <param name="Configuration">The configuration in words (precision, calibration, 8-bit, 16-bit and float nodes, AdaRound).</param>
/// <param name="Metric">Accuracy in percent (with a label) or mean output cosine; NaN when the trial failed.</param>
/// <param name="SizeBytes">Bytes of the quantized ONNX model.</param>
/// <param name="LatencyMilliseconds">Wall time per validation row of the scoring pass (ONNX Runtime, batched).</param>
/// <param name="Time">The trial's wall time: writing, any AdaRound, the session and the scoring pass.</param>
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
    /// Sets <paramref name="options"/> to this trial's configuration (precisions, calibration method, float nodes, AdaRound;
    /// the sensitivity analysis off), so PostTraining writes the same kind of model, e.g. on another backend.
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
        options.MinOutputCosine = 0;
        options.MaxAccuracyDrop = null;
    }

    /// <inheritdoc/>
    public override string ToString()
        => $"#{Index} {Configuration}: metric {Metric:0.#####}, {SizeBytes / 1024.0:F0} KiB, {LatencyMilliseconds:F3} ms/row, {Time.TotalSeconds:F1} s, {(Accepted ? "accepted" : "rejected: " + Reason)}";
}

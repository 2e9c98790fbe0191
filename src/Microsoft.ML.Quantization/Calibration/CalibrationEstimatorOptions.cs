using Microsoft.ML.Quantization.Inference;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// Options of <see cref="CalibrationEstimator"/> (<c>mlContext.Quantization.Calibrate</c>): which model, which
/// rows, which tensors and how each is calibrated. Session settings (threads, execution provider, batch size)
/// come from <see cref="OnnxRuntimeOptions"/>.
/// </summary>
public sealed class CalibrationEstimatorOptions : OnnxBindingOptions
{
    /// <summary>The default number of rows read: 1000 (the literature's 500 to 1000 representative samples).</summary>
    public const int DefaultSampleCount = 1000;

    /// <summary>
    /// The op types whose float inputs, outputs and weights are calibrated by default: every op PostTraining quantizes
    /// (its <c>DefaultOpTypes</c>), so a table made with the defaults serves PostTraining's <c>CalibrationTable</c>.
    /// </summary>
    public static IReadOnlyCollection<string> DefaultOpTypes { get; } = [.. QuantizableOps.All];

    /// <summary>How many rows to read: at most this many (all of them when the data has fewer). Default <see cref="DefaultSampleCount"/>.</summary>
    public int SampleCount { get; set; } = DefaultSampleCount;

    /// <summary>How activations are calibrated (per tensor). Default: MinMax, 8-bit unsigned, asymmetric.</summary>
    public CalibrationOptions Activations { get; set; } = new();

    /// <summary>How weights are calibrated. Default: MinMax, 8-bit signed, symmetric (<see cref="CalibrationOptions.ForWeights"/>).</summary>
    public CalibrationOptions Weights { get; set; } = CalibrationOptions.ForWeights();

    /// <summary>Weights per output channel, along the axis their op gives them (Conv 0, ConvTranspose 1, Gemm by transB, MatMul last). Default true.</summary>
    public bool WeightsPerChannel { get; set; } = true;

    /// <summary>Per-tensor calibration settings that replace <see cref="Activations"/> or <see cref="Weights"/>, keyed by tensor name.</summary>
    public IDictionary<string, CalibrationOptions> TensorOverrides { get; } = new Dictionary<string, CalibrationOptions>(StringComparer.Ordinal);

    /// <summary>
    /// Op types whose float inputs, outputs and initializers are calibrated. Default <see cref="DefaultOpTypes"/>. A
    /// Conv/Gemm/MatMul/Add output read only by a Relu or Clip is skipped (the quantized graph fuses the pair and
    /// quantizes only the activation's output) unless it has a <see cref="TensorOverrides"/> entry.
    /// </summary>
    public ISet<string> OpTypes { get; } = new HashSet<string>(DefaultOpTypes, StringComparer.Ordinal);

    /// <summary>
    /// Outputs of MaxPool, GlobalMaxPool, Flatten, Reshape, Transpose, Squeeze and Unsqueeze take their input's entry
    /// (<see cref="CalibrationTableEntry.RangeSource"/>) instead of being observed: their quantized form must keep the
    /// input's scale and zero point, and not exposing them makes calibration cheaper. Default true.
    /// </summary>
    public bool SharePassThroughRanges { get; set; } = true;

    /// <summary>
    /// Calibrate the graph PostTraining quantizes: Identity/Dropout removed, constants folded, BatchNormalization
    /// folded into the preceding op, so the table's weight ranges are those of the folded weights. Default true.
    /// </summary>
    public bool PrepareGraph { get; set; } = true;

    /// <summary>Receives progress after each batch (rows observed so far, rows planned, elapsed time). Default null.</summary>
    public IProgress<CalibrationProgress>? Progress { get; set; }

    /// <summary>Cancels calibration between batches (Fit throws <see cref="OperationCanceledException"/>). Default none.</summary>
    public CancellationToken CancellationToken { get; set; }

    internal override void Validate()
    {
        base.Validate();
        if (SampleCount < 1)
            throw new ArgumentOutOfRangeException(nameof(SampleCount), SampleCount, "SampleCount must be at least 1.");
        ArgumentNullException.ThrowIfNull(Activations, nameof(Activations));
        ArgumentNullException.ThrowIfNull(Weights, nameof(Weights));
        Activations.Validate();
        Weights.Validate();
        foreach (var (tensor, options) in TensorOverrides)
        {
            if (options is null)
                throw new ArgumentException($"TensorOverrides['{tensor}'] is null.");
            options.Validate();
        }
    }

    /// <summary>The scoring options of the same model and session settings.</summary>
    internal OnnxModelScoringOptions ToScoringOptions()
    {
        var scoring = new OnnxModelScoringOptions { ModelPath = ModelPath, ModelBytes = ModelBytes };
        CopyBindingsTo(scoring);
        return scoring;
    }
}

/// <summary>Calibration progress, reported after each batch.</summary>
/// <param name="RowsObserved">Rows run through the model so far.</param>
/// <param name="RowsPlanned">Rows calibration will read: the sample count, or fewer when the data is known to be shorter.</param>
/// <param name="Elapsed">Time since calibration started.</param>
public readonly record struct CalibrationProgress(long RowsObserved, long RowsPlanned, TimeSpan Elapsed);

using System.Text.RegularExpressions;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// Options of <see cref="PostTrainingEstimator"/> (<c>mlContext.Quantization.PostTraining</c>): the float model, how
/// it is calibrated, which nodes are quantized to which widths, and how the quantized model runs.
/// </summary>
public sealed class PostTrainingOptions : OnnxRuntimeOptions
{
    /// <summary>The op types quantized by default.</summary>
    public static IReadOnlyCollection<string> DefaultOpTypes { get; } =
    [
        "Conv", "Gemm", "MatMul", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
        "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
    ];

    /// <summary>Path of the float ONNX model. Set this or <see cref="ModelBytes"/>.</summary>
    public string? ModelPath { get; set; }

    /// <summary>The float ONNX model itself. Set this or <see cref="ModelPath"/>.</summary>
    public byte[]? ModelBytes { get; set; }

    /// <summary>Graph inputs and the columns that feed them. Empty (default): columns named like the inputs.</summary>
    public IList<OnnxColumnBinding> Inputs { get; } = new List<OnnxColumnBinding>();

    /// <summary>Tensors exposed as output columns. Empty (default): every graph output, as a column of the same name.</summary>
    public IList<OnnxColumnBinding> Outputs { get; } = new List<OnnxColumnBinding>();

    /// <summary>Per-row shapes for inputs with symbolic dimensions other than the batch, keyed by tensor name.</summary>
    public IDictionary<string, int[]> InputShapes { get; } = new Dictionary<string, int[]>();

    /// <summary>
    /// Ranges from an earlier <c>Calibrate</c> (same model, default graph preparation). Null (default): Fit calibrates
    /// on its rows with <see cref="CalibrationMethod"/> and <see cref="SampleCount"/>.
    /// </summary>
    public CalibrationTable? CalibrationTable { get; set; }

    /// <summary>How activation ranges are chosen when Fit calibrates. Default <see cref="Calibration.CalibrationMethod.MinMax"/>.</summary>
    public CalibrationMethod CalibrationMethod { get; set; } = CalibrationMethod.MinMax;

    /// <summary>Rows Fit calibrates on, at most. Default 1000.</summary>
    public int SampleCount { get; set; } = CalibrationEstimatorOptions.DefaultSampleCount;

    /// <summary>Precision of every quantized node without a more specific setting. Default <see cref="QuantizationPrecision.Int8"/>.</summary>
    public QuantizationPrecision Precision { get; set; } = QuantizationPrecision.Int8;

    /// <summary>Precision of the first Conv/Gemm/MatMul in graph order. Null (default): <see cref="Precision"/>.</summary>
    public QuantizationPrecision? FirstLayerPrecision { get; set; }

    /// <summary>Precision of the last Conv/Gemm/MatMul in graph order. Null (default): <see cref="Precision"/>.</summary>
    public QuantizationPrecision? LastLayerPrecision { get; set; }

    /// <summary>Precision per node name: the mixed-precision map. Wins over every other precision setting.</summary>
    public IDictionary<string, QuantizationPrecision> NodePrecision { get; } = new Dictionary<string, QuantizationPrecision>(StringComparer.Ordinal);

    /// <summary>Weights per output channel (default true) or per tensor.</summary>
    public bool WeightsPerChannel { get; set; } = true;

    /// <summary>
    /// Symmetric activations: int8 with zero point 0 (uint8 with zero point 0 for non-negative tensors, e.g. after
    /// ReLU). Default false: asymmetric uint8 with a zero point. TensorRT requires symmetric activations, so choosing
    /// it forces this on.
    /// </summary>
    public bool SymmetricActivations { get; set; }

    /// <summary>7-bit weights ([-63, 63]) for CPUs without VNNI, whose VPMADDUBSW saturates 16-bit sums. Default false.</summary>
    public bool ReduceRange { get; set; }

    /// <summary>Op types that are quantized. Default <see cref="DefaultOpTypes"/>; a Relu or Clip right after a quantized op is folded into its output quantization.</summary>
    public ISet<string> OpTypes { get; } = new HashSet<string>(DefaultOpTypes, StringComparer.Ordinal);

    /// <summary>Node names to keep in float; '*' and '?' wildcards allowed.</summary>
    public IList<string> ExcludedNodes { get; } = new List<string>();

    /// <summary>Op types to keep in float.</summary>
    public ISet<string> ExcludedOpTypes { get; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>A predicate on (node name, op type): return false to keep the node in float. Default null.</summary>
    public Func<string, string, bool>? NodeFilter { get; set; }

    /// <summary>Calibration settings for individual tensors (used when Fit calibrates).</summary>
    public IDictionary<string, CalibrationOptions> TensorOverrides { get; } = new Dictionary<string, CalibrationOptions>(StringComparer.Ordinal);

    /// <summary>
    /// What runs the quantized model: <see cref="QuantizedBackend.OnnxRuntime"/> (default) or QatMl's native INT8 engine
    /// (<see cref="QuantizedBackend.Native"/>; on the CPU its threads are <see cref="OnnxRuntimeOptions.IntraOpNumThreads"/>, 0 = one per core;
    /// on a GPU: <see cref="NativeDevice"/>).
    /// Saved with the model.
    /// </summary>
    public QuantizedBackend Backend { get; set; } = QuantizedBackend.OnnxRuntime;

    /// <summary>
    /// When <see cref="Backend"/> is Native and the engine cannot run a node: true (default) runs the model with ONNX Runtime
    /// and logs a warning naming the nodes; false throws <see cref="NotSupportedException"/> with the same names.
    /// </summary>
    public bool AllowBackendFallback { get; set; } = true;

    /// <summary>
    /// Where the native engine runs when <see cref="Backend"/> is Native: <see cref="ComputeDevice.Cpu"/>, or a CUDA GPU by ordinal
    /// (<see cref="ComputeDevice.Cuda"/>: a native library built with CUDA and a GPU of compute capability 8.0 or newer; results are
    /// bit-identical to the CPU's). <c>null</c> (default): CUDA device <see cref="MLContext.GpuDeviceId"/> when the context sets one,
    /// else the CPU. A GPU that is not available runs the engine on the CPU with a warning. Saved with the model.
    /// </summary>
    public ComputeDevice? NativeDevice { get; set; }

    /// <summary>Receives calibration progress when Fit calibrates. Default null.</summary>
    public IProgress<CalibrationProgress>? Progress { get; set; }

    /// <summary>Cancels calibration between batches. Default none.</summary>
    public CancellationToken CancellationToken { get; set; }

    internal new void Validate()
    {
        base.Validate();
        if (ModelPath is null && ModelBytes is null)
            throw new ArgumentException("Set PostTrainingOptions.ModelPath or ModelBytes.");
        if (SampleCount < 1)
            throw new ArgumentOutOfRangeException(nameof(SampleCount), SampleCount, "SampleCount must be at least 1.");
        if (!Enum.IsDefined(Backend))
            throw new ArgumentOutOfRangeException(nameof(Backend), Backend, "Unknown backend.");
        if (NativeDevice is { } device && (!Enum.IsDefined(device.Kind) || device.Index < 0 || (device.Kind == ComputeDeviceKind.Cpu && device.Index != 0)))
            throw new ArgumentOutOfRangeException(nameof(NativeDevice), device, "NativeDevice must be the CPU (index 0) or a CUDA device with an ordinal >= 0.");
        ValidateInputShapes(InputShapes);
        ArgumentNullException.ThrowIfNull(Precision, nameof(Precision));
        Precision.Validate(nameof(Precision));
        FirstLayerPrecision?.Validate(nameof(FirstLayerPrecision));
        LastLayerPrecision?.Validate(nameof(LastLayerPrecision));
        foreach (var (node, precision) in NodePrecision)
            (precision ?? throw new ArgumentException($"NodePrecision['{node}'] is null.")).Validate($"NodePrecision['{node}']");
    }

    /// <summary>Activations are symmetric when asked or when the execution provider needs it.</summary>
    internal bool EffectiveSymmetricActivations => SymmetricActivations || ExecutionProvider == OnnxExecutionProvider.TensorRT;

    internal bool IsExcluded(string node, string opType)
    {
        if (ExcludedOpTypes.Contains(opType) || (NodeFilter is not null && !NodeFilter(node, opType)))
            return true;
        foreach (string pattern in ExcludedNodes)
            if (pattern == node || (pattern.IndexOfAny(['*', '?']) >= 0 && Regex.IsMatch(node, "^" + Regex.Escape(pattern).Replace("\\*", ".*").Replace("\\?", ".") + "$")))
                return true;
        return false;
    }

    internal OnnxModelScoringOptions ToScoringOptions(byte[] model)
    {
        var scoring = new OnnxModelScoringOptions { ModelBytes = model };
        CopyTo(scoring);
        scoring.ModelSource = ModelName(ModelPath);
        foreach (var b in Inputs) scoring.Inputs.Add(b);
        foreach (var b in Outputs) scoring.Outputs.Add(b);
        foreach (var kv in InputShapes) scoring.InputShapes[kv.Key] = kv.Value;
        return scoring;
    }
}

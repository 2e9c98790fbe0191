using System.Text.RegularExpressions;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// Options of <see cref="PostTrainingEstimator"/> (<c>mlContext.Quantization.PostTraining</c>): the float model, how
/// it is calibrated, which nodes are quantized to which widths, and how the quantized model runs.
/// </summary>
public sealed class PostTrainingOptions : OnnxBindingOptions
{
    /// <summary>
    /// The op types quantized by default: ONNX Runtime's quantizer registry. Compute: Conv, ConvTranspose, Gemm, MatMul
    /// (weights or activation x activation), Add, Mul, Where, AveragePool, GlobalAveragePool, the activations (Relu,
    /// Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Softmax), InstanceNormalization, LayerNormalization,
    /// ArgMax, Gather over a float table (a weight-only int8 embedding); on their input's scale: MaxPool,
    /// GlobalMaxPool, Resize, Pad, Split, Gather over activations, Transpose, Reshape, Squeeze, Unsqueeze, Flatten,
    /// Slice, Expand, DepthToSpace, SpaceToDepth; Concat on the union of its inputs' ranges.
    /// </summary>
    public static IReadOnlyCollection<string> DefaultOpTypes { get; } = [.. QuantizableOps.All];

    /// <summary>Tensors exposed as output columns. Empty (default): every graph output, as a column of the same name.</summary>
    public IList<OnnxColumnBinding> Outputs { get; } = new List<OnnxColumnBinding>();

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

    /// <summary>
    /// Width of individual activation tensors by name, winning over the node precisions: 16 gives (u)int16 QDQ (opset
    /// 21; ONNX Runtime runs the ops around such tensors in float between DequantizeLinear and QuantizeLinear), 2 to 7
    /// a clipped (u)int8. Tensors that must share parameters (across pass-through ops, Concat) take the widest.
    /// </summary>
    public IDictionary<string, int> TensorBits { get; } = new Dictionary<string, int>(StringComparer.Ordinal);

    /// <summary>
    /// The Conv, ConvTranspose, Gemm and MatMul weights inside If, Loop and Scan bodies are stored as int8 (int4 with
    /// 4-bit <see cref="Precision"/>) behind a DequantizeLinear: weight-only, since calibration does not run inside
    /// control flow and the activations there stay float. Default true.
    /// </summary>
    public bool QuantizeControlFlowWeights { get; set; } = true;

    /// <summary>
    /// Softmax outputs (attention probabilities) are quantized on the fixed range [0, 1] instead of their calibrated
    /// one, so no probability is clipped by rows calibration did not see. Default true.
    /// </summary>
    public bool SoftmaxUnitRange { get; set; } = true;

    /// <summary>
    /// The accuracy Fit keeps: when the mean cosine similarity of the quantized and float outputs (the worst output) on the
    /// first <see cref="SensitivityRowCount"/> calibration rows is below this, a sensitivity analysis measures each
    /// quantized node's effect on the outputs and leaves the most sensitive nodes float until it is met (see
    /// <see cref="QuantizedModelTransformer.Sensitivity"/>). On the calibration rows it aims at half the loss this
    /// allows (0.99: 0.995), since their ranges fit them better than other rows. Default 0.99; 0 turns the analysis off.
    /// </summary>
    public double MinOutputCosine { get; set; } = 0.99;

    /// <summary>
    /// With <see cref="LabelColumnName"/>: the allowed loss of argmax accuracy against the label on the calibration rows, in
    /// percentage points; it replaces <see cref="MinOutputCosine"/> as the sensitivity analysis's target. Default null.
    /// </summary>
    public double? MaxAccuracyDrop { get; set; }

    /// <summary>The label column (UInt32, Int32, Int64, Single or a key) <see cref="MaxAccuracyDrop"/> is measured against. Default null.</summary>
    public string? LabelColumnName { get; set; }

    /// <summary>Key-typed labels count from 1 in ML.NET; set to 1 to compare argmax with label - 1. Default 0.</summary>
    public int LabelOffset { get; set; }

    /// <summary>
    /// Calibration rows the sensitivity analysis, bias correction and SmoothQuant run on (the first ones, held in memory).
    /// Default 32.
    /// </summary>
    public int SensitivityRowCount { get; set; } = 32;

    /// <summary>
    /// Bias correction: the mean shift that rounding a Conv's or Gemm's weights adds to its output ((W_q - W) E[x], with
    /// E[x] per input channel measured on the calibration rows) is subtracted from its bias (a bias is added where there
    /// is none). Helps depthwise convolutions most. Default true.
    /// </summary>
    public bool BiasCorrection { get; set; } = true;

    /// <summary>
    /// Cross-layer equalization (data-free, before calibration): for a Conv followed by another Conv, directly or through a
    /// Relu, each channel between them is rescaled so both weights have the same per-channel range (the first's output
    /// channel divided, the second's input channel multiplied; exact through Relu). Evens out depthwise weights whose
    /// channels differ by orders of magnitude. Not applied with a given <see cref="CalibrationTable"/> (calibrated on the
    /// graph as it was). Default true.
    /// </summary>
    public bool CrossLayerEqualization { get; set; } = true;

    /// <summary>
    /// SmoothQuant for MatMul and Gemm inputs: activation outliers are moved into the weights channel by channel (x / s,
    /// W * s, s = max|x|^alpha / max|W|^(1 - alpha)), alpha chosen among <see cref="SmoothQuantAlphas"/> (or none) by the
    /// output cosine of the fully quantized model on the calibration rows. Default false.
    /// </summary>
    public bool SmoothQuant { get; set; }

    /// <summary>The alphas SmoothQuant tries. Default 0.25, 0.5, 0.75.</summary>
    public IList<double> SmoothQuantAlphas { get; } = new List<double> { 0.25, 0.5, 0.75 };

    /// <summary>
    /// AdaRound (Nagel et al. 2020): instead of rounding each weight to the nearest level, learn per weight whether it
    /// rounds up or down so the layer's output on the calibration rows stays closest to the float one (its input taken
    /// from the quantized model, the target from the float model; layer by layer in graph order). Applies to the Conv
    /// (2-D), Gemm and MatMul weights below 8 bits (4-bit weights) left after the sensitivity analysis; a layer keeps
    /// round-to-nearest when the learned rounding does not lower its error or when it is a Gemm/MatMul with more inputs
    /// per output than rows to learn from, and <see cref="BiasCorrection"/> still corrects
    /// the mean shift left (the rounding is learned on few rows). Runs on TorchSharp (the app references TorchSharp-cpu, as
    /// for AwareTraining). Default false.
    /// </summary>
    public bool AdaRound { get; set; }

    /// <summary>AdaRound's optimizer steps per layer. Default 1000.</summary>
    public int AdaRoundIterations { get; set; } = 1000;

    /// <summary>Calibration rows AdaRound learns from (the first ones, held in memory). Default 256.</summary>
    public int AdaRoundRowCount { get; set; } = 256;

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

    /// <summary>Whether Fit runs the sensitivity analysis.</summary>
    internal bool AnalyzesSensitivity => MinOutputCosine > 0 || MaxAccuracyDrop is not null;

    internal override void Validate()
    {
        base.Validate();
        if (SampleCount < 1)
            throw new ArgumentOutOfRangeException(nameof(SampleCount), SampleCount, "SampleCount must be at least 1.");
        if (!Enum.IsDefined(Backend))
            throw new ArgumentOutOfRangeException(nameof(Backend), Backend, "Unknown backend.");
        if (NativeDevice is { } device && (!Enum.IsDefined(device.Kind) || device.Index < 0 || (device.Kind == ComputeDeviceKind.Cpu && device.Index != 0)))
            throw new ArgumentOutOfRangeException(nameof(NativeDevice), device, "NativeDevice must be the CPU (index 0) or a CUDA device with an ordinal >= 0.");
        ArgumentNullException.ThrowIfNull(Precision, nameof(Precision));
        Precision.Validate(nameof(Precision));
        FirstLayerPrecision?.Validate(nameof(FirstLayerPrecision));
        LastLayerPrecision?.Validate(nameof(LastLayerPrecision));
        foreach (var (node, precision) in NodePrecision)
            (precision ?? throw new ArgumentException($"NodePrecision['{node}'] is null.")).Validate($"NodePrecision['{node}']");
        if (!(MinOutputCosine is >= 0 and <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinOutputCosine), MinOutputCosine, "MinOutputCosine must be in [0, 1] (0 turns the sensitivity analysis off).");
        if (MaxAccuracyDrop is { } drop && (!(drop >= 0) || LabelColumnName is null))
            throw new ArgumentException("MaxAccuracyDrop needs LabelColumnName and a value of at least 0 points.", nameof(MaxAccuracyDrop));
        if (SmoothQuantAlphas.Any(a => !(a is >= 0 and <= 1)))
            throw new ArgumentOutOfRangeException(nameof(SmoothQuantAlphas), "SmoothQuant alphas must be in [0, 1].");
        if (SensitivityRowCount < 1)
            throw new ArgumentOutOfRangeException(nameof(SensitivityRowCount), SensitivityRowCount, "SensitivityRowCount must be at least 1.");
        if (AdaRoundIterations < 1)
            throw new ArgumentOutOfRangeException(nameof(AdaRoundIterations), AdaRoundIterations, "AdaRoundIterations must be at least 1.");
        if (AdaRoundRowCount < 1)
            throw new ArgumentOutOfRangeException(nameof(AdaRoundRowCount), AdaRoundRowCount, "AdaRoundRowCount must be at least 1.");
        foreach (var (tensor, bits) in TensorBits)
            if (bits is < 2 or > 16)
                throw new ArgumentOutOfRangeException(nameof(TensorBits), bits, $"TensorBits['{tensor}'] must be between 2 and 16.");
    }

    /// <summary>A copy with its own lists and maps (the calibration table, node filter and progress are shared).</summary>
    internal PostTrainingOptions Clone()
    {
        var copy = new PostTrainingOptions
        {
            ModelPath = ModelPath, ModelBytes = ModelBytes, CalibrationTable = CalibrationTable, CalibrationMethod = CalibrationMethod, SampleCount = SampleCount,
            Precision = Precision, FirstLayerPrecision = FirstLayerPrecision, LastLayerPrecision = LastLayerPrecision, WeightsPerChannel = WeightsPerChannel,
            SymmetricActivations = SymmetricActivations, ReduceRange = ReduceRange, NodeFilter = NodeFilter, QuantizeControlFlowWeights = QuantizeControlFlowWeights,
            SoftmaxUnitRange = SoftmaxUnitRange, MinOutputCosine = MinOutputCosine, MaxAccuracyDrop = MaxAccuracyDrop, LabelColumnName = LabelColumnName,
            LabelOffset = LabelOffset, SensitivityRowCount = SensitivityRowCount, BiasCorrection = BiasCorrection, CrossLayerEqualization = CrossLayerEqualization,
            SmoothQuant = SmoothQuant, AdaRound = AdaRound, AdaRoundIterations = AdaRoundIterations, AdaRoundRowCount = AdaRoundRowCount, Backend = Backend,
            AllowBackendFallback = AllowBackendFallback, NativeDevice = NativeDevice, Progress = Progress, CancellationToken = CancellationToken,
        };
        CopyTo(copy);
        foreach (var b in Inputs) copy.Inputs.Add(b);
        foreach (var b in Outputs) copy.Outputs.Add(b);
        foreach (var kv in InputShapes) copy.InputShapes[kv.Key] = kv.Value;
        copy.OpTypes.Clear();
        copy.OpTypes.UnionWith(OpTypes);
        foreach (var kv in NodePrecision) copy.NodePrecision[kv.Key] = kv.Value;
        foreach (string n in ExcludedNodes) copy.ExcludedNodes.Add(n);
        copy.ExcludedOpTypes.UnionWith(ExcludedOpTypes);
        foreach (var kv in TensorBits) copy.TensorBits[kv.Key] = kv.Value;
        copy.SmoothQuantAlphas.Clear();
        foreach (double a in SmoothQuantAlphas) copy.SmoothQuantAlphas.Add(a);
        foreach (var kv in TensorOverrides) copy.TensorOverrides[kv.Key] = kv.Value;
        return copy;
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

    /// <summary>Float scoring of <paramref name="model"/> with these bindings and session settings.</summary>
    internal OnnxModelScoringOptions ToScoringOptions(byte[] model)
    {
        var scoring = new OnnxModelScoringOptions { ModelBytes = model };
        CopyBindingsTo(scoring);
        scoring.ModelSource = ModelName();
        foreach (var b in Outputs) scoring.Outputs.Add(b);
        return scoring;
    }

    /// <summary>How the quantized model runs: these bindings, session settings and backend (saved with the model).</summary>
    internal ScoringSettings ToScoringSettings() => ScoringSettings.From(this, Outputs) with
    {
        ModelName = ModelName() + " (quantized)",
        Backend = Backend,
        AllowBackendFallback = AllowBackendFallback,
        NativeDevice = NativeDevice,
    };

    /// <summary>
    /// Checks the settings of a quantized model restored from a zip exactly as the options they came from were checked
    /// (same messages): bindings, session settings, backend.
    /// </summary>
    internal static void ValidateRestored(ScoringSettings settings)
    {
        settings.ValidateBindings();
        var options = new PostTrainingOptions { ModelBytes = [], Backend = settings.Backend, AllowBackendFallback = settings.AllowBackendFallback };
        settings.ToScoringOptions([]).CopyBindingsTo(options);
        options.Validate();
    }
}

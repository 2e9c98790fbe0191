namespace Microsoft.ML.Quantization.Inference;

/// <summary>Where ONNX Runtime runs a model.</summary>
public enum OnnxExecutionProvider
{
    /// <summary>ONNX Runtime's CPU provider (MLAS kernels). Always available.</summary>
    Cpu = 0,
    /// <summary>The CUDA provider: needs the Microsoft.ML.OnnxRuntime.Gpu package, CUDA 13 libraries and a GPU.</summary>
    Cuda = 1,
    /// <summary>The TensorRT provider (falls back to CUDA, then CPU, for nodes TensorRT does not take): GPU package, TensorRT libraries and a GPU.</summary>
    TensorRT = 2,
}

/// <summary>ONNX Runtime graph optimisation levels.</summary>
public enum OnnxGraphOptimization
{
    /// <summary>No graph rewrites.</summary>
    None = 0,
    /// <summary>Constant folding and redundant node removal.</summary>
    Basic = 1,
    /// <summary>Basic plus node fusions (Conv+Relu, QDQ to integer kernels, ...).</summary>
    Extended = 2,
    /// <summary>Extended plus layout optimisations. The default.</summary>
    All = 3,
}

/// <summary>How QatMl's transformers run ONNX Runtime: threads, graph optimisation and execution provider.</summary>
public class OnnxRuntimeOptions
{
    /// <summary>Threads ONNX Runtime uses inside one operator. 0 (default) lets ONNX Runtime choose (one per core).</summary>
    public int IntraOpNumThreads { get; set; }

    /// <summary>Graph optimisation level. Default <see cref="OnnxGraphOptimization.All"/>.</summary>
    public OnnxGraphOptimization GraphOptimization { get; set; } = OnnxGraphOptimization.All;

    /// <summary>Execution provider. Default <see cref="OnnxExecutionProvider.Cpu"/>.</summary>
    public OnnxExecutionProvider ExecutionProvider { get; set; } = OnnxExecutionProvider.Cpu;

    /// <summary>GPU ordinal for CUDA/TensorRT. <c>null</c> (default) uses <see cref="MLContext.GpuDeviceId"/>, else 0.</summary>
    public int? GpuDeviceId { get; set; }

    /// <summary>
    /// When the requested GPU provider or device is not available: <c>true</c> runs on the CPU and logs a
    /// warning, <c>false</c> throws. <c>null</c> (default) uses <see cref="MLContext.FallbackToCpu"/>.
    /// </summary>
    public bool? FallbackToCpu { get; set; }

    /// <summary>
    /// Rows per ONNX Runtime call, 1 to <see cref="MaxBatchSize"/>. Default 64. Models with a fixed batch dimension need their
    /// own batch size (or a symbolic batch).
    /// </summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>The largest <see cref="BatchSize"/>: 1 048 576 rows.</summary>
    public const int MaxBatchSize = 1 << 20;

    /// <summary>
    /// The file QatMl read the model from when the model travels as bytes between stages (PostTraining hands its prepared
    /// graph to calibration): what messages name instead of "(model bytes)".
    /// </summary>
    internal string? ModelSource { get; set; }

    /// <summary>The public option that binds the model's inputs to columns when it is not this class's own Inputs.</summary>
    internal string? InputsOption { get; set; }

    /// <summary>What a missing-column error tells the user to set (e.g. "PostTrainingOptions.Inputs").</summary>
    internal virtual string InputsOptionName => InputsOption ?? GetType().Name + ".Inputs";

    /// <summary>Copies the session settings, and where the model came from and which option binds its inputs (for messages).</summary>
    internal void CopyTo(OnnxRuntimeOptions other)
    {
        other.IntraOpNumThreads = IntraOpNumThreads;
        other.GraphOptimization = GraphOptimization;
        other.ExecutionProvider = ExecutionProvider;
        other.GpuDeviceId = GpuDeviceId;
        other.FallbackToCpu = FallbackToCpu;
        other.BatchSize = BatchSize;
        other.ModelSource = ModelSource;
        other.InputsOption = InputsOptionName;
    }

    /// <summary>Checks the settings; throws naming the bad one. Each options class adds its own checks.</summary>
    internal virtual void Validate()
    {
        if (BatchSize is < 1 or > MaxBatchSize)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, $"BatchSize must be between 1 and {MaxBatchSize}.");
        if (IntraOpNumThreads < 0)
            throw new ArgumentOutOfRangeException(nameof(IntraOpNumThreads), IntraOpNumThreads, "IntraOpNumThreads must be 0 (ONNX Runtime's choice) or positive.");
        if (!Enum.IsDefined(ExecutionProvider))
            throw new ArgumentOutOfRangeException(nameof(ExecutionProvider), ExecutionProvider, "Unknown execution provider.");
        if (!Enum.IsDefined(GraphOptimization))
            throw new ArgumentOutOfRangeException(nameof(GraphOptimization), GraphOptimization, "Unknown graph optimisation level.");
    }

    /// <summary>Checks declared per-row shapes: every dimension at least 1, and a row that fits in one buffer.</summary>
    internal static void ValidateInputShapes(IDictionary<string, int[]> shapes)
    {
        foreach (var (tensor, dims) in shapes)
        {
            if (dims is null)
                throw new ArgumentException($"InputShapes['{tensor}'] is null.");
            if (dims.Any(d => d < 1))
                throw new ArgumentException($"InputShapes['{tensor}'] = [{string.Join(", ", dims)}]: every dimension must be at least 1.");
            if (!BatchScorerSchema.RowFitsOneBuffer(dims))
                throw new ArgumentException($"InputShapes['{tensor}'] = [{string.Join(", ", dims)}]: more values per row than one buffer holds ({Array.MaxLength}).");
        }
    }
}

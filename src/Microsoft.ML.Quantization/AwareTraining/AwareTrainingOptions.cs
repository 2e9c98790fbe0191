using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// Options of <see cref="AwareTrainingEstimator"/> (<c>mlContext.Quantization.AwareTraining</c>): the float model, the
/// columns, the quantization scheme, the training schedule and how the result runs (the session settings apply to
/// the deployed quantized model; a positive IntraOpNumThreads also sets libtorch's process-wide thread count). The model
/// keeps its BatchNormalization nodes: training simulates their folding.
/// </summary>
public sealed class AwareTrainingOptions : OnnxModelOptions
{
    /// <summary>The Vector&lt;Single&gt; column feeding the model's single input. Null (default): the column named like the input.</summary>
    public string? FeatureColumnName { get; set; }

    /// <summary>The class label column (UInt32, Int32, Int64, Single or a key type); classes are the output's indices. Default "Label".</summary>
    public string LabelColumnName { get; set; } = "Label";

    /// <summary>Rows to validate on (accuracy after each epoch, and the PTQ-first budget). Null (default): <see cref="ValidationFraction"/> of the data.</summary>
    public IDataView? ValidationData { get; set; }

    /// <summary>Share of the rows held out for validation when <see cref="ValidationData"/> is null. Default 0 (no validation).</summary>
    public double ValidationFraction { get; set; }

    /// <summary>What runs the deployed model: ONNX Runtime (default) or QatMl's native INT8 engine (see <see cref="PostTrainingOptions.Backend"/>).</summary>
    public QuantizedBackend Backend { get; set; } = QuantizedBackend.OnnxRuntime;

    /// <summary>With the native backend, run on ONNX Runtime when the engine cannot run a node. Default true.</summary>
    public bool AllowBackendFallback { get; set; } = true;

    /// <summary>Where the native engine runs (see <see cref="PostTrainingOptions.NativeDevice"/>). Default null: <see cref="MLContext.GpuDeviceId"/>'s GPU, else the CPU.</summary>
    public ComputeDevice? NativeDevice { get; set; }

    /// <summary>
    /// Fine-tune without quantization: the same loop, rows, schedule and seed with every fake quantizer off, exported as
    /// the fine-tuned float model (run by ONNX Runtime; <see cref="AwareTrainingReport.Path"/> "FloatFineTune"). It is
    /// the fair baseline for a QAT run, which also gets the extra training. Default false.
    /// </summary>
    public bool FloatFineTune { get; set; }

    /// <summary>Widths of every quantized node. Default <see cref="QuantizationPrecision.Int8"/>.</summary>
    public QuantizationPrecision Precision { get; set; } = QuantizationPrecision.Int8;

    /// <summary>Widths of the first Conv/Gemm/MatMul. Null (default): <see cref="Precision"/>.</summary>
    public QuantizationPrecision? FirstLayerPrecision { get; set; }

    /// <summary>Widths of the last Conv/Gemm/MatMul. Null (default): <see cref="Precision"/>.</summary>
    public QuantizationPrecision? LastLayerPrecision { get; set; }

    /// <summary>Weights per output channel (default true) or per tensor.</summary>
    public bool WeightsPerChannel { get; set; } = true;

    /// <summary>Symmetric activations (zero point 0). Default false (asymmetric uint8).</summary>
    public bool SymmetricActivations { get; set; }

    /// <summary>
    /// How activation ranges are learned. Default <see cref="RangeLearning.LearnedStepSize"/> (LSQ, initialised from
    /// calibration): on FmnistNet it reached PyTorch's W4A8/W4A4 QAT figures where the moving-average observer did not
    /// (docs/aware-training.md). <see cref="RangeLearning.MovingAverage"/> is PyTorch's default.
    /// </summary>
    public RangeLearning ActivationRanges { get; set; } = RangeLearning.LearnedStepSize;

    /// <summary>
    /// LSQ for weights: learn each Conv/Gemm/MatMul weight's per-channel step size (initialised from the deployed, BN-folded
    /// max|w| / qmax) instead of recomputing max|w| / qmax every step. Default false.
    /// </summary>
    public bool LearnWeightStepSizes { get; set; }

    /// <summary>Training epochs over the data. Default 2 (fine-tuning needs few).</summary>
    public int Epochs { get; set; } = 2;

    /// <summary>Rows per optimizer step. Default 128.</summary>
    public int TrainingBatchSize { get; set; } = 128;

    /// <summary>Adam learning rate. Default 1e-4 (about 10x below a float training's).</summary>
    public double LearningRate { get; set; } = 1e-4;

    /// <summary>
    /// Seed of the rows' shuffle order (derived per epoch by a fixed mixing function, the same in every process) and of
    /// libtorch. With the same seed, data, options and IntraOpNumThreads, the exported model is the same bytes. Default 0.
    /// </summary>
    public int Seed { get; set; }

    /// <summary>Share of the steps trained in float before fake quantization starts (observers already observe). Default 0.15.</summary>
    public double WarmupFraction { get; set; } = 0.15;

    /// <summary>Epoch (0-based) from which activation observers stop updating. Null (default): the last epoch.</summary>
    public int? ObserverFreezeEpoch { get; set; }

    /// <summary>Epoch (0-based) from which BatchNormalization runs folded into the preceding Conv with frozen running statistics. Default 1.</summary>
    public int BatchNormFreezeEpoch { get; set; } = 1;

    /// <summary>
    /// Gradual bit width: the first third of the quantized steps at 16 bits, the second at 8, then the target widths, for
    /// weights and activations (narrower targets only). Default false.
    /// </summary>
    public bool GradualBitWidth { get; set; }

    /// <summary>Distillation weight a in [0, 1] (0, the default, turns the float teacher off).</summary>
    public double DistillationWeight { get; set; }

    /// <summary>Distillation temperature T. Default 4.</summary>
    public double DistillationTemperature { get; set; } = 4;

    /// <summary>Rows the initial ranges are calibrated on. Null (default): the first <see cref="CalibrationSampleCount"/> training rows.</summary>
    public IDataView? CalibrationData { get; set; }

    /// <summary>Rows the initial ranges are calibrated on. Default 1000.</summary>
    public int CalibrationSampleCount { get; set; } = 1000;

    /// <summary>
    /// The seed's workflow: when set (percentage points of validation accuracy), PTQ runs first and QAT only if PTQ
    /// loses more than this against the float model. Needs validation rows. Default null (always QAT).
    /// </summary>
    public double? MaxAccuracyDrop { get; set; }

    /// <summary>
    /// A file for training checkpoints (weights, optimizer state, ranges, position in the shuffled data), written
    /// atomically every <see cref="CheckpointEverySteps"/> steps. When it exists at Fit, training resumes from it and
    /// ends with the same weights as an uninterrupted run; a finished run deletes it, a failed one (NaN loss,
    /// cancellation, a killed process) leaves the last good one. Default null (no checkpoints).
    /// </summary>
    public string? CheckpointPath { get; set; }

    /// <summary>Steps between checkpoints. Default 100.</summary>
    public int CheckpointEverySteps { get; set; } = 100;

    /// <summary>Receives progress after every step. Default null.</summary>
    public IProgress<AwareTrainingProgress>? Progress { get; set; }

    /// <summary>Stops training between steps (Fit throws <see cref="OperationCanceledException"/>).</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>
    /// Asked after every epoch but the last with the epochs done and the last epoch's time: false ends training there (the
    /// automatic search's time budget). Null: every epoch runs.
    /// </summary>
    internal Func<int, TimeSpan, bool>? ContinueAfterEpoch { get; set; }

    /// <summary>The clock behind the rows/s figures (tests substitute one).</summary>
    internal TimeProvider Clock { get; set; } = TimeProvider.System;

    internal override void Validate()
    {
        base.Validate();
        Precision.Validate(nameof(Precision));
        FirstLayerPrecision?.Validate(nameof(FirstLayerPrecision));
        LastLayerPrecision?.Validate(nameof(LastLayerPrecision));
        if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "Epochs must be at least 1.");
        if (TrainingBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(TrainingBatchSize), TrainingBatchSize, "TrainingBatchSize must be at least 1.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be positive.");
        if (WarmupFraction is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(WarmupFraction), WarmupFraction, "WarmupFraction must be in [0, 1).");
        if (ValidationFraction is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(ValidationFraction), ValidationFraction, "ValidationFraction must be in [0, 1).");
        if (DistillationWeight is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(DistillationWeight), DistillationWeight, "DistillationWeight must be in [0, 1].");
        if (!(DistillationTemperature > 0)) throw new ArgumentOutOfRangeException(nameof(DistillationTemperature), DistillationTemperature, "DistillationTemperature must be positive.");
        if (CheckpointEverySteps < 1) throw new ArgumentOutOfRangeException(nameof(CheckpointEverySteps), CheckpointEverySteps, "CheckpointEverySteps must be at least 1.");
        if (CalibrationSampleCount < 1) throw new ArgumentOutOfRangeException(nameof(CalibrationSampleCount), CalibrationSampleCount, "CalibrationSampleCount must be at least 1.");
        if (FloatFineTune && MaxAccuracyDrop is not null)
            throw new ArgumentException("FloatFineTune trains without quantization, so there is no PTQ to try first: leave MaxAccuracyDrop null.");
    }

    /// <summary>The PTQ options of the same scheme (the export and the PTQ-first path).</summary>
    /// <summary>What a missing features column's error tells the user to set.</summary>
    internal override string InputsOptionName => InputsOption ?? nameof(AwareTrainingOptions) + "." + nameof(FeatureColumnName);

    /// <summary>
    /// The PostTraining options of the deployed model: the same scheme and session settings, and the features column bound to
    /// <paramref name="inputTensor"/> (the graph's input) when <see cref="FeatureColumnName"/> names another column.
    /// </summary>
    internal PostTrainingOptions ToPostTraining(byte[] model, string inputTensor)
    {
        var o = new PostTrainingOptions
        {
            ModelBytes = model,
            Precision = Precision,
            FirstLayerPrecision = FirstLayerPrecision,
            LastLayerPrecision = LastLayerPrecision,
            WeightsPerChannel = WeightsPerChannel,
            SymmetricActivations = SymmetricActivations,
            SampleCount = CalibrationSampleCount,
            Backend = Backend,
            AllowBackendFallback = AllowBackendFallback,
            NativeDevice = NativeDevice,
        };
        CopyTo(o);
        o.ModelSource = ModelName();
        if (FeatureColumnName is { } features && features != inputTensor)
            o.Inputs.Add(new OnnxColumnBinding(features, inputTensor));
        return o;
    }
}

/// <summary>Training progress, reported after every step.</summary>
/// <param name="Epoch">0-based epoch.</param>
/// <param name="Step">Global step (0-based) just finished.</param>
/// <param name="TotalSteps">Steps planned.</param>
/// <param name="Loss">This step's loss.</param>
/// <param name="ValidationAccuracy">Accuracy (fake-quantized model) at the end of the last finished epoch, if validating.</param>
/// <param name="RowsPerSecond">Training throughput so far.</param>
public readonly record struct AwareTrainingProgress(int Epoch, long Step, long TotalSteps, double Loss, double? ValidationAccuracy, double RowsPerSecond);

using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// <c>mlContext.Quantization.PostTraining</c>: post-training quantization of a float ONNX model to INT8, INT4 or mixed
/// precision. Fit prepares the graph (BatchNormalization folded, Identity/Dropout removed, constants folded, opset 13
/// or 21, symbolic batch), calibrates on its rows unless a table is given, and writes the QDQ model; the transformer
/// scores with it.
/// </summary>
public sealed class PostTrainingEstimator : IEstimator<QuantizedModelTransformer>
{
    private readonly MLContext _context;
    private readonly PostTrainingOptions _options;
    private OnnxModelScoringEstimator? _floatScoring;

    internal PostTrainingEstimator(MLContext context, PostTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _context = context;
        _options = options;
    }

    /// <summary>Calibrates on <paramref name="input"/> (unless a table was given) and quantizes.</summary>
    public QuantizedModelTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        string name = _options.ModelName();
        // mlContext.Log messages and ML.NET's progress channel, one checkpoint per stage; calibration reports its rows itself.
        using var progress = new OperationProgress(_context, "QatMl.PostTraining", ["stages"]);
        void Stage(int done, string message)
        {
            progress.Report(0, done, Stages);
            progress.Checkpoint();
            progress.Info($"PostTraining '{name}' ({done}/{Stages}): {message}");
        }
        OnnxModel model = Prepare(_options, name);
        Stage(1, $"graph prepared ({model.Graph.Nodes.Count} nodes).");
        CalibrationTable table = _options.CalibrationTable ?? Calibrate(model, input);
        Stage(2, _options.CalibrationTable is null ? $"calibrated {table.Count} tensors." : $"using the given calibration table ({table.Count} tensors).");
        var keptFloat = new Dictionary<string, string>(StringComparer.Ordinal);
        Dictionary<string, QuantizationPrecision>? raised = null;
        Dictionary<string, float[]>? means = null;
        SensitivityReport? sensitivity = null;
        if (_options.AnalyzesSensitivity || _options.BiasCorrection || _options.SmoothQuant)
        {
            RowSample rows = RowSample.Load(_context, model, _options, input, name);
            if (_options.SmoothQuant)
            {
                float[][] reference;
                using (var floatRunner = new SampleRunner(_context, model.Clone(), 0, _options, name, rows))
                    reference = floatRunner.Run(null);
                var smooth = SmoothQuant.Apply(_context, model, table, _options, rows, name, reference);
                (model, table) = (smooth.Model, smooth.Table);
                foreach (var (node, why) in smooth.FloatNodes)
                    keptFloat[node] = why;
                progress.Info(smooth.Alpha is { } alpha
                    ? $"SmoothQuant: alpha {alpha} on {smooth.Smoothed} MatMul/Gemm weights ({smooth.Summary})."
                    : $"SmoothQuant: left unsmoothed ({smooth.Summary}).");
            }
            if (_options.BiasCorrection)
                means = BiasCorrection.InputMeans(_context, model, QdqPlan.Create(model.Clone(), table, _options, keptFloat), _options, rows, name);
            if (_options.AnalyzesSensitivity)
            {
                Dictionary<string, string> sensitive;
                (sensitive, raised, sensitivity) = SensitivityAnalysis.Run(_context, model, table, _options, rows, name, progress.Channel, keptFloat, means);
                foreach (var (node, why) in sensitive)
                    keptFloat[node] = why;
            }
        }
        IReadOnlyDictionary<string, QuantizedConstant>? learned = null;
        if (_options.AdaRound)
        {
            var adaRound = PostTraining.AdaRound.Learn(_context, model, table, _options, input, name, keptFloat, raised, means, progress.Channel);
            learned = adaRound.Weights;
            progress.Info(adaRound.Summary);
        }
        QdqResult result = QdqWriter.Write(QdqPlan.Create(model, table, _options, keptFloat, raised, means, learned));
        int quantized = result.Nodes.Count(n => n.Precision is not null);
        Stage(3, $"quantized {quantized} of {result.Nodes.Count} nodes.");
        foreach (var n in result.Nodes.Where(n => n.Precision is null))
            progress.Info($"Node '{n.Name}' ({n.OpType}) stays float: {n.Reason}.");
        var transformer = new QuantizedModelTransformer(_context, result.Model, _options.ToScoringSettings(), result.Nodes) { Sensitivity = sensitivity };
        try
        {
            transformer.GetOutputSchema(input.Schema);
        }
        catch
        {
            transformer.Dispose();
            throw;
        }
        Stage(Stages, $"the quantized model runs on {transformer.Backend}{(transformer.BackendFallbackReason is null ? "" : " (fall-back)")}.");
        return transformer;
    }

    /// <summary>Fit's stages on the progress channel: prepare, calibrate, quantize, load.</summary>
    private const int Stages = 4;

    /// <summary>The input schema plus the model's output columns (the float model's: quantization keeps them).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        _floatScoring ??= new OnnxModelScoringEstimator(_context, _options.ToScoringOptions(OnnxModelSource.ReadBytes(_options.ModelPath, _options.ModelBytes)));
        return _floatScoring.GetOutputSchema(inputSchema);
    }

    /// <summary>The graph PostTraining quantizes (and Calibrate with default options observes), read from the model <paramref name="options"/> name.</summary>
    internal static OnnxModel Prepare(PostTrainingOptions options, string name) => Prepare(options, name, OnnxModelSource.Load(options.ModelPath, options.ModelBytes));

    /// <summary>Prepares <paramref name="model"/> (changed in place; the result may be an opset-upgraded copy) the way Fit does.</summary>
    internal static OnnxModel Prepare(PostTrainingOptions options, string name, OnnxModel model)
    {
        // Structural problems (no op type, dangling inputs, cycles) named now, not after calibrating.
        OnnxValidator.Validate(model);
        if (IsAlreadyQuantized(model))
            throw new InvalidOperationException($"Model '{name}' is already quantized (it has QuantizeLinear, DequantizeLinear or QLinear nodes); PostTraining takes a float model.");
        OnnxRewrites.PrepareForQuantization(model);
        // Equalization changes the tensors between the layers, so a table calibrated without it would not fit them.
        if (options.CrossLayerEqualization && options.CalibrationTable is null)
            OnnxRewrites.EqualizeCrossLayers(model);
        if (model.DefaultOpset < 13)
            OnnxRewrites.UpgradeOpset(model, 13);
        // A pinned batch stays fixed; scoring then needs BatchSize equal to it and says so.
        model = OnnxRewrites.TryMakeBatchSymbolic(model, out _) ?? model;
        OnnxRewrites.AnnotateElementTypes(model);
        return model;
    }

    private static bool IsAlreadyQuantized(OnnxModel model)
        => model.Graph.Nodes.Any(n => n.OpType is "QuantizeLinear" or "DequantizeLinear" or "DynamicQuantizeLinear" || n.OpType.StartsWith("QLinear", StringComparison.Ordinal)
                                      || n.OpType is "ConvInteger" or "MatMulInteger" or "MatMulNBits");

    private CalibrationTable Calibrate(OnnxModel prepared, IDataView input)
        => ModelCalibrator.Run(_context, CalibrationOptions(_options), input, prepared).Table;

    /// <summary>
    /// How Fit calibrates its prepared graph (handed to <see cref="ModelCalibrator.Run(MLContext, CalibrationEstimatorOptions, IDataView, OnnxModel, IDictionary{string, TensorObserver})"/>
    /// as it is): every tensor the quantizer may touch, with the bindings and session settings of <paramref name="options"/>.
    /// </summary>
    internal static CalibrationEstimatorOptions CalibrationOptions(PostTrainingOptions options)
    {
        var calibration = new CalibrationEstimatorOptions
        {
            ModelPath = options.ModelPath,
            ModelBytes = options.ModelBytes,
            PrepareGraph = false,
            SampleCount = options.SampleCount,
            // Clipping methods (Percentile, Entropy, Mse, Auto) choose the range for the width the activations get: a 4-bit
            // tensor clips far more than an 8-bit one.
            Activations = new CalibrationOptions { Method = options.CalibrationMethod, Bits = Math.Clamp(options.Precision.ActivationBits, 2, 8) },
            WeightsPerChannel = options.WeightsPerChannel,
            IntraOpNumThreads = options.IntraOpNumThreads,
            BatchSize = options.BatchSize,
            GraphOptimization = options.GraphOptimization,
            Progress = options.Progress,
            CancellationToken = options.CancellationToken,
            ModelSource = options.ModelName(),
            InputsOption = options.InputsOptionName,
        };
        foreach (var b in options.Inputs) calibration.Inputs.Add(b);
        foreach (var kv in options.InputShapes) calibration.InputShapes[kv.Key] = kv.Value;
        foreach (var kv in options.TensorOverrides) calibration.TensorOverrides[kv.Key] = kv.Value;
        // Calibrate every tensor the quantizer may touch.
        foreach (string op in options.OpTypes) calibration.OpTypes.Add(op);
        return calibration;
    }
}

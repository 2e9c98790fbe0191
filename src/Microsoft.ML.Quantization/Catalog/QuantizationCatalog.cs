using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization;

/// <summary>
/// The entry point of QatMl, reached as <c>mlContext.Quantization</c>: calibration, post-training
/// quantization and quantization-aware training of ONNX models, each an ML.NET estimator.
/// </summary>
public sealed class QuantizationCatalog
{
    internal QuantizationCatalog(MLContext context)
    {
        Context = context;
    }

    /// <summary>The ML.NET context this catalog belongs to (its seed, log and GPU settings apply).</summary>
    internal MLContext Context { get; }

    /// <summary>
    /// Scores rows with a float ONNX model through ONNX Runtime, <paramref name="batchSize"/> rows per
    /// call: the building block calibration and quantization run on, usable alone.
    /// </summary>
    /// <param name="outputColumnNames">Columns to create, one per graph output of the same name (any intermediate tensor name works too).</param>
    /// <param name="inputColumnNames">Columns feeding the graph inputs of the same names (vectors of Single).</param>
    /// <param name="modelFile">Path of the ONNX model.</param>
    /// <param name="batchSize">Rows per ONNX Runtime call.</param>
    public OnnxModelScoringEstimator ScoreOnnxModel(string[] outputColumnNames, string[] inputColumnNames, string modelFile, int batchSize = 64)
    {
        ArgumentNullException.ThrowIfNull(outputColumnNames);
        ArgumentNullException.ThrowIfNull(inputColumnNames);
        var options = new OnnxModelScoringOptions { ModelPath = modelFile, BatchSize = batchSize };
        foreach (string name in inputColumnNames)
            options.Inputs.Add(new OnnxColumnBinding(name, name));
        foreach (string name in outputColumnNames)
            options.Outputs.Add(new OnnxColumnBinding(name, name));
        return new OnnxModelScoringEstimator(Context, options);
    }

    /// <summary>Scores rows with a float ONNX model through ONNX Runtime in batches, as configured by <paramref name="options"/>.</summary>
    public OnnxModelScoringEstimator ScoreOnnxModel(OnnxModelScoringOptions options) => new(Context, options);

    /// <summary>
    /// Calibrates a float ONNX model on representative rows: the ranges, scales and zero points of its activations
    /// (per tensor) and weights (per channel) in a <see cref="CalibrationTable"/>. Graph inputs are fed by the columns
    /// of the same names.
    /// </summary>
    /// <param name="modelFile">Path of the float ONNX model.</param>
    /// <param name="method">How activation ranges are chosen (weights use MinMax).</param>
    /// <param name="sampleCount">At most this many rows are read.</param>
    public CalibrationEstimator Calibrate(string modelFile, CalibrationMethod method = CalibrationMethod.MinMax, int sampleCount = CalibrationEstimatorOptions.DefaultSampleCount)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelFile);
        var options = new CalibrationEstimatorOptions
        {
            ModelPath = modelFile,
            SampleCount = sampleCount,
            Activations = new CalibrationOptions { Method = method },
        };
        return new CalibrationEstimator(Context, options);
    }

    /// <summary>Calibrates a float ONNX model on representative rows, as configured by <paramref name="options"/>.</summary>
    public CalibrationEstimator Calibrate(CalibrationEstimatorOptions options) => new(Context, options);

    /// <summary>
    /// Post-training quantization of a float ONNX model: Fit calibrates on its rows (MinMax) and writes a QDQ model
    /// with 8-bit per-channel weights and 8-bit activations (or <paramref name="weightBits"/>-bit weights).
    /// </summary>
    /// <param name="modelFile">Path of the float ONNX model.</param>
    /// <param name="weightBits">Weight width: 8 (default), 4, or 2 to 7.</param>
    /// <param name="sampleCount">Rows Fit calibrates on, at most.</param>
    public PostTrainingEstimator PostTraining(string modelFile, int weightBits = 8, int sampleCount = CalibrationEstimatorOptions.DefaultSampleCount)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelFile);
        return new PostTrainingEstimator(Context, new PostTrainingOptions
        {
            ModelPath = modelFile,
            SampleCount = sampleCount,
            Precision = new QuantizationPrecision(weightBits, 8),
        });
    }

    /// <summary>Post-training quantization of a float ONNX model, as configured by <paramref name="options"/>.</summary>
    public PostTrainingEstimator PostTraining(PostTrainingOptions options) => new(Context, options);

    /// <summary>
    /// Loads a model saved with <c>mlContext.Model.Save</c> and restores QatMl's transformers in it (scoring, calibration,
    /// quantized models) as their own types with every option they were saved with. A zip without QatMl entries loads
    /// as <c>mlContext.Model.Load</c> would.
    /// </summary>
    /// <param name="filePath">The model zip.</param>
    /// <param name="inputSchema">The input schema saved with the model.</param>
    public ITransformer LoadModel(string filePath, out DataViewSchema inputSchema)
        => ModelPersistence.Load(Context, filePath, out inputSchema);

    /// <summary>
    /// Compares a float ONNX model with its quantized version on the same rows: accuracy (with a label column), top-1
    /// agreement, cosine similarity and SQNR of the outputs, SQNR per quantized activation, model sizes and time, and a
    /// verdict against <see cref="ComparisonOptions.MaxAccuracyDrop"/>.
    /// </summary>
    /// <param name="floatModelFile">The float ONNX model the quantized one was made from.</param>
    /// <param name="quantized">The quantized transformer (PostTraining's, or restored by LoadModel).</param>
    /// <param name="data">Rows for both models (the quantized transformer's input columns).</param>
    /// <param name="options">What to compare; null for the defaults.</param>
    public QuantizationComparison Compare(string floatModelFile, QuantizedModelTransformer quantized, IDataView data, ComparisonOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(quantized);
        ArgumentNullException.ThrowIfNull(data);
        return QuantizationComparer.Compare(Context, floatModelFile, quantized, data, options ?? new ComparisonOptions());
    }

    /// <summary>
    /// An automatic quantization experiment (in the manner of ML.NET's AutoML): searches precisions, calibration, 8-bit,
    /// 16-bit and float nodes, SmoothQuant and AdaRound, guided by a sensitivity ranking, for the smallest model whose accuracy on the
    /// validation rows drops at most <paramref name="maxAccuracyDrop"/> points (with a label) or whose output cosine is at
    /// least 0.99 (without one). Run it with <see cref="Auto.AutoQuantizationExperiment.Execute"/>. Binary AUC, regression
    /// R-squared and the output SQNR: <see cref="Auto.AutoQuantizationOptions.Metric"/> through the options overload.
    /// </summary>
    /// <param name="modelFile">Path of the float ONNX model.</param>
    /// <param name="labelColumnName">The class label column of a multiclass model, or null to score by output cosine.</param>
    /// <param name="maxAccuracyDrop">The allowed loss of accuracy in percentage points (with a label).</param>
    /// <param name="maxTrials">Trials at most.</param>
    public Auto.AutoQuantizationExperiment Auto(string modelFile, string? labelColumnName = null, double maxAccuracyDrop = 0.5, int maxTrials = 20)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelFile);
        return new Auto.AutoQuantizationExperiment(Context, new Auto.AutoQuantizationOptions
        {
            PostTraining = new PostTrainingOptions { ModelPath = modelFile }, LabelColumnName = labelColumnName, MaxAccuracyDrop = maxAccuracyDrop, MaxTrials = maxTrials,
        });
    }

    /// <summary>An automatic quantization experiment, as configured by <paramref name="options"/> (checked here; the label column when it runs).</summary>
    public Auto.AutoQuantizationExperiment Auto(Auto.AutoQuantizationOptions options) => new(Context, options);

    /// <summary>
    /// Quantization-aware training: fine-tunes the float ONNX model on TorchSharp with fake quantization (INT8 by
    /// default), then exports the same QDQ model PostTraining writes.
    /// </summary>
    /// <param name="modelFile">Path of the float ONNX model.</param>
    /// <param name="labelColumnName">The class label column.</param>
    /// <param name="epochs">Training epochs.</param>
    public AwareTraining.AwareTrainingEstimator AwareTraining(string modelFile, string labelColumnName = "Label", int epochs = 2)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelFile);
        return new AwareTraining.AwareTrainingEstimator(Context, new AwareTraining.AwareTrainingOptions { ModelPath = modelFile, LabelColumnName = labelColumnName, Epochs = epochs });
    }

    /// <summary>Quantization-aware training, as configured by <paramref name="options"/>.</summary>
    public AwareTraining.AwareTrainingEstimator AwareTraining(AwareTraining.AwareTrainingOptions options) => new(Context, options);
}

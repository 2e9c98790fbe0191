using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// <c>mlContext.Quantization.AwareTraining</c>: quantization-aware fine-tuning on TorchSharp. Fit trains the float
/// ONNX model with fake quantization where the quantized model will quantize, then writes the trained weights and
/// ranges through the PostTraining writer: the result is the same QDQ model and transformer as PTQ's, with
/// <see cref="QuantizedModelTransformer.AwareTraining"/> saying what happened. With
/// <see cref="AwareTrainingOptions.MaxAccuracyDrop"/>, PTQ runs first and training only when PTQ misses the budget.
/// </summary>
public sealed class AwareTrainingEstimator : IEstimator<QuantizedModelTransformer>
{
    private readonly MLContext _context;
    private readonly AwareTrainingOptions _options;
    private OnnxModelScoringEstimator? _floatScoring;

    internal AwareTrainingEstimator(MLContext context, AwareTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _context = context;
        _options = options;
    }

    /// <summary>Trains on <paramref name="input"/> (features and label columns) and returns the quantized model.</summary>
    public QuantizedModelTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return AwareTrainer.Fit(_context, _options, input).Model;
    }

    /// <summary>The input schema plus the model's output columns.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (_floatScoring is null)
        {
            OnnxModel model = OnnxModelSource.Load(_options.ModelPath, _options.ModelBytes, _options.ModelName(), out byte[]? runnable);
            byte[] bytes = runnable ?? model.ToBytes();
            _floatScoring = new OnnxModelScoringEstimator(_context, _options.ToPostTraining(bytes, model.Graph.RuntimeInputs[0].Name).ToScoringOptions(bytes));
        }
        return _floatScoring.GetOutputSchema(inputSchema);
    }
}

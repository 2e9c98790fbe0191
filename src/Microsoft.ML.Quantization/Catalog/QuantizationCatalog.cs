using Microsoft.ML.Quantization.Inference;

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
    public OnnxScoringEstimator ScoreOnnxModel(string[] outputColumnNames, string[] inputColumnNames, string modelFile, int batchSize = 64)
    {
        ArgumentNullException.ThrowIfNull(outputColumnNames);
        ArgumentNullException.ThrowIfNull(inputColumnNames);
        var options = new OnnxScoringOptions { ModelPath = modelFile, BatchSize = batchSize };
        foreach (string name in inputColumnNames)
            options.Inputs.Add(new OnnxColumnBinding(name, name));
        foreach (string name in outputColumnNames)
            options.Outputs.Add(new OnnxColumnBinding(name, name));
        return new OnnxScoringEstimator(Context, options);
    }

    /// <summary>Scores rows with a float ONNX model through ONNX Runtime in batches, as configured by <paramref name="options"/>.</summary>
    public OnnxScoringEstimator ScoreOnnxModel(OnnxScoringOptions options) => new(Context, options);
}

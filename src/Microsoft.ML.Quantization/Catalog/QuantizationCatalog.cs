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
}

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Estimator for <see cref="OnnxScoringTransformer"/>: batched float inference of an ONNX model over an
/// IDataView. Fit trains nothing; it opens the session and checks the input columns.
/// </summary>
public sealed class OnnxScoringEstimator : IEstimator<OnnxScoringTransformer>
{
    private readonly MLContext _context;
    private readonly OnnxScoringOptions _options;
    private (InputSpec[] Inputs, OutputSpec[] Outputs)? _specs;

    internal OnnxScoringEstimator(MLContext context, OnnxScoringOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.ModelPath is null && options.ModelBytes is null)
            throw new ArgumentException("Set OnnxScoringOptions.ModelPath or ModelBytes.", nameof(options));
        options.Validate();
        _context = context;
        _options = options;
    }

    /// <summary>Opens the model and checks <paramref name="input"/>'s columns against its inputs.</summary>
    public OnnxScoringTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var transformer = new OnnxScoringTransformer(_context, _options);
        try
        {
            transformer.GetOutputSchema(input.Schema);
        }
        catch
        {
            transformer.Dispose();
            throw;
        }
        return transformer;
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        // The output shape depends on the model: open it once, keep its description, close it.
        if (_specs is null)
        {
            using var probe = new OnnxScoringTransformer(_context, _options);
            _specs = (probe.Scorer.Inputs, probe.Scorer.Outputs);
        }
        return OrtBatchScorer.GetOutputShape(_specs.Value.Inputs, _specs.Value.Outputs, inputSchema, nameof(inputSchema));
    }
}

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Estimator for <see cref="OnnxModelScoringTransformer"/>: batched float inference of an ONNX model over an
/// IDataView. Fit trains nothing; it opens the session and checks the input columns.
/// </summary>
public sealed class OnnxModelScoringEstimator : IEstimator<OnnxModelScoringTransformer>
{
    private readonly MLContext _context;
    private readonly OnnxModelScoringOptions _options;
    private (InputSpec[] Inputs, OutputSpec[] Outputs)? _specs;

    internal OnnxModelScoringEstimator(MLContext context, OnnxModelScoringOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _context = context;
        _options = options;
    }

    /// <summary>Opens the model and checks <paramref name="input"/>'s columns against its inputs.</summary>
    public OnnxModelScoringTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var transformer = new OnnxModelScoringTransformer(_context, _options);
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
            using var probe = new OnnxModelScoringTransformer(_context, _options);
            _specs = (probe.Scorer.Inputs, probe.Scorer.Outputs);
        }
        return OrtBatchScorer.GetOutputShape(_specs.Value.Inputs, _specs.Value.Outputs, inputSchema, nameof(inputSchema), _options.InputsOptionName);
    }
}

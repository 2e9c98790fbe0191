using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Scores an IDataView with a float ONNX model through ONNX Runtime, many rows per call. Lazy like
/// every ML.NET transform; cursors and parallel cursors share one session. Created by
/// <see cref="OnnxModelScoringEstimator"/> or <see cref="QuantizationCatalog.ScoreOnnxModel(OnnxModelScoringOptions)"/>.
/// <see cref="Dispose"/> while cursors score does not wait: batches already running finish (the session is freed
/// after the last), and any later batch, <see cref="Transform"/> or save throws <see cref="ObjectDisposedException"/>.
/// </summary>
public sealed class OnnxModelScoringTransformer : ITransformer, IDisposable
{
    private readonly OrtBatchScorer _scorer;

    /// <param name="context">The ML.NET context.</param>
    /// <param name="options">What to run and how.</param>
    /// <param name="ownerName">The public type a use after Dispose names (a QuantizedModelTransformer runs its model through this type).</param>
    /// <param name="parsed">
    /// <paramref name="options"/>' <see cref="OnnxModelOptions.ModelBytes"/> as the caller holds them parsed (not changed here), or
    /// null to read the model the options name.
    /// </param>
    internal OnnxModelScoringTransformer(MLContext context, OnnxModelScoringOptions options, string ownerName = nameof(OnnxModelScoringTransformer),
        OnnxModel? parsed = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Context = context;
        ModelName = options.ModelName();
        InputsOption = options.InputsOptionName;
        byte[]? runnable = options.ModelBytes;
        OnnxModel model = parsed ?? OnnxModelSource.Load(options.ModelPath, options.ModelBytes, ModelName, out runnable);
        OnnxModel scored = OnnxModelSource.PrepareForScoring(model, options.Outputs.Select(o => o.TensorName), options.BatchSize, ModelName, options.InputShapes);
        ModelBytes = ReferenceEquals(scored, model) && runnable is not null ? runnable : scored.ToBytes();
        Options = new OnnxModelScoringOptions { ModelPath = options.ModelPath };
        options.CopyTo(Options);
        foreach (OnnxColumnBinding b in options.Inputs) Options.Inputs.Add(b);
        foreach (OnnxColumnBinding b in options.Outputs) Options.Outputs.Add(b);
        foreach (var kv in options.InputShapes) Options.InputShapes[kv.Key] = kv.Value;

        OrtSessionFactory.Result session = OrtSessionFactory.Create(context, ModelBytes, options, ModelName);
        try
        {
            var (inputs, outputs, fixedBatch) = OrtBatchScorer.Describe(session.Session, ModelName, options.Inputs, options.Outputs, options.InputShapes, options.BatchSize);
            BatchScorerSchema.CheckBatchCapacity(inputs, outputs, options.BatchSize, ModelName);
            _scorer = new OrtBatchScorer(session.Session, session.Provider, inputs, outputs, options.BatchSize, fixedBatch, ownerName);
        }
        catch
        {
            session.Session.Dispose();
            throw;
        }
    }

    internal MLContext Context { get; }

    internal string ModelName { get; }

    /// <summary>The option a missing input column's error names (the options this model's bindings came from).</summary>
    internal string InputsOption { get; }

    /// <summary>The ONNX bytes the session runs (the input model, plus graph outputs for requested intermediate tensors).</summary>
    internal byte[] ModelBytes { get; }

    internal OrtBatchScorer Scorer => _scorer;

    /// <summary>The options this transformer was created with (a copy).</summary>
    public OnnxModelScoringOptions Options { get; }

    /// <summary>The execution provider that actually runs the model (CPU after a fall-back).</summary>
    public OnnxExecutionProvider ExecutionProvider => _scorer.Provider;

    /// <summary>Names of the columns this transformer adds, in order.</summary>
    public IReadOnlyList<string> OutputColumnNames => _scorer.Outputs.Select(o => o.ColumnName).ToArray();

    /// <summary>Names of the columns this transformer reads.</summary>
    public IReadOnlyList<string> InputColumnNames => _scorer.Inputs.Select(i => i.ColumnName).ToArray();

    bool ITransformer.IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        _scorer.ValidateInputSchema(inputSchema, nameof(inputSchema), InputsOption);
        return BatchScorerSchema.OutputSchema(inputSchema, _scorer.Outputs);
    }

    /// <summary>Returns a lazy view: the model runs when a cursor reads an output column.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        _scorer.ThrowIfDisposed();
        _scorer.ValidateInputSchema(input.Schema, nameof(input), InputsOption);
        return new BatchScoringDataView(input, _scorer);
    }

    /// <summary>One row per model run over the same session (PredictionEngine); the schema is checked here, not per row.</summary>
    IRowToRowMapper ITransformer.GetRowToRowMapper(DataViewSchema inputSchema)
    {
        _scorer.ThrowIfDisposed();
        return new ScoringRowMapper(_scorer, inputSchema, GetOutputSchema(inputSchema));
    }

    /// <summary>Saves as ML.NET's OnnxTransformer over the same bytes plus these options (restored by <c>mlContext.Quantization.LoadModel</c>).</summary>
    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        _scorer.ThrowIfDisposed();
        ModelSaving.SaveOnnx(ctx, Context, this, ModelSaving.ScoringEntry,
            System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(ScoringSettings.From(Options), ModelSaving.JsonOptions));
    }

    /// <summary>Releases the ONNX Runtime session (after the batches running on it, if any).</summary>
    public void Dispose() => _scorer.Dispose();

}

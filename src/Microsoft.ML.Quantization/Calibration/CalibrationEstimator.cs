using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// <c>mlContext.Quantization.Calibrate</c>: runs a float ONNX model over representative rows and records the
/// ranges of its activations and weights in a <see cref="CalibrationTable"/>. Fit reads up to
/// <see cref="CalibrationEstimatorOptions.SampleCount"/> rows in one pass; the transformer carries the table and
/// passes rows through unchanged.
/// </summary>
public sealed class CalibrationEstimator : IEstimator<CalibrationTransformer>
{
    private readonly MLContext _context;
    private readonly CalibrationEstimatorOptions _options;
    private InputSpec[]? _inputs;

    internal CalibrationEstimator(MLContext context, CalibrationEstimatorOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _context = context;
        _options = options;
    }

    /// <summary>Calibrates on <paramref name="input"/>. Throws for schema mismatches before reading any row.</summary>
    public CalibrationTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        CalibrationRun run = ModelCalibrator.Run(_context, _options, input);
        return new CalibrationTransformer(run.Table, run.RowsObserved, run.InputColumns);
    }

    /// <summary>The input schema unchanged, after checking the model's input columns are there and are float vectors.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (_inputs is null)
        {
            using var probe = new OnnxModelScoringTransformer(_context, _options.ToScoringOptions());
            _inputs = probe.Scorer.Inputs;
        }
        return OrtBatchScorer.GetOutputShape(_inputs, [], inputSchema, nameof(inputSchema), _options.InputsOptionName);
    }
}

/// <summary>
/// The result of <see cref="CalibrationEstimator"/>: the <see cref="Table"/>. As a transform it passes rows
/// through unchanged, so calibration can sit in a pipeline before the steps that use the table.
/// </summary>
public sealed class CalibrationTransformer : ITransformer
{
    private readonly IReadOnlyList<InputColumn> _inputs;

    internal CalibrationTransformer(CalibrationTable table, long rowsObserved, IReadOnlyList<InputColumn> inputs)
    {
        Table = table;
        RowsObserved = rowsObserved;
        _inputs = inputs;
    }

    /// <summary>The columns the model read while calibrating: inputs must still have them.</summary>
    private void Validate(DataViewSchema schema, string paramName)
    {
        foreach (var input in _inputs)
        {
            DataViewSchema.Column? column = schema.GetColumnOrNull(input.Name);
            if (column is null)
                throw SchemaErrors.MissingColumn(paramName, input.Name, schema, $"Calibration read this column; {nameof(CalibrationTransformer)} passes rows through only when they still have it.");
            var itemType = Inference.BatchScorerSchema.ItemType(input.ElementType);
            if (column.Value.Type is not VectorDataViewType v || !v.ItemType.Equals(itemType) || (v.Size != 0 && v.Size != input.Size))
                throw SchemaErrors.Mismatch(paramName, input.Name, $"Vector<{itemType}, {input.Size}>", SchemaShapes.Describe(column.Value.Type));
        }
    }

    /// <summary>The calibrated ranges, scales and zero points, per tensor.</summary>
    public CalibrationTable Table { get; }

    /// <summary>How many rows calibration read.</summary>
    public long RowsObserved { get; }

    /// <summary>Tensors that had NaN or infinite values (left out of their ranges), with their counts.</summary>
    public IReadOnlyDictionary<string, long> NonFiniteCounts
        => Table.Where(e => e.NonFiniteCount > 0).ToDictionary(e => e.TensorName, e => e.NonFiniteCount);

    bool ITransformer.IsRowToRowMapper => true;

    /// <summary>Returns <paramref name="inputSchema"/>: calibration adds no columns.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        Validate(inputSchema, nameof(inputSchema));
        return inputSchema;
    }

    /// <summary>Returns <paramref name="input"/> itself: rows pass through unchanged.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        Validate(input.Schema, nameof(input));
        return input;
    }

    /// <summary>The identity on rows of <paramref name="inputSchema"/> (checked here): PredictionEngine passes through it.</summary>
    IRowToRowMapper ITransformer.GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        Validate(inputSchema, nameof(inputSchema));
        return new PassThroughRowMapper(inputSchema);
    }

    /// <summary>Saves as an empty (pass-through) TransformerChain plus the table (restored by <c>mlContext.Quantization.LoadModel</c>).</summary>
    void ICanSaveModel.Save(ModelSaveContext ctx)
        => ModelSaving.SavePassThrough(ctx, ModelSaving.CalibrationEntry,
            System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new SavedState(Table.ToJson(), RowsObserved, [.. _inputs]), ModelSaving.JsonOptions));

    internal sealed record SavedState(string Table, long RowsObserved, List<InputColumn> Inputs);
}

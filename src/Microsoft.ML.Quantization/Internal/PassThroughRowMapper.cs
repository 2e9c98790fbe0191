namespace Microsoft.ML.Quantization.Internal;

/// <summary>The row mapper of a transformer that adds no columns: rows come back as they are (their schema is the output schema).</summary>
internal sealed class PassThroughRowMapper(DataViewSchema schema) : IRowToRowMapper
{
    public DataViewSchema InputSchema { get; } = schema;

    public DataViewSchema OutputSchema => InputSchema;

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns) => dependingColumns;

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(activeColumns);
        if (input.Schema != InputSchema)
            throw new ArgumentException("The row's schema is not the one this mapper was created for (GetRowToRowMapper's inputSchema).", nameof(input));
        foreach (DataViewSchema.Column c in activeColumns)
            if (!input.IsColumnActive(c))
                throw new ArgumentException($"Column '{c.Name}' is asked for but not active in the input row.", nameof(input));
        return input;
    }
}

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// What <see cref="BatchScoringDataView"/> needs from a backend: the tensors it reads and writes, and staging buffers
/// per cursor that run one batch at a time. ONNX Runtime (<see cref="OrtBatchScorer"/>) and the native INT8 engine
/// (<see cref="NativeEngine.NativeBatchScorer"/>) implement it; the cursor machinery is shared.
/// </summary>
internal interface IBatchScorer
{
    InputSpec[] Inputs { get; }

    OutputSpec[] Outputs { get; }

    /// <summary>Rows per run.</summary>
    int BatchSize { get; }

    /// <summary>Staging buffers for <paramref name="capacity"/> rows computing the active outputs (a cursor's batch, or one row for a row mapper).</summary>
    IScoringBatch CreateBatch(bool[] outputActive, int capacity);
}

/// <summary>One cursor's staging buffers: fill rows, run, read row-major outputs.</summary>
internal interface IScoringBatch : IDisposable
{
    /// <summary>Copies one row of input <paramref name="input"/> into slot <paramref name="slot"/>.</summary>
    void SetRow(int input, int slot, in VBuffer<float> row, long rowIndex);

    /// <summary>Runs the first <paramref name="rows"/> slots.</summary>
    void Run(int rows);

    /// <summary>Row-major [capacity, rowSize] staging per input (what <see cref="SetRow"/> fills).</summary>
    float[][] InputBuffers { get; }

    /// <summary>Row-major [rows, rowSize] results per output (null for inactive outputs).</summary>
    float[][] OutputBuffers { get; }

    /// <summary>Per-row element count of each output.</summary>
    int[] OutputRowSizes { get; }
}

/// <summary>Shared checks and row copies of the batch scorers.</summary>
internal static class BatchScorerSchema
{
    /// <summary>
    /// Checks the input columns against the schema, with ML.NET-shaped errors; a missing column's error lists the columns
    /// present and names <paramref name="inputsOption"/>, the option that binds the model's inputs to columns.
    /// </summary>
    internal static void ValidateInputSchema(InputSpec[] inputs, DataViewSchema schema, string paramName, string inputsOption)
    {
        foreach (InputSpec input in inputs)
        {
            DataViewSchema.Column? column = schema.GetColumnOrNull(input.ColumnName);
            if (column is null)
                throw Internal.SchemaErrors.MissingColumn(paramName, input.ColumnName, schema, Internal.SchemaErrors.InputsHint(inputsOption, input.ColumnName, input.TensorName));
            string expected = $"Vector<Single, {input.RowSize}>";
            if (column.Value.Type is not VectorDataViewType vector || vector.ItemType != NumberDataViewType.Single)
                throw Internal.SchemaErrors.Mismatch(paramName, input.ColumnName, expected, Internal.SchemaShapes.Describe(column.Value.Type));
            if (vector.Size != 0 && vector.Size != input.RowSize)
                throw Internal.SchemaErrors.Mismatch(paramName, input.ColumnName, expected, Internal.SchemaShapes.Describe(column.Value.Type));
        }
    }

    /// <summary>Whether a row of these (positive) dims fits in one array: the product, computed without overflow.</summary>
    internal static bool RowFitsOneBuffer(IEnumerable<int> dims)
    {
        long values = 1;
        foreach (int d in dims)
            values = Math.Min(values * d, Array.MaxLength + 1L); // clamped: the product never overflows
        return values <= Array.MaxLength;
    }

    /// <summary>Refuses a batch whose staging buffer for some input or fixed-shape output would not fit in one array.</summary>
    internal static void CheckBatchCapacity(InputSpec[] inputs, OutputSpec[] outputs, int batchSize, string modelName)
    {
        foreach (var (name, rowSize) in inputs.Select(i => (i.TensorName, i.RowSize)).Concat(outputs.Select(o => (o.TensorName, o.RowSize))))
            if ((long)rowSize * batchSize > Array.MaxLength)
                throw new ArgumentOutOfRangeException("BatchSize", batchSize,
                    $"Model '{modelName}': BatchSize {batchSize} x {rowSize} values per row of tensor '{name}' is more than one buffer holds ({Array.MaxLength}); use a smaller BatchSize.");
    }

    /// <summary>A scoring transform's output schema: the input's columns, then one vector column per scored tensor.</summary>
    internal static DataViewSchema OutputSchema(DataViewSchema input, OutputSpec[] outputs)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(input);
        foreach (OutputSpec o in outputs)
            builder.AddColumn(o.ColumnName, OutputType(o));
        return builder.ToSchema();
    }

    internal static DataViewType OutputType(OutputSpec output)
        => output.RowDims is null
            ? new VectorDataViewType(NumberDataViewType.Single)
            : new VectorDataViewType(NumberDataViewType.Single, output.RowSize);

    /// <summary>Copies a row into its slot; a row of the wrong size is an error naming the column and <paramref name="rowIndex"/>.</summary>
    internal static void CopyRow(InputSpec spec, in VBuffer<float> row, Span<float> target, long rowIndex)
    {
        if (row.Length != spec.RowSize)
            throw new InvalidOperationException(
                $"Column '{spec.ColumnName}' row {rowIndex} has {row.Length} values, but input '{spec.TensorName}' takes {spec.RowSize} per row.");
        if (row.IsDense)
        {
            row.GetValues().CopyTo(target);
            return;
        }
        target.Clear();
        ReadOnlySpan<float> values = row.GetValues();
        ReadOnlySpan<int> indices = row.GetIndices();
        for (int i = 0; i < values.Length; i++)
            target[indices[i]] = values[i];
    }
}

using Microsoft.ML.OnnxRuntime.Tensors;

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
    /// <summary>Copies one row of input <paramref name="input"/> into slot <paramref name="slot"/>; <typeparamref name="T"/> is the input's element type.</summary>
    void SetRow<T>(int input, int slot, in VBuffer<T> row, long rowIndex)
        where T : unmanaged;

    /// <summary>Runs the first <paramref name="rows"/> slots.</summary>
    void Run(int rows);

    /// <summary>Row-major [capacity, rowSize] staging per float input (what <see cref="SetRow"/> fills; empty for other types).</summary>
    float[][] InputBuffers { get; }

    /// <summary>Row-major [rows, rowSize] results per output (null for inactive outputs).</summary>
    float[][] OutputBuffers { get; }

    /// <summary>Per-row element count of each output.</summary>
    int[] OutputRowSizes { get; }
}

/// <summary>Reads the current row of one input column into a batch slot.</summary>
internal delegate void InputReader(IScoringBatch batch, int slot, long rowIndex);

/// <summary>Shared checks and row copies of the batch scorers.</summary>
internal static class BatchScorerSchema
{
    /// <summary>Graph input types a column can feed: float features, Int64/Int32 token ids, Bool masks.</summary>
    internal static bool IsSupportedInputType(TensorElementType type)
        => type is TensorElementType.Float or TensorElementType.Int64 or TensorElementType.Int32 or TensorElementType.Bool;

    /// <summary>The ML.NET item type of the vector column that feeds an input of <paramref name="type"/>.</summary>
    internal static PrimitiveDataViewType ItemType(TensorElementType type) => type switch
    {
        TensorElementType.Float => NumberDataViewType.Single,
        TensorElementType.Int64 => NumberDataViewType.Int64,
        TensorElementType.Int32 => NumberDataViewType.Int32,
        TensorElementType.Bool => BooleanDataViewType.Instance,
        _ => throw new NotSupportedException($"Inputs of type {type} cannot be read from a column."),
    };

    /// <summary>The column type an input needs, as the schema errors write it.</summary>
    internal static string Expected(InputSpec input) => $"Vector<{ItemType(input.ElementType)}, {input.RowSize}>";

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
            if (column.Value.Type is not VectorDataViewType vector || !vector.ItemType.Equals(ItemType(input.ElementType)))
                throw Internal.SchemaErrors.Mismatch(paramName, input.ColumnName, Expected(input), Internal.SchemaShapes.Describe(column.Value.Type));
            if (vector.Size != 0 && vector.Size != input.RowSize)
                throw Internal.SchemaErrors.Mismatch(paramName, input.ColumnName, Expected(input), Internal.SchemaShapes.Describe(column.Value.Type));
        }
    }

    /// <summary>The array type of an input's staging (float[], long[], int[], bool[]).</summary>
    internal static Type BufferType(TensorElementType type) => type switch
    {
        TensorElementType.Float => typeof(float[]),
        TensorElementType.Int64 => typeof(long[]),
        TensorElementType.Int32 => typeof(int[]),
        TensorElementType.Bool => typeof(bool[]),
        _ => throw new NotSupportedException($"Inputs of type {type} cannot be read from a column."),
    };

    /// <summary>Staging for <paramref name="rows"/> rows of an input, typed as the input.</summary>
    internal static Array CreateInputBuffer(InputSpec input, int rows)
    {
        int length = checked(input.RowSize * rows);
        return input.ElementType switch
        {
            TensorElementType.Float => new float[length],
            TensorElementType.Int64 => new long[length],
            TensorElementType.Int32 => new int[length],
            TensorElementType.Bool => new bool[length],
            _ => throw new NotSupportedException($"Input '{input.TensorName}' is {input.ElementType}; inputs can be Float, Int64, Int32 or Bool."),
        };
    }

    /// <summary>A reader of <paramref name="column"/> on <paramref name="row"/> into input <paramref name="input"/> of a batch.</summary>
    internal static InputReader CreateReader(DataViewRow row, DataViewSchema.Column column, InputSpec spec, int input) => spec.ElementType switch
    {
        TensorElementType.Float => Reader<float>(row, column, input),
        TensorElementType.Int64 => Reader<long>(row, column, input),
        TensorElementType.Int32 => Reader<int>(row, column, input),
        TensorElementType.Bool => Reader<bool>(row, column, input),
        _ => throw new NotSupportedException($"Input '{spec.TensorName}' is {spec.ElementType}; inputs can be Float, Int64, Int32 or Bool."),
    };

    private static InputReader Reader<T>(DataViewRow row, DataViewSchema.Column column, int input)
        where T : unmanaged
    {
        ValueGetter<VBuffer<T>> getter = row.GetGetter<VBuffer<T>>(column);
        VBuffer<T> value = default;
        return (batch, slot, rowIndex) =>
        {
            getter(ref value);
            batch.SetRow(input, slot, value, rowIndex);
        };
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
    internal static void CopyRow<T>(InputSpec spec, in VBuffer<T> row, Span<T> target, long rowIndex)
        where T : unmanaged
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
        ReadOnlySpan<T> values = row.GetValues();
        ReadOnlySpan<int> indices = row.GetIndices();
        for (int i = 0; i < values.Length; i++)
            target[indices[i]] = values[i];
    }
}

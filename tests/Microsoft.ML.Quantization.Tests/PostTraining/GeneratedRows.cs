using Microsoft.ML.Data;

namespace Microsoft.ML.Quantization.Tests.PostTraining;

/// <summary>Rows for generated test models: one float vector column "x" of the given per-row shape.</summary>
internal static class GeneratedRows
{
    public static IDataView View(MLContext context, IEnumerable<float[]> rows, int[] rowDims)
    {
        var definition = SchemaDefinition.Create(typeof(Row));
        var column = definition["X"];
        column.ColumnName = "x";
        column.ColumnType = new VectorDataViewType(NumberDataViewType.Single, rowDims);
        return context.Data.LoadFromEnumerable(rows.Select(x => new Row { X = x }), definition);
    }

    private sealed class Row
    {
        public float[] X { get; set; } = [];
    }
}

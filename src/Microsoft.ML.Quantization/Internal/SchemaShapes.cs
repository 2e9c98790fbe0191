using System.Runtime.CompilerServices;
using static Microsoft.ML.SchemaShape.Column;

namespace Microsoft.ML.Quantization.Internal;

/// <summary>
/// Builds <see cref="SchemaShape.Column"/> values. Their constructor is internal to ML.NET
/// (dotnet/machinelearning#3243, by design), so estimators outside ML.NET reach it through an
/// <see cref="UnsafeAccessorAttribute"/>: no reflection cost, and a missing member fails loudly.
/// </summary>
internal static class SchemaShapes
{
    [UnsafeAccessor(UnsafeAccessorKind.Constructor)]
    private static extern SchemaShape.Column NewColumn(string name, VectorKind vecKind, DataViewType itemType, bool isKey, SchemaShape? annotations);

    [UnsafeAccessor(UnsafeAccessorKind.StaticMethod, Name = "Create")]
    private static extern SchemaShape CreateShape(SchemaShape? declaringType, DataViewSchema schema);

    /// <summary>The estimator-level shape of a schema (ML.NET's internal SchemaShape.Create).</summary>
    internal static SchemaShape FromSchema(DataViewSchema schema) => CreateShape(null, schema);

    internal static SchemaShape.Column Vector(string name, DataViewType itemType, bool variableSize)
        => NewColumn(name, variableSize ? VectorKind.VariableVector : VectorKind.Vector, itemType, false, null);

    internal static SchemaShape.Column Scalar(string name, DataViewType itemType)
        => NewColumn(name, VectorKind.Scalar, itemType, false, null);

    /// <summary>Replaces (or appends) columns by name, as an ML.NET transform's output shape does.</summary>
    internal static SchemaShape With(SchemaShape input, IEnumerable<SchemaShape.Column> added)
    {
        var columns = input.ToDictionary(c => c.Name);
        foreach (SchemaShape.Column c in added)
            columns[c.Name] = c;
        return new SchemaShape(columns.Values);
    }

    /// <summary>ML.NET's spelling of a column type in schema errors, e.g. "Vector&lt;Single, 784&gt;".</summary>
    internal static string Describe(SchemaShape.Column column)
    {
        string item = column.ItemType.RawType.Name;
        return column.Kind switch
        {
            VectorKind.Scalar => item,
            VectorKind.Vector => $"Vector<{item}, known size>",
            _ => $"Vector<{item}>",
        };
    }

    internal static string Describe(DataViewType type) => type switch
    {
        VectorDataViewType v when v.Size > 0 => $"Vector<{v.ItemType.RawType.Name}, {string.Join(", ", v.Dimensions)}>",
        VectorDataViewType v => $"Vector<{v.ItemType.RawType.Name}>",
        _ => type.RawType.Name,
    };
}

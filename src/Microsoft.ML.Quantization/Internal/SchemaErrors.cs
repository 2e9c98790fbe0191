namespace Microsoft.ML.Quantization.Internal;

/// <summary>
/// Schema errors worded like ML.NET's own, so users recognise them; a missing column also lists the columns the data has
/// and says which option binds the column.
/// </summary>
internal static class SchemaErrors
{
    /// <summary>Columns listed in a message before it says how many more there are.</summary>
    private const int ListedColumns = 20;

    /// <param name="paramName">The argument that holds the data (or schema).</param>
    /// <param name="column">The column that is missing.</param>
    /// <param name="present">The data's (visible) column names.</param>
    /// <param name="hint">What to set to read another column, e.g. from <see cref="InputsHint"/>.</param>
    internal static ArgumentOutOfRangeException MissingColumn(string paramName, string column, IEnumerable<string> present, string? hint)
    {
        var names = present.Distinct(StringComparer.Ordinal).ToList();
        string listed = names.Count == 0
            ? "the data has no columns"
            : "the data has " + string.Join(", ", names.Take(ListedColumns).Select(n => $"'{n}'"))
              + (names.Count > ListedColumns ? $" and {names.Count - ListedColumns} more" : "");
        return new(paramName, $"Could not find input column '{column}' ({listed}).{(hint is null ? "" : " " + hint)}");
    }

    internal static ArgumentOutOfRangeException MissingColumn(string paramName, string column, DataViewSchema schema, string? hint)
        => MissingColumn(paramName, column, schema.Where(c => !c.IsHidden).Select(c => c.Name), hint);

    internal static ArgumentOutOfRangeException MissingColumn(string paramName, string column, SchemaShape shape, string? hint)
        => MissingColumn(paramName, column, shape.Select(c => c.Name), hint);

    /// <summary>
    /// How a model input gets its column: by default the column named like the input; another through
    /// <paramref name="inputsOption"/> (an options class's Inputs, e.g. "PostTrainingOptions.Inputs", or a column-name
    /// option such as "AwareTrainingOptions.FeatureColumnName").
    /// </summary>
    internal static string InputsHint(string inputsOption, string column, string tensor)
    {
        bool bindings = inputsOption.EndsWith(".Inputs", StringComparison.Ordinal);
        if (column != tensor)
            return $"{inputsOption} binds model input '{tensor}' to this column.";
        return bindings
            ? $"Model input '{tensor}' reads the column of the same name; to read another column, bind it in {inputsOption}, e.g. new OnnxColumnBinding(\"Features\", \"{tensor}\")."
            : $"Model input '{tensor}' reads the column of the same name; set {inputsOption} to read another.";
    }

    internal static ArgumentOutOfRangeException Mismatch(string paramName, string column, string expected, string got)
        => new(paramName, $"Schema mismatch for input column '{column}': expected {expected}, got {got}");
}

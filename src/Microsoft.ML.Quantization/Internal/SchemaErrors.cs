namespace Microsoft.ML.Quantization.Internal;

/// <summary>Schema errors worded like ML.NET's own, so users recognise them.</summary>
internal static class SchemaErrors
{
    internal static ArgumentOutOfRangeException MissingColumn(string paramName, string column)
        => new(paramName, $"Could not find input column '{column}'");

    internal static ArgumentOutOfRangeException Mismatch(string paramName, string column, string expected, string got)
        => new(paramName, $"Schema mismatch for input column '{column}': expected {expected}, got {got}");
}

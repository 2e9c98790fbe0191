using System.Globalization;

namespace QatMl.Tool.Cli;

/// <summary>Small shared helpers: culture-invariant formatting and a synchronous IProgress.</summary>
internal static class Invariant
{
    /// <summary>Formats with the invariant culture (figures read the same on every machine).</summary>
    public static string F(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}

/// <summary>A synchronous IProgress (System.Progress posts to the thread pool and can report after a step ended).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace QatMl.Tool.Quantize;

/// <summary>One timing: the best pass over a fixed set of rows.</summary>
internal sealed record LatencyResult(string Backend, int Rows, int BatchSize, int Threads, TimeSpan BestPass)
{
    public double MillisecondsPerRow => BestPass.TotalMilliseconds / Rows;

    public double RowsPerSecond => Rows / BestPass.TotalSeconds;
}

/// <summary>Times a transformer: one warm-up pass, then the best of <c>repeats</c> passes reading one output column.</summary>
internal static class Latency
{
    public static TimeSpan BestPass(ITransformer transformer, IDataView rows, string outputColumn, int repeats, CancellationToken cancel, TimeSpan? budget = null)
    {
        Consume(transformer.Transform(rows), outputColumn, cancel);
        var best = TimeSpan.MaxValue;
        var total = Stopwatch.StartNew();
        for (int i = 0; i < Math.Max(1, repeats); i++)
        {
            var clock = Stopwatch.StartNew();
            Consume(transformer.Transform(rows), outputColumn, cancel);
            if (clock.Elapsed < best)
                best = clock.Elapsed;
            if (budget is { } b && total.Elapsed > b)
                break;
        }
        return best;
    }

    private static void Consume(IDataView view, string column, CancellationToken cancel)
    {
        var c = view.Schema[column];
        using var cursor = view.GetRowCursor([c]);
        var getter = cursor.GetGetter<VBuffer<float>>(c);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            cancel.ThrowIfCancellationRequested();
            getter(ref value);
        }
    }
}

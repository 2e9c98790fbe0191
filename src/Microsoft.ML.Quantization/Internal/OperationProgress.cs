using Microsoft.ML.Runtime;

namespace Microsoft.ML.Quantization.Internal;

/// <summary>
/// How a long QatMl operation (calibration, PostTraining, Compare, AwareTraining) reports through ML.NET's own channels,
/// as ML.NET's trainers do: messages on <c>mlContext.Log</c> (an <see cref="IChannel"/> named after the operation) and a
/// progress channel (<see cref="IProgressChannelProvider.StartProgressChannel"/>) whose entry a host pulls whenever it
/// wants (the units done and planned, and metrics), plus a checkpoint at each coarse step. The caller's own
/// <see cref="IProgress{T}"/> stays the operation's business. Checkpoints queue in the environment until someone reads
/// them, so they are pushed per epoch or stage, never per batch; fine-grained progress is the pulled entry.
/// </summary>
internal sealed class OperationProgress : IDisposable
{
    /// <summary>Progress messages on the log: one each time the work crosses another tenth.</summary>
    private const int LoggedSteps = 10;

    private readonly IChannel _log;
    private readonly IProgressChannel _progress;
    private readonly object _lock = new();
    private readonly double[] _done;
    private readonly double?[] _planned;
    private readonly double?[] _metrics;
    private int _loggedStep;

    /// <param name="context">The ML.NET context whose log and progress tracker receive the reports.</param>
    /// <param name="name">The operation, as channels are named ("QatMl.Calibrate").</param>
    /// <param name="units">Progress units, least granular first ("epochs", "steps"; lower case, plural: ML.NET's convention).</param>
    /// <param name="metrics">Metric names ("Loss"; title case).</param>
    internal OperationProgress(MLContext context, string name, string[] units, string[]? metrics = null)
    {
        _log = ((IChannelProvider)context).Start(name);
        _progress = ((IProgressChannelProvider)context).StartProgressChannel(name);
        _done = new double[units.Length];
        _planned = new double?[units.Length];
        _metrics = new double?[metrics?.Length ?? 0];
        _progress.SetHeader(new ProgressHeader(metrics ?? [], units), Fill);
    }

    /// <summary>The operation's log channel (mlContext.Log).</summary>
    internal IChannel Channel => _log;

    internal void Info(string message) => _log.Info(MessageSensitivity.None, "{0}", message);

    internal void Warning(string message) => _log.Warning(MessageSensitivity.None, "{0}", message);

    /// <summary>Sets unit <paramref name="unit"/>'s progress (what a host pulls); <paramref name="planned"/> null when unknown.</summary>
    internal void Report(int unit, double done, double? planned)
    {
        lock (_lock)
        {
            _done[unit] = done;
            _planned[unit] = planned;
        }
    }

    internal void SetMetric(int metric, double? value)
    {
        lock (_lock)
            _metrics[metric] = value;
    }

    /// <summary>
    /// Reports unit <paramref name="unit"/> and logs <paramref name="message"/> (given done and planned) the first time the
    /// work reaches each tenth of <paramref name="planned"/>: a handful of lines however long the operation runs.
    /// </summary>
    internal void ReportSteps(long done, long planned, Func<long, long, string> message, int unit = 0)
    {
        Report(unit, done, planned);
        int step = planned <= 0 ? LoggedSteps : (int)Math.Min(LoggedSteps, done * LoggedSteps / planned);
        if (step <= _loggedStep)
            return;
        _loggedStep = step;
        Info(message(done, planned));
    }

    /// <summary>Pushes a checkpoint (metrics, then units done, then units planned) that a progress listener is sure to see.</summary>
    internal void Checkpoint()
    {
        double?[] values;
        lock (_lock)
            values = [.. _metrics, .. _done.Select(d => (double?)d), .. _planned];
        _progress.Checkpoint(values);
    }

    private void Fill(IProgressEntry entry)
    {
        lock (_lock)
        {
            for (int i = 0; i < _done.Length; i++)
            {
                if (_planned[i] is double planned)
                    entry.SetProgress(i, _done[i], planned);
                else
                    entry.SetProgress(i, _done[i]);
            }
            for (int i = 0; i < _metrics.Length; i++)
            {
                if (_metrics[i] is double value)
                    entry.SetMetric(i, value);
            }
        }
    }

    public void Dispose()
    {
        _progress.Dispose();
        _log.Dispose();
    }
}

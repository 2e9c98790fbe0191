using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace QatMl.Tool.Cli;

/// <summary>
/// Progress of the long steps (loading data, calibration, scoring, QAT epochs, search trials), each a bar with its rate
/// and time left. On a terminal a live Spectre.Console display; otherwise (CI logs, pipes, tests) a plain line per step
/// at most every few seconds and when it ends.
/// </summary>
internal sealed class ToolProgress
{
    private readonly ToolEnvironment _environment;

    public ToolProgress(ToolEnvironment environment) => _environment = environment;

    /// <summary>Runs <paramref name="work"/> with a place to add progress tasks; the display ends when it returns.</summary>
    public T Run<T>(Func<ProgressBoard, T> work)
    {
        if (!_environment.Interactive)
            return work(new ProgressBoard(null, _environment.Console));
        T result = default!;
        var units = new ConcurrentDictionary<int, string>();
        _environment.Console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new RateColumn(units), new RemainingTimeColumn(), new ElapsedTimeColumn())
            .Start(context => result = work(new ProgressBoard(new LiveBoard(context, units), _environment.Console)));
        return result;
    }

    internal sealed record LiveBoard(ProgressContext Context, ConcurrentDictionary<int, string> Units);

    /// <summary>Rows (or epochs, trials) per second, in the step's own unit.</summary>
    private sealed class RateColumn(ConcurrentDictionary<int, string> units) : ProgressColumn
    {
        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            string unit = units.TryGetValue(task.Id, out string? u) ? u : "rows";
            return task.Speed is { } speed && speed > 0
                ? new Markup($"[grey]{Rate(speed, unit)}[/]")
                : new Text("");
        }
    }

    internal static string Rate(double perSecond, string unit)
        => perSecond >= 10 ? string.Create(CultureInfo.InvariantCulture, $"{perSecond:F0} {unit}/s")
                           : string.Create(CultureInfo.InvariantCulture, $"{perSecond:F2} {unit}/s");
}

/// <summary>The steps of one progress display.</summary>
internal sealed class ProgressBoard
{
    private readonly ToolProgress.LiveBoard? _live;
    private readonly IAnsiConsole _console;

    internal ProgressBoard(ToolProgress.LiveBoard? live, IAnsiConsole console)
    {
        _live = live;
        _console = console;
    }

    /// <summary>Adds a step of <paramref name="total"/> units (0 when unknown until the first report).</summary>
    public ProgressStep Add(string description, double total, string unit = "rows")
    {
        if (_live is null)
            return new ProgressStep(null, _console, description, total, unit);
        ProgressTask task = _live.Context.AddTask(Markup.Escape(description), maxValue: Math.Max(total, 1));
        _live.Units[task.Id] = unit;
        return new ProgressStep(task, _console, description, total, unit);
    }

    /// <summary>A line above the bars (or a plain line).</summary>
    public void Note(string markup)
    {
        // Live: Spectre keeps lines written during a progress display above it.
        _console.MarkupLine(markup);
    }
}

/// <summary>One step: set its value as the work reports it; <see cref="Complete"/> when done.</summary>
internal sealed class ProgressStep
{
    private static readonly TimeSpan PlainInterval = TimeSpan.FromSeconds(5);
    private readonly ProgressTask? _task;
    private readonly IAnsiConsole _console;
    private readonly string _description, _unit;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Lock _lock = new();
    private TimeSpan _lastLine = TimeSpan.Zero;
    private double _total, _value;
    private bool _done;

    internal ProgressStep(ProgressTask? task, IAnsiConsole console, string description, double total, string unit)
    {
        _task = task;
        _console = console;
        _description = description;
        _total = total;
        _unit = unit;
    }

    public double Value => _value;

    /// <summary>Sets the progress (and the total when it became known).</summary>
    public void Report(double value, double? total = null)
    {
        lock (_lock)
        {
            if (_done)
                return;
            if (total is { } t && t > 0)
                _total = t;
            _value = value;
            if (_task is not null)
            {
                _task.MaxValue = Math.Max(_total, 1);
                _task.Value = Math.Min(value, _task.MaxValue);
                return;
            }
            if (_clock.Elapsed - _lastLine >= PlainInterval)
            {
                _lastLine = _clock.Elapsed;
                WritePlain(final: false);
            }
        }
    }

    public void Increment(double by = 1) => Report(_value + by);

    /// <summary>Renames the step (the live bar's description; the plain log prints the new name with the next line).</summary>
    public void Describe(string description)
    {
        if (_task is not null)
            _task.Description = Markup.Escape(description);
    }

    public void Complete(string? outcome = null)
    {
        lock (_lock)
        {
            if (_done)
                return;
            _done = true;
            if (_task is not null)
            {
                _task.Value = _task.MaxValue;
                _task.StopTask();
                if (outcome is not null)
                    _console.MarkupLine($"  [grey]{Markup.Escape(_description)}:[/] {Markup.Escape(outcome)}");
                return;
            }
            if (_total > _value)
                _value = _total;
            WritePlain(final: true, outcome);
        }
    }

    private void WritePlain(bool final, string? outcome = null)
    {
        double seconds = _clock.Elapsed.TotalSeconds;
        string rate = seconds > 0 && _value > 0 ? ", " + ToolProgress.Rate(_value / seconds, _unit) : "";
        string left = !final && _total > _value && _value > 0 && seconds > 0
            ? string.Create(CultureInfo.InvariantCulture, $", {(_total - _value) / (_value / seconds):F0} s left") : "";
        string of = _total > 0 ? string.Create(CultureInfo.InvariantCulture, $"{_value:F0}/{_total:F0} {_unit}") : string.Create(CultureInfo.InvariantCulture, $"{_value:F0} {_unit}");
        string tail = final ? string.Create(CultureInfo.InvariantCulture, $" in {seconds:F1} s") + (outcome is null ? "" : ": " + outcome) : "";
        _console.WriteLine($"{_description}: {of}{rate}{left}{tail}");
    }
}

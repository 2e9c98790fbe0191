using System.Collections;
using System.Reflection;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Runtime;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests;

/// <summary>
/// Long operations report through ML.NET's own channels, as its trainers do: messages on <c>mlContext.Log</c> and a
/// progress channel (<c>IProgressChannelProvider.StartProgressChannel</c>), besides the options' <c>IProgress&lt;T&gt;</c>.
/// MLContext keeps its progress events in its environment's tracker, which has no public reader: <see cref="Tracker"/>
/// reads it by reflection, the way a host (ML.NET's console environment) drains it.
/// </summary>
public sealed class ProgressTests
{
    private sealed record LogLine(string Source, ChannelMessageKind Kind, string Message);

    private static List<LogLine> Listen(MLContext context)
    {
        var lines = new List<LogLine>();
        context.Log += (_, e) => { lock (lines) lines.Add(new LogLine(e.Source, e.Kind, e.RawMessage)); };
        return lines;
    }

    /// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class Inline<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    [Fact]
    public void Calibrate_LogsRowsAndFeedsTheProgressChannel()
    {
        var context = new MLContext(seed: 1);
        var log = Listen(context);
        var tracker = new Tracker(context);
        IDataView data = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 200));
        // While calibration runs, a host pulls the channel's entry (the first drain returns the start event instead).
        var seen = new List<(CalibrationProgress Reported, List<ProgressEvent> Pulled)>();
        var options = new CalibrationEstimatorOptions
        {
            ModelPath = TestData.FmnistNet, SampleCount = 200, BatchSize = 16, IntraOpNumThreads = 1,
            Progress = new Inline<CalibrationProgress>(p => seen.Add((p, tracker.Drain()))),
        };
        context.Quantization.Calibrate(options).Fit(data);

        var rowsLines = log.Where(l => l.Source == "QatMl.Calibrate" && l.Message.Contains(" of 200 rows", StringComparison.Ordinal)).ToList();
        Assert.InRange(rowsLines.Count, 5, 10);                                    // about one per tenth, not one per batch
        Assert.StartsWith($"Calibrating '{TestData.FmnistNet}': 200 of 200 rows", rowsLines[^1].Message);
        Assert.Contains(log, l => l.Source == "QatMl.Calibrate" && l.Message.StartsWith("Calibrated ", StringComparison.Ordinal));

        Assert.True(seen.Count >= 5, $"{seen.Count} progress reports");
        Assert.Contains(seen[0].Pulled, e => e.Name == "QatMl.Calibrate" && e.Kind == "Start");
        foreach (var (reported, pulled) in seen.Skip(1))
        {
            ProgressEvent entry = Assert.Single(pulled);
            Assert.Equal(("QatMl.Calibrate", "Progress", false), (entry.Name, entry.Kind, entry.Checkpoint));
            Assert.Equal((reported.RowsObserved, 200.0), (entry.Units[0]!.Value, entry.Limits[0]!.Value));
        }
        var after = tracker.Drain();
        Assert.Contains(after, e => e.Name == "QatMl.Calibrate" && e.Checkpoint && e.Units[0] == 200);
        Assert.Contains(after, e => e.Name == "QatMl.Calibrate" && e.Kind == "Stop");
    }

    [Fact]
    public void PostTraining_ReportsItsStages_OnTheLogAndAsCheckpoints()
    {
        var context = new MLContext(seed: 1);
        var log = Listen(context);
        var tracker = new Tracker(context);
        IDataView data = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 64));
        using var model = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 64 }).Fit(data);

        string prefix = $"PostTraining '{TestData.FmnistNet}' ";
        Assert.Collection(log.Where(l => l.Source == "QatMl.PostTraining" && l.Message.StartsWith(prefix, StringComparison.Ordinal)).Select(l => l.Message[prefix.Length..]),
            m => Assert.StartsWith("(1/4): graph prepared (", m),
            m => Assert.StartsWith("(2/4): calibrated ", m),
            m => Assert.StartsWith("(3/4): quantized ", m),
            m => Assert.Equal("(4/4): the quantized model runs on OnnxRuntime.", m));
        var events = tracker.Drain();
        Assert.Equal([1.0, 2, 3, 4], events.Where(e => e.Name == "QatMl.PostTraining" && e.Checkpoint).Select(e => e.Units[0]!.Value));
        Assert.Contains(events, e => e.Name == "QatMl.Calibrate" && e.Kind == "Stop");
    }

    [Fact]
    public void Compare_ReportsRows_ThroughItsProgressOptionTheLogAndTheChannel()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 64));
        using var model = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 64, BatchSize = 32 }).Fit(calibration);
        var log = Listen(context);
        var tracker = new Tracker(context);
        tracker.Drain();
        IDataView test = FashionMnist.Load(context, FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 200));
        var reports = new List<ComparisonProgress>();
        var options = new ComparisonOptions { LabelColumnName = "Label", MeasureLatency = false, Progress = new Inline<ComparisonProgress>(reports.Add) };
        QuantizationComparison report = context.Quantization.Compare(TestData.FmnistNet, model, test, options);

        Assert.Equal(200, report.Rows);
        Assert.Equal([32L, 64, 96, 128, 160, 192, 200], reports.Select(r => r.RowsCompared));
        Assert.All(reports, r => Assert.Equal(200, r.RowsPlanned));
        Assert.Contains(log, l => l.Source == "QatMl.Compare" && l.Message.StartsWith($"Comparing '{TestData.FmnistNet}' with its quantized model on 200 rows", StringComparison.Ordinal));
        Assert.Contains(log, l => l.Source == "QatMl.Compare" && l.Message.StartsWith("Compared 200 of 200 rows", StringComparison.Ordinal));
        Assert.Contains(log, l => l.Source == "QatMl.Compare" && l.Message.StartsWith("Compared 200 rows: top-1 agreement", StringComparison.Ordinal));
        var events = tracker.Drain();
        Assert.Contains(events, e => e.Name == "QatMl.Compare" && e.Checkpoint && e.Units[0] == 200 && e.Limits[0] == 200);
        Assert.Contains(events, e => e.Name == "QatMl.Compare" && e.Kind == "Stop");
    }

    [Fact]
    public void AwareTraining_ReportsEpochsAndSteps_OnTheLogAndAsCheckpoints()
    {
        var context = new MLContext(seed: 1);
        var log = Listen(context);
        var tracker = new Tracker(context);
        IDataView data = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 100));
        var options = new AwareTrainingOptions
        {
            ModelPath = TestData.FmnistNetBn, Epochs = 2, TrainingBatchSize = 10, CalibrationSampleCount = 20, IntraOpNumThreads = 1, BatchSize = 20,
        };
        using var model = context.Quantization.AwareTraining(options).Fit(data);

        var training = log.Where(l => l.Source == "QatMl.AwareTraining").Select(l => l.Message).ToList();
        Assert.Contains(training, m => m.StartsWith("Epoch 1/2: loss ", StringComparison.Ordinal));
        Assert.Contains(training, m => m.StartsWith("Epoch 2/2: loss ", StringComparison.Ordinal));
        Assert.Equal(Enumerable.Range(1, 10).Select(s => $"Step {s * 2} of 20"), training.Where(m => m.StartsWith("Step ", StringComparison.Ordinal)).Select(m => m.Split(" (")[0]));
        var epochs = tracker.Drain().Where(e => e.Name == "QatMl.AwareTraining" && e.Checkpoint).ToList();
        Assert.Equal([(1.0, 10.0), (2.0, 20.0)], epochs.Select(e => (e.Units[0]!.Value, e.Units[1]!.Value)));
        Assert.All(epochs, e => Assert.Equal((2.0, 20.0), (e.Limits[0]!.Value, e.Limits[1]!.Value)));
        Assert.All(epochs, e => Assert.True(e.Metrics[0] > 0, "the mean loss of the epoch"));
    }

    /// <summary>One progress event as ML.NET's tracker hands it out.</summary>
    private sealed record ProgressEvent(string Name, string Kind, bool Checkpoint, double?[] Units, double?[] Limits, double?[] Metrics);

    /// <summary>The progress tracker of an MLContext's environment (ML.NET keeps it protected; hosts drain it with GetAllProgress).</summary>
    private sealed class Tracker(MLContext context)
    {
        private readonly object _tracker = Find(context);

        private static object Find(MLContext context)
        {
            object env = typeof(MLContext).GetField("_env", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(context)!;
            for (Type? t = env.GetType(); t is not null; t = t.BaseType)
                if (t.GetField("ProgressTracker", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public) is { } field)
                    return field.GetValue(env)!;
            throw new InvalidOperationException("ML.NET's environment has no ProgressTracker field any more.");
        }

        /// <summary>Every event since the last call (start, checkpoints, stop), plus the current entry of each running operation.</summary>
        public List<ProgressEvent> Drain()
        {
            var list = (IList)_tracker.GetType().GetMethod("GetAllProgress")!.Invoke(_tracker, null)!;
            var events = new List<ProgressEvent>();
            foreach (object e in list)
            {
                Type type = e.GetType();
                string name = (string)type.GetField("Name")!.GetValue(e)!;
                string kind = type.GetField("Kind")!.GetValue(e)!.ToString()!;
                object? entry = type.GetField("ProgressEntry")!.GetValue(e);
                double?[] Field(string f) => entry is null ? [] : (double?[])entry.GetType().GetField(f)!.GetValue(entry)!;
                bool checkpoint = entry is not null && (bool)entry.GetType().GetField("IsCheckpoint")!.GetValue(entry)!;
                events.Add(new ProgressEvent(name, kind, checkpoint, Field("Progress"), Field("ProgressLim"), Field("Metrics")));
            }
            return events;
        }
    }
}

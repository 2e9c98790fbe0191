using System.ComponentModel;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;
using QatMl.Tool.Quantize;
using Spectre.Console;
using Spectre.Console.Cli;
using static QatMl.Tool.Cli.Invariant;

namespace QatMl.Tool.Commands;

internal sealed class BenchmarkSettings : DataSettings
{
    [CommandArgument(0, "<MODEL>")]
    [Description("The float ONNX model.")]
    public string Model { get; init; } = "";

    [CommandOption("--backends <LIST>")]
    [Description("Any of float, ort, native (float: ONNX Runtime FP32; ort and native: the INT8 model).")]
    [DefaultValue("float,ort,native")]
    public string Backends { get; init; } = "float,ort,native";

    [CommandOption("--batches <LIST>")]
    [Description("Batch sizes (rows per call).")]
    [DefaultValue("1,64")]
    public string Batches { get; init; } = "1,64";

    [CommandOption("--thread-counts <LIST>")]
    [Description("Thread counts (0: one per core).")]
    [DefaultValue("1,0")]
    public string ThreadCounts { get; init; } = "1,0";

    [CommandOption("--precision <SCHEME>")]
    [Description("int8 (default) or w4a8.")]
    [DefaultValue("int8")]
    public string Precision { get; init; } = "int8";

    [CommandOption("--rows <N>")]
    [Description("Rows per timed pass (random stand-in rows unless --data is given; they also calibrate).")]
    [DefaultValue(128)]
    public int Rows { get; init; } = 128;

    [CommandOption("--seconds <S>")]
    [Description("Time budget per configuration.")]
    [DefaultValue(3.0)]
    public double Seconds { get; init; } = 3;
}

/// <summary><c>qatml benchmark</c>: latency and throughput per backend, batch size and thread count.</summary>
internal sealed class BenchmarkCommand(ToolEnvironment environment) : Command<BenchmarkSettings>
{
    public override int Execute(CommandContext context, BenchmarkSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Plain)
            environment.UsePlainOutput();
        ModelInfo model = ModelInfo.Load(settings.Model);
        string[] backends = List(settings.Backends, "--backends", b => b is "float" or "ort" or "native" ? b : throw new ToolException($"--backends: '{b}' is not float, ort or native."));
        int[] batches = List(settings.Batches, "--batches", b => int.TryParse(b, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : throw new ToolException($"--batches: '{b}' is not a positive number."));
        int[] threads = List(settings.ThreadCounts, "--thread-counts", b => int.TryParse(b, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v : throw new ToolException($"--thread-counts: '{b}' is not a number."));
        if (settings.Rows < 1)
            throw new ToolException("--rows must be at least 1.");
        var scheme = settings.Precision.ToLowerInvariant() switch
        {
            "int8" => Scheme.Int8,
            "w4a8" => Scheme.W4A8,
            _ => throw new ToolException($"--precision: '{settings.Precision}' is not int8 or w4a8."),
        };
        var mlContext = new MLContext(seed: 0);
        var results = environment.Progress().Run(board =>
        {
            ModelRows rows;
            string source;
            if (settings.Data is not null)
            {
                var data = PreparedData.Prepare(mlContext, model, settings.LoadData(), null, settings.BuildRecipe(), settings.ParsedInputShape, 0, settings.Rows, board, cancellationToken);
                rows = data.Evaluation;
                source = $"{rows.Count} rows of {settings.Data}";
            }
            else
            {
                rows = RandomRows.Create(model, settings.ParsedInputShape, settings.Rows);
                source = $"{rows.Count} random standard-normal rows";
            }
            board.Note($"  [grey]timing on {Markup.Escape(source)}[/]");
            IDataView view = rows.ToDataView(mlContext);
            CalibrationTable? table = null;
            if (backends.Any(b => b != "float"))
            {
                var step = board.Add("calibration", rows.Count);
                var options = new CalibrationEstimatorOptions { ModelPath = model.Path, SampleCount = rows.Count, CancellationToken = cancellationToken };
                foreach (string op in Microsoft.ML.Quantization.PostTraining.PostTrainingOptions.DefaultOpTypes)
                    options.OpTypes.Add(op);
                table = mlContext.Quantization.Calibrate(options).Fit(view).Table;
                step.Complete();
            }
            var configurations = (from b in backends from batch in batches from t in threads select (b, batch, t)).ToList();
            var timing = board.Add("timing", configurations.Count, "configurations");
            var list = new List<(string Backend, int Batch, int Threads, LatencyResult? Result, string? Note)>();
            foreach (var (backend, batch, t) in configurations)
            {
                ITransformer transformer;
                if (backend == "float")
                    transformer = mlContext.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = model.Path, BatchSize = batch, IntraOpNumThreads = t }).Fit(view);
                else
                {
                    var options = scheme.ToOptions(model.Path, table!);
                    options.BatchSize = batch;
                    options.IntraOpNumThreads = t;
                    options.Backend = backend == "native" ? QuantizedBackend.Native : QuantizedBackend.OnnxRuntime;
                    options.AllowBackendFallback = false;
                    try
                    {
                        transformer = mlContext.Quantization.PostTraining(options).Fit(view);
                    }
                    catch (NotSupportedException e)
                    {
                        list.Add((backend, batch, t, null, e.Message));
                        timing.Increment();
                        continue;
                    }
                }
                try
                {
                    TimeSpan best = Latency.BestPass(transformer, view, model.Output.Name, 5, cancellationToken, TimeSpan.FromSeconds(settings.Seconds));
                    list.Add((backend, batch, t, new LatencyResult(backend, rows.Count, batch, t, best), null));
                }
                finally
                {
                    (transformer as IDisposable)?.Dispose();
                }
                timing.Increment();
            }
            timing.Complete();
            return list;
        });

        var output = new Table().Border(TableBorder.Rounded).AddColumns("backend", "batch", "threads", "ms / call", "ms / row", "rows / s", "note");
        foreach (var (backend, batch, t, result, note) in results)
        {
            string name = backend switch { "float" => "ONNX Runtime FP32", "ort" => $"ONNX Runtime {scheme.Name}", _ => $"QatMl native {scheme.Name}" };
            output.AddRow(name, batch.ToString(CultureInfo.InvariantCulture), t == 0 ? "all" : t.ToString(CultureInfo.InvariantCulture),
                result is null ? "-" : F($"{result.MillisecondsPerRow * Math.Min(batch, result.Rows):G4}"),
                result is null ? "-" : F($"{result.MillisecondsPerRow:G4}"),
                result is null ? "-" : F($"{result.RowsPerSecond:N0}"),
                Markup.Escape(note ?? ""));
        }
        environment.Console.Write(output);
        environment.Console.MarkupLine("[grey]Best pass over the rows after a warm-up; a busy machine inflates absolutes, compare ratios.[/]");
        return 0;
    }

    private static T[] List<T>(string text, string option, Func<string, T> parse)
    {
        var items = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(s => parse(s.ToLowerInvariant())).ToArray();
        return items.Length > 0 ? items : throw new ToolException($"{option} is empty.");
    }
}

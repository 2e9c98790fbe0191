using System.ComponentModel;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Lowering;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;
using QatMl.Tool.Inspect;
using QatMl.Tool.Quantize;
using Spectre.Console;
using Spectre.Console.Cli;
using static QatMl.Tool.Cli.Invariant;

namespace QatMl.Tool.Commands;

internal sealed class InspectSettings : CommonSettings
{
    [CommandArgument(0, "<MODEL>")]
    [Description("The float ONNX model.")]
    public string Model { get; init; } = "";

    [CommandOption("--seconds <S>")]
    [Description("Time for the float vs INT8 measurement (0 skips it).")]
    [DefaultValue(5.0)]
    public double Seconds { get; init; } = 5;

    [CommandOption("--input-shape <DIMS>")]
    [Description("Per-row input shape when the model does not fix it, e.g. 3x224x224.")]
    public string? InputShape { get; init; }
}

/// <summary>
/// <c>qatml inspect</c>: the model's interface and ops, a quick INT8 version (calibrated on random stand-in rows: fine for
/// structure and speed, not accuracy), what it quantizes and why not, what ONNX Runtime fuses, what the native engine
/// runs, the CPU's verdict and a short float vs INT8 timing.
/// </summary>
internal sealed class InspectCommand(ToolEnvironment environment) : Command<InspectSettings>
{
    private const int StandInRows = 32;

    public override int Execute(CommandContext context, InspectSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Plain)
            environment.UsePlainOutput();
        IAnsiConsole console = environment.Console;
        ModelInfo model = ModelInfo.Load(settings.Model);
        int[]? shape = settings.InputShape is null ? null : new DataSettings { InputShape = settings.InputShape }.ParsedInputShape;
        OnnxGraph graph = model.Model.Graph;

        console.Write(new Rule($"[bold]{Markup.Escape(Path.GetFileName(model.Path))}[/]").LeftJustified());
        console.MarkupLine(F($"{model.FileBytes:N0} bytes, opset {model.Model.DefaultOpset}, IR {model.Model.IrVersion}, producer '{Markup.Escape(model.Model.ProducerName)}', {graph.Nodes.Count} nodes, {graph.Initializers.Count} initializers ({graph.Initializers.Sum(i => i.ElementCount):N0} values)"));
        var io = new Table().Border(TableBorder.Rounded).AddColumns("", "name", "type", "shape");
        foreach (var i in model.Inputs) io.AddRow("input", Markup.Escape(i.Name), i.ElementType, Markup.Escape(i.ShapeText));
        foreach (var o in model.Outputs) io.AddRow("output", Markup.Escape(o.Name), o.ElementType, Markup.Escape(o.ShapeText));
        console.Write(io);

        var histogram = graph.Nodes.GroupBy(n => (n.Domain.Length > 0 ? n.Domain + "." : "") + n.OpType).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal).ToList();
        var chart = new BarChart().Label("[bold]ops[/]").Width(Math.Min(80, console.Profile.Width));
        foreach (var g in histogram)
            chart.AddItem(Markup.Escape(g.Key), g.Count(), Color.SteelBlue);
        console.Write(chart);

        var mlContext = new MLContext(seed: 0);
        var result = environment.Progress().Run(board =>
        {
            ModelRows rows = RandomRows.Create(model, shape, StandInRows);
            IDataView view = rows.ToDataView(mlContext);
            var step = board.Add("quick INT8 (calibrated on random rows)", StandInRows);
            var calibration = new CalibrationEstimatorOptions
            {
                ModelPath = model.Path, SampleCount = StandInRows, BatchSize = settings.Batch, IntraOpNumThreads = settings.Threads,
                Progress = new SyncProgress<CalibrationProgress>(p => step.Report(p.RowsObserved)), CancellationToken = cancellationToken,
            };
            foreach (string op in PostTrainingOptions.DefaultOpTypes)
                calibration.OpTypes.Add(op);
            CalibrationTable table = mlContext.Quantization.Calibrate(calibration).Fit(view).Table;
            var options = Scheme.Int8.ToOptions(model.Path, table);
            options.BatchSize = settings.Batch;
            options.IntraOpNumThreads = settings.Threads;
            QuantizedModelTransformer quantized = mlContext.Quantization.PostTraining(options).Fit(view);
            step.Complete();

            var fusionStep = board.Add("ONNX Runtime graph optimization", 1, "sessions");
            FusionReport fusions = OrtFusions.Analyze(quantized.QuantizedModel, settings.Threads);
            fusionStep.Complete();
            LoweringResult lowering = QdqLowering.Lower(OnnxModel.Parse(quantized.QuantizedModel, sourceName: model.Path), model.Path, [], [],
                shape is null ? new Dictionary<string, int[]>() : new Dictionary<string, int[]> { [model.Input.Name] = shape });

            var timings = new List<(string Name, LatencyResult? Result, string? Note)>();
            if (settings.Seconds > 0)
            {
                var timing = board.Add("timing float vs INT8", 3, "models");
                TimeSpan each = TimeSpan.FromSeconds(settings.Seconds / 3);
                ITransformer floatModel = mlContext.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = model.Path, BatchSize = settings.Batch, IntraOpNumThreads = settings.Threads }).Fit(view);
                timings.Add(("ONNX Runtime FP32", Time(floatModel, view, model, each, settings, cancellationToken), null));
                (floatModel as IDisposable)?.Dispose();
                timing.Increment();
                timings.Add(("ONNX Runtime INT8", Time(quantized, view, model, each, settings, cancellationToken), null));
                timing.Increment();
                if (lowering.Succeeded)
                {
                    options.Backend = QuantizedBackend.Native;
                    options.AllowBackendFallback = false;
                    using var native = mlContext.Quantization.PostTraining(options).Fit(view);
                    timings.Add(("QatMl native INT8", Time(native, view, model, each, settings, cancellationToken), null));
                }
                else
                    timings.Add(("QatMl native INT8", null, "cannot run this model (below)"));
                timing.Complete();
            }
            return (quantized, fusions, lowering, timings);
        });

        using QuantizedModelTransformer quick = result.quantized;
        // What the quantizer does with each node.
        var nodes = quick.Nodes;
        var quantizedNodes = nodes.Where(n => n.Precision is not null).ToList();
        console.Write(new Rule("[bold]quantization (INT8, default op types)[/]").LeftJustified());
        console.MarkupLine(F($"{quantizedNodes.Count} of {nodes.Count} nodes quantized: ") + Markup.Escape(string.Join(", ", quantizedNodes.GroupBy(n => n.OpType).Select(g => $"{g.Count()} {g.Key}"))));
        var floats = nodes.Where(n => n.Precision is null).ToList();
        if (floats.Count > 0)
        {
            var table = new Table().Border(TableBorder.Rounded).AddColumns("stays float", "op", "why");
            foreach (var n in floats.Take(40))
                table.AddRow(Markup.Escape(n.Name), Markup.Escape(n.OpType), Markup.Escape(n.Reason ?? ""));
            if (floats.Count > 40)
                table.AddRow(F($"... {floats.Count - 40} more"), "", "");
            console.Write(table);
        }

        // ONNX Runtime's fusions.
        var f = result.fusions;
        console.Write(new Rule("[bold]ONNX Runtime (CPU) on the QDQ model[/]").LeftJustified());
        console.MarkupLine("fused integer kernels: " + Markup.Escape(Describe(f.IntegerOps)));
        console.MarkupLine("on int8 without Q/DQ: " + Markup.Escape(Describe(f.IntegerMovement)));
        console.MarkupLine(F($"left: {f.QuantizeLinear} QuantizeLinear, {f.DequantizeLinear} DequantizeLinear; float ops: ") + Markup.Escape(Describe(f.FloatOps)));
        if (f.Unfused.Count == 0)
            console.MarkupLine("[green]every quantized op fused[/]: no float op reads a DequantizeLinear.");
        else
            console.MarkupLine(F($"[yellow]not fused[/] ({f.Unfused.Count} float nodes read dequantized values): ") + Markup.Escape(string.Join(", ", f.Unfused.Take(12).Select(u => $"{u.Node} ({u.OpType})")) + (f.Unfused.Count > 12 ? ", ..." : "")));
        console.MarkupLine("[grey]ORT's QDQ fusions: " + Markup.Escape(string.Join("; ", OrtFusions.FusablePatterns)) + "[/]");

        // The native engine.
        console.Write(new Rule("[bold]QatMl native engine[/]").LeftJustified());
        var lowering = result.lowering;
        if (lowering.Succeeded)
        {
            console.MarkupLine(F($"[green]runs the whole model[/] as {lowering.Plan!.Ops.Count} ops: ") + Markup.Escape(string.Join(", ", lowering.Plan.Ops.GroupBy(o => o.Kind).Select(g => $"{g.Count()} {g.Key}"))));
            var ops = new Table().Border(TableBorder.Rounded).AddColumns("engine op", "from ONNX nodes");
            foreach (var op in lowering.Plan.Ops.Take(30))
                ops.AddRow(op.Kind.ToString(), Markup.Escape(op.Source));
            if (lowering.Plan.Ops.Count > 30)
                ops.AddRow("...", F($"{lowering.Plan.Ops.Count - 30} more"));
            console.Write(ops);
        }
        else
        {
            console.MarkupLine(F($"[yellow]cannot run this model[/] ({lowering.Unsupported.Count} problem(s)); with --backend native it falls back to ONNX Runtime:"));
            foreach (string u in lowering.Unsupported.Take(15))
                console.MarkupLine("  " + Markup.Escape(u));
        }

        // Will INT8 be faster here?
        console.Write(new Rule("[bold]will INT8 be faster here?[/]").LeftJustified());
        var (faster, why) = CpuVerdict.Int8Verdict();
        console.MarkupLine($"CPU: {Markup.Escape(CpuVerdict.Describe())}; features: {Markup.Escape(CpuVerdict.Features())}");
        var fp32 = result.timings.FirstOrDefault(t => t.Name == "ONNX Runtime FP32").Result;
        var best = result.timings.Where(t => t.Result is not null && t.Name != "ONNX Runtime FP32").OrderBy(t => t.Result!.MillisecondsPerRow).FirstOrDefault();
        foreach (var (name, r, note) in result.timings)
            console.MarkupLine(r is null ? $"  {name}: {Markup.Escape(note ?? "-")}" : F($"  {name}: {r.MillisecondsPerRow:G4} ms/row, {r.RowsPerSecond:N0} rows/s (batch {r.BatchSize}, {r.Rows} random rows)"));
        string measured = fp32 is not null && best.Result is { } b
            ? F($" Measured: {best.Name} is {fp32.MillisecondsPerRow / b.MillisecondsPerRow:F2}x FP32.") : "";
        bool fastNow = fp32 is not null && best.Result is { } bb && bb.MillisecondsPerRow < fp32.MillisecondsPerRow;
        string verdict = (faster, result.timings.Count > 0 ? fastNow : faster) switch
        {
            (true, true) => "[green]yes[/]",
            (true, false) => "[yellow]not on this model yet[/]",
            (false, true) => "[yellow]somewhat[/]",
            _ => "[red]no[/]",
        };
        console.MarkupLine($"{verdict}: {Markup.Escape(why)}.{Markup.Escape(measured)}");
        if (f.Unfused.Count > 0)
            console.MarkupLine("[grey]Unfused nodes run in float between DequantizeLinear and QuantizeLinear and eat into the gain.[/]");
        return 0;
    }

    private static LatencyResult Time(ITransformer transformer, IDataView rows, ModelInfo model, TimeSpan budget, InspectSettings settings, CancellationToken cancel)
    {
        TimeSpan best = Latency.BestPass(transformer, rows, model.Output.Name, 10, cancel, budget);
        return new LatencyResult("", StandInRows, settings.Batch, settings.Threads, best);
    }

    private static string Describe(IReadOnlyDictionary<string, int> counts)
        => counts.Count == 0 ? "none" : string.Join(", ", counts.Select(kv => $"{kv.Value} {kv.Key}"));

}

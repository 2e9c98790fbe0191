using System.ComponentModel;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Tool.Cli;
using QatMl.Tool.Codegen;
using QatMl.Tool.Data;
using QatMl.Tool.Inspect;
using QatMl.Tool.Quantize;
using QatMl.Tool.Report;
using Spectre.Console;
using Spectre.Console.Cli;
using static QatMl.Tool.Cli.Invariant;

namespace QatMl.Tool.Commands;

internal sealed class QuantizeSettings : DataSettings
{
    [CommandArgument(0, "<MODEL>")]
    [Description("The float ONNX model.")]
    public string Model { get; init; } = "";

    [CommandOption("--precision <SCHEME>")]
    [Description("int8 (default), w4a8, or auto: a sweep of fixed schemes against --budget, keeping the smallest within it.")]
    [DefaultValue("int8")]
    public string Precision { get; init; } = "int8";

    [CommandOption("--budget <POINTS>")]
    [Description("Allowed loss in percentage points: of accuracy with labels, else of top-1 agreement with the float model (auto: 0.5 when not given).")]
    public double? Budget { get; init; }

    [CommandOption("--metric <METRIC>")]
    [Description("What the budget measures: accuracy (needs labels), agreement (top-1 with the float model) or cosine (100 x (1 - mean output cosine), for feature extractors). Default: accuracy with labels, else agreement.")]
    public string? Metric { get; init; }

    [CommandOption("--backend <BACKEND>")]
    [Description("ort (ONNX Runtime, default) or native (QatMl's INT8 engine; falls back to ONNX Runtime for a model it cannot run).")]
    [DefaultValue("ort")]
    public string Backend { get; init; } = "ort";

    [CommandOption("--out <DIR>")]
    [Description("Output folder (default: qatml-<model name>). Written whole or not at all.")]
    public string? Out { get; init; }

    [CommandOption("--force")]
    [Description("Replace a non-empty --out folder.")]
    public bool Force { get; init; }

    [CommandOption("--calibration-rows <N>")]
    [Description("Rows to calibrate on (at most half of --data unless --calibration-data is given).")]
    [DefaultValue(500)]
    public int CalibrationRows { get; init; } = 500;

    [CommandOption("--eval-rows <N>")]
    [Description("Rows to evaluate on (default: all the others).")]
    public int? EvalRows { get; init; }

    [CommandOption("--calibration-data <PATH>")]
    [Description("Separate calibration rows, in the format of --data (then all of --data is evaluated).")]
    public string? CalibrationData { get; init; }

    [CommandOption("--library-project <CSPROJ>")]
    [Description("The generated project references this Microsoft.ML.Quantization.csproj instead of the QatMl.ML.Quantization package.")]
    public string? LibraryProject { get; init; }

    [CommandOption("--package-source <DIR>")]
    [Description("A local NuGet folder or feed for the generated project's nuget.config (where QatMl.ML.Quantization is).")]
    public string? PackageSource { get; init; }

    public override ValidationResult Validate()
    {
        if (CalibrationRows < 1)
            return ValidationResult.Error("--calibration-rows must be at least 1.");
        if (EvalRows is < 1)
            return ValidationResult.Error("--eval-rows must be at least 1.");
        if (Budget is { } b && !(b >= 0 && b <= 100))
            return ValidationResult.Error("--budget is in percentage points, 0 to 100.");
        return base.Validate();
    }
}

/// <summary>
/// <c>qatml quantize</c>: preprocesses the data, runs the scheme (or the auto sweep), and writes the QDQ model, the
/// ML.NET zip (preprocessing + quantized model), the calibration table, the recipe, report.html and a consumer project.
/// </summary>
internal sealed class QuantizeCommand(ToolEnvironment environment) : Command<QuantizeSettings>
{
    public const int BudgetMissedExitCode = 3;

    public override int Execute(CommandContext context, QuantizeSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Plain)
            environment.UsePlainOutput();
        IAnsiConsole console = environment.Console;
        ModelInfo model = ModelInfo.Load(settings.Model);
        string precision = settings.Precision.ToLowerInvariant();
        if (precision is not ("int8" or "w4a8" or "auto"))
            throw new ToolException($"--precision: '{settings.Precision}' is not int8, w4a8 or auto.");
        QuantizedBackend backend = settings.Backend.ToLowerInvariant() switch
        {
            "ort" or "onnxruntime" => QuantizedBackend.OnnxRuntime,
            "native" => QuantizedBackend.Native,
            _ => throw new ToolException($"--backend: '{settings.Backend}' is not ort or native."),
        };
        double? budget = settings.Budget ?? (precision == "auto" ? 0.5 : null);
        if (settings.LibraryProject is { } lib && !File.Exists(lib))
            throw new ToolException($"--library-project '{lib}' does not exist.");
        Preprocessing recipe = settings.BuildRecipe();
        RawData raw = settings.LoadData();
        RawData? calibrationData = settings.CalibrationData is { } cd ? settings.LoadData(cd) : null;
        string modelName = Path.GetFileNameWithoutExtension(model.Path);
        string outFolder = settings.Out ?? $"qatml-{modelName}";

        console.MarkupLine($"[bold]qatml quantize[/] {Markup.Escape(Path.GetFileName(model.Path))}: input {Markup.Escape(model.Input.Name)} {Markup.Escape(model.Input.ShapeText)}, output {Markup.Escape(model.Output.Name)} {Markup.Escape(model.Output.ShapeText)}");
        console.MarkupLine($"  data: {Markup.Escape(raw.Description)}");
        console.MarkupLine($"  precision {precision}{(budget is { } b0 ? string.Create(CultureInfo.InvariantCulture, $", budget {b0:G3} points") : "")}, backend {backend}, batch {settings.Batch}, threads {(settings.Threads == 0 ? "all" : settings.Threads)}; CPU {Markup.Escape(CpuVerdict.Describe())}");

        var mlContext = new MLContext(seed: 0);
        using var staging = new StagingDirectory(outFolder, settings.Force);
        bool budgetMissed = false;
        ReportModel report = environment.Progress().Run(board =>
        {
            PreparedData data = PreparedData.Prepare(mlContext, model, raw, calibrationData, recipe, settings.ParsedInputShape,
                settings.CalibrationRows, settings.EvalRows, board, cancellationToken);
            if (data.LabelNote is { } note)
                board.Note($"  [grey]{Markup.Escape(note)}[/]");
            IDataView calibration = data.Calibration.ToDataView(mlContext);
            IDataView evaluation = data.Evaluation.ToDataView(mlContext);
            var runner = new TrialRunner(mlContext, model, calibration, data.Calibration.Count, evaluation, data.Evaluation.Count,
                data.UseLabels ? RawData.LabelColumn : null, new RunSettings(backend, settings.Batch, settings.Threads, budget, Metric(settings.Metric, data)), board, cancellationToken);
            SearchResult search = SchemeSearch.Run(runner, precision, model, board);
            try
            {
                budgetMissed = search.Chosen.MeetsBudget == false;
                return Finish(mlContext, model, data, runner, search, recipe, settings, staging, board, cancellationToken);
            }
            finally
            {
                foreach (var trial in search.Trials)
                    trial.Dispose();
            }
        });
        staging.Commit();
        PrintSummary(console, report, staging.Target);
        return budgetMissed ? BudgetMissedExitCode : 0;
    }

    private static ReportModel Finish(MLContext mlContext, ModelInfo model, PreparedData data, TrialRunner runner, SearchResult search, Preprocessing recipe,
        QuantizeSettings settings, StagingDirectory staging, ProgressBoard board, CancellationToken cancel)
    {
        Trial chosen = search.Chosen;
        QuantizedModelTransformer quantized = chosen.Model;
        IDataView evaluation = data.Evaluation.ToDataView(mlContext);

        // Latency of the float model and of the kept scheme on each backend.
        var timing = board.Add("timing backends", 3, "backends");
        var latencies = new List<BackendLatency>();
        ITransformer floatModel = runner.FloatModel();
        try
        {
            var f = runner.Time(floatModel, "ONNX Runtime FP32");
            latencies.Add(new BackendLatency("ONNX Runtime, float", f.MillisecondsPerRow, f.RowsPerSecond, f.Rows, null));
            timing.Report(1);
            foreach (var target in new[] { QuantizedBackend.OnnxRuntime, QuantizedBackend.Native })
            {
                string name = target == QuantizedBackend.Native ? "QatMl native, quantized" : "ONNX Runtime, quantized";
                if (quantized.Backend == target)
                    latencies.Add(new BackendLatency(name, chosen.Latency.MillisecondsPerRow, chosen.Latency.RowsPerSecond, chosen.Latency.Rows, "the saved model's backend"));
                else
                {
                    using QuantizedModelTransformer? other = runner.OnBackend(chosen, target);
                    if (other is null)
                        latencies.Add(new BackendLatency(name, null, null, 0,
                            quantized.BackendFallbackReason is { } why ? "cannot run: " + why : "cannot run this model"));
                    else
                    {
                        var l = runner.Time(other, name);
                        latencies.Add(new BackendLatency(name, l.MillisecondsPerRow, l.RowsPerSecond, l.Rows, null));
                    }
                }
                timing.Increment();
            }
            timing.Complete();

            // Histograms of the worst activations, on (up to 128) calibration rows.
            var histogramStep = board.Add("activation histograms", 1, "passes");
            var table = runner.Table(chosen.Scheme.Method);
            var histograms = Measurements.Histograms(mlContext, model, table, chosen.Comparison.Layers.Take(6).ToList(),
                data.Calibration.ToDataView(mlContext, 0, 128), settings.Batch, settings.Threads, cancel);
            histogramStep.Complete();

            ConfusionPair? confusion = null;
            int outputs = (int)(model.Output.RowElements ?? 0);
            if (data.UseLabels && outputs is > 1 and <= 30)
            {
                var step = board.Add("confusion matrices", 2 * data.Evaluation.Count);
                int[] floatPredictions = Measurements.Predictions(floatModel, new CountingDataView(evaluation, n => step.Report(n), cancel), model.Output.Name, cancel);
                int[] quantPredictions = Measurements.Predictions(quantized, new CountingDataView(evaluation, n => step.Report(data.Evaluation.Count + n), cancel), model.Output.Name, cancel);
                var classes = data.Raw.ClassNames ?? Enumerable.Range(0, outputs).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList();
                confusion = new ConfusionPair(classes, Measurements.Confusion(data.Evaluation.Labels!, floatPredictions, outputs),
                    Measurements.Confusion(data.Evaluation.Labels!, quantPredictions, outputs));
                step.Complete();
            }

            // The outputs, into the staging folder.
            var write = board.Add("writing outputs", 5, "files");
            quantized.SaveAsOnnx(staging.FilePath("model.onnx"));
            write.Increment();
            table.Save(staging.FilePath("calibration.json"));
            write.Increment();
            DataViewSchema rawSchema = data.Raw.ToDataView(mlContext, [0]).Schema;
            mlContext.Model.Save(new TransformerChain<ITransformer>(data.Preprocessing, quantized), rawSchema, staging.FilePath("model.zip"));
            CheckZip(mlContext, staging.FilePath("model.zip"), data, model);
            write.Increment();
            File.WriteAllText(staging.FilePath("recipe.json"), recipe.ToJson() + "\n");
            string projectName = ProjectName(modelName: Path.GetFileNameWithoutExtension(model.Path));
            ConsumerProject.Write(staging.FilePath("consumer"), new ConsumerSpec(projectName, data.Raw.IsImages, data.Raw.Vectors?.RowElements ?? 0,
                    model.Output.Name, outputs, data.Raw.ClassNames,
                    data.Raw.IsImages ? data.EvaluationIndices.Take(4).Select(i => data.Raw.ImagePaths![i]).ToList() : [],
                    data.Raw.IsImages ? [] : data.EvaluationIndices.Take(4).Select(i => data.Raw.Vectors!.Row(i).ToArray()).ToList()),
                new LibraryReference(settings.LibraryProject, settings.PackageSource), "../model.zip");
            write.Increment();

            var trials = search.Trials.Select(t => new TrialSummary(t.Scheme.Name, t.Scheme.Why, t.Scheme.Precision.ToString() + (t.Scheme.Int8FirstLast ? " (first/last W8A8)" : ""),
                TrialRunner.Method(t.Scheme.Method), t.Scheme.FloatNodes.Count, t.Bytes, t.Quality, t.Loss, t.Comparison.Top1Agreement, t.Comparison.MeanCosineSimilarity,
                t.Comparison.OutputSqnrDb, t.Latency.MillisecondsPerRow, t.Latency.Backend, t.MeetsBudget, ReferenceEquals(t, chosen))).ToList();
            if (search.Table is { } searched && search.ChosenRow >= 0)
                trials = [.. searched.Select((row, i) => i == search.ChosenRow ? trials.Single(t => t.Chosen) : row)];
            var report = new ReportModel
            {
                ModelName = Path.GetFileName(model.Path),
                ModelPath = model.Path,
                FloatBytes = model.FileBytes,
                DataDescription = data.Raw.Description,
                Preprocessing = recipe.ToString(),
                CalibrationRows = data.Calibration.Count,
                EvaluationRows = data.Evaluation.Count,
                HasLabels = data.UseLabels,
                LabelNote = data.LabelNote,
                Budget = runner.Settings.Budget,
                Strategy = search.Strategy,
                ChoiceReason = search.Reason,
                RequestedBackend = runner.Settings.Backend.ToString(),
                Backend = quantized.Backend.ToString(),
                BackendNote = quantized.BackendFallbackReason is { } reason ? $"The native engine did not take the model ({reason}); it runs on ONNX Runtime." : null,
                Cpu = CpuVerdict.Describe(),
                FloatAccuracy = chosen.Comparison.FloatAccuracy,
                MetricName = runner.Settings.MetricName,
                Trials = trials,
                Layers = chosen.Comparison.Layers.Select(l => (l.TensorName, l.SqnrDb)).ToList(),
                Latencies = latencies,
                Histograms = histograms,
                Confusion = confusion,
                FloatNodes = quantized.FloatNodes.Select(n => new FloatNode(n.Name, n.OpType, n.Reason ?? "")).ToList(),
                QuantizedNodeCount = quantized.Nodes.Count(n => n.Precision is not null),
                Files =
                [
                    ("model.onnx", "the quantized model (QDQ ONNX): runs in ONNX Runtime or ML.NET's ApplyOnnxModel"),
                    ("model.zip", "ML.NET model: the preprocessing and the quantized model; mlContext.Quantization.LoadModel restores it"),
                    ("calibration.json", "the calibration table (docs/calibration-table.md)"),
                    ("recipe.json", "the preprocessing, reusable with --recipe"),
                    ("consumer/", $"{projectName}: a console project that loads model.zip and predicts (dotnet run)"),
                    ("report.html", "this report"),
                ],
                ToolVersion = ToolInfo.PackageVersion,
                Created = DateTimeOffset.Now,
            };
            File.WriteAllText(staging.FilePath("report.html"), HtmlReport.Render(report));
            write.Complete();
            return report;
        }
        finally
        {
            (floatModel as IDisposable)?.Dispose();
        }
    }

    private static QualityMetric Metric(string? name, PreparedData data) => name?.ToLowerInvariant() switch
    {
        null => data.UseLabels ? QualityMetric.Accuracy : QualityMetric.Agreement,
        "accuracy" => data.UseLabels ? QualityMetric.Accuracy : throw new ToolException($"--metric accuracy needs labels that index the model's output ({data.LabelNote})."),
        "agreement" => QualityMetric.Agreement,
        "cosine" => QualityMetric.Cosine,
        _ => throw new ToolException($"--metric: '{name}' is not accuracy, agreement or cosine."),
    };

    /// <summary>The saved zip restores and scores raw rows (a broken save fails here, before anything is committed).</summary>
    private static void CheckZip(MLContext mlContext, string path, PreparedData data, ModelInfo model)
    {
        ITransformer restored = mlContext.Quantization.LoadModel(path, out _);
        try
        {
            IDataView scored = restored.Transform(data.Raw.ToDataView(mlContext, data.EvaluationIndices.Take(2).ToList()));
            int rows = scored.GetColumn<VBuffer<float>>(model.Output.Name).Count();
            if (rows != Math.Min(2, data.EvaluationIndices.Count))
                throw new InvalidOperationException($"The saved model '{path}' scored {rows} rows instead of 2.");
        }
        finally
        {
            (restored as IDisposable)?.Dispose();
        }
    }

    private static string ProjectName(string modelName)
    {
        var letters = modelName.Split(['_', '-', '.', ' '], StringSplitOptions.RemoveEmptyEntries)
            .Select(p => char.ToUpperInvariant(p[0]) + p[1..]).Select(p => new string(p.Where(char.IsLetterOrDigit).ToArray()));
        string name = string.Concat(letters);
        if (name.Length == 0 || char.IsDigit(name[0]))
            name = "Model" + name;
        return name + "Consumer";
    }

    private static void PrintSummary(IAnsiConsole console, ReportModel report, string folder)
    {
        var chosen = report.Chosen;
        var table = new Table().Border(TableBorder.Rounded).AddColumns("trial", report.MetricName, "lost", "size KiB", "ms/row", "budget");
        foreach (var t in report.Trials)
            table.AddRow(Markup.Escape((t.Chosen ? "* " : "  ") + t.Name), F($"{t.Quality:P2}"), F($"{t.Loss:F2}"), F($"{t.Bytes / 1024.0:N0}"),
                F($"{t.MillisecondsPerRow:G4}"), t.WithinBudget is { } ok ? ok ? "[green]within[/]" : "[red]over[/]" : "-");
        console.Write(table);
        foreach (var l in report.Latencies)
            console.MarkupLine($"  {Markup.Escape(l.Backend)}: {(l.MillisecondsPerRow is { } ms ? F($"{ms:G4} ms/row, {l.RowsPerSecond:N0} rows/s") : Markup.Escape(l.Note ?? "-"))}");
        string verdict = report.Budget is null ? "" : chosen.WithinBudget == true ? " [green]within budget[/]" : " [red]budget missed[/]";
        console.MarkupLine($"[bold]kept {Markup.Escape(chosen.Name)}[/]:{verdict} {Markup.Escape(F($"{report.FloatBytes / 1024.0:N0} -> {chosen.Bytes / 1024.0:N0} KiB"))}");
        console.MarkupLine($"wrote {Markup.Escape(folder)}: model.onnx, model.zip, calibration.json, recipe.json, report.html, consumer/");
        console.MarkupLine($"  report: {Markup.Escape(Path.Combine(folder, "report.html"))}");
        console.MarkupLine($"  run the generated project: dotnet run --project {Markup.Escape(Path.Combine(folder, "consumer"))}");
    }
}

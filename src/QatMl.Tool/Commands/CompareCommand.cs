using System.ComponentModel;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;
using QatMl.Tool.Quantize;
using Spectre.Console;
using Spectre.Console.Cli;
using static QatMl.Tool.Cli.Invariant;

namespace QatMl.Tool.Commands;

internal sealed class CompareSettings : DataSettings
{
    [CommandArgument(0, "<FLOAT>")]
    [Description("The float ONNX model.")]
    public string FloatModel { get; init; } = "";

    [CommandArgument(1, "<QUANTIZED>")]
    [Description("The model.zip written by qatml quantize (its preprocessing is applied to --data).")]
    public string Quantized { get; init; } = "";

    [CommandOption("--budget <POINTS>")]
    [Description("Allowed loss in percentage points (accuracy with labels, else top-1 agreement): prints a verdict; exit code 3 when missed.")]
    public double? Budget { get; init; }

    [CommandOption("--eval-rows <N>")]
    [Description("Compare on at most N rows.")]
    public int? EvalRows { get; init; }
}

/// <summary><c>qatml compare</c>: the float model vs a saved quantized zip on the same raw rows (Compare's figures, per-layer SQNR).</summary>
internal sealed class CompareCommand(ToolEnvironment environment) : Command<CompareSettings>
{
    public override int Execute(CommandContext context, CompareSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Plain)
            environment.UsePlainOutput();
        IAnsiConsole console = environment.Console;
        ModelInfo model = ModelInfo.Load(settings.FloatModel);
        if (!File.Exists(settings.Quantized))
            throw new ToolException($"Quantized model '{settings.Quantized}' does not exist.");
        var mlContext = new MLContext(seed: 0);
        ITransformer restored = mlContext.Quantization.LoadModel(settings.Quantized, out _);
        var (preprocessing, quantized) = Split(restored, settings.Quantized);
        RawData raw = settings.LoadData();
        QuantizationComparison comparison = environment.Progress().Run(board =>
        {
            PreparedData data = PreparedData.Prepare(mlContext, model, raw, null, preprocessing, 0, settings.EvalRows, board, cancellationToken);
            if (data.LabelNote is { } note)
                board.Note($"  [grey]{Markup.Escape(note)}[/]");
            var step = board.Add("scoring float vs quantized", 2.0 * data.Evaluation.Count);
            var rows = new CountingDataView(data.Evaluation.ToDataView(mlContext), n => step.Report(n), cancellationToken);
            var result = mlContext.Quantization.Compare(model.Path, quantized, rows, new ComparisonOptions
            {
                LabelColumnName = data.UseLabels ? RawData.LabelColumn : null,
                MaxAccuracyDrop = settings.Budget,
                MeasureLatency = false,
            });
            step.Complete();
            return result;
        });
        var table = new Table().Border(TableBorder.Rounded).AddColumns("", "value");
        table.AddRow("rows", comparison.Rows.ToString(CultureInfo.InvariantCulture));
        if (comparison.FloatAccuracy is { } fa && comparison.QuantizedAccuracy is { } qa)
            table.AddRow("accuracy", F($"float {fa:P2}, quantized {qa:P2}, drop {comparison.AccuracyDrop:F2} points"));
        table.AddRow("top-1 agreement", F($"{comparison.Top1Agreement:P2}"));
        table.AddRow("output", F($"mean cosine {comparison.MeanCosineSimilarity:F5}, SQNR {comparison.OutputSqnrDb:F1} dB"));
        table.AddRow("size", F($"{comparison.FloatModelBytes:N0} -> {comparison.QuantizedModelBytes:N0} bytes ({(double)comparison.QuantizedModelBytes / comparison.FloatModelBytes:P1})"));
        table.AddRow("backend", quantized.Backend.ToString());
        foreach (var layer in comparison.Layers.Take(5))
            table.AddRow(Markup.Escape("SQNR " + layer.TensorName), F($"{layer.SqnrDb:F1} dB"));
        if (comparison.WithinBudget is { } ok)
            table.AddRow("budget", ok ? F($"[green]within {settings.Budget:G3} points[/]") : F($"[red]over {settings.Budget:G3} points[/]"));
        console.Write(table);
        quantized.Dispose();
        return comparison.WithinBudget == false ? QuantizeCommand.BudgetMissedExitCode : 0;
    }

    /// <summary>The transforms before the quantized model (the zip's preprocessing) and the quantized model itself.</summary>
    internal static (ITransformer Preprocessing, QuantizedModelTransformer Quantized) Split(ITransformer restored, string path)
    {
        if (restored is QuantizedModelTransformer alone)
            return (new TransformerChain<ITransformer>(), alone);
        if (restored is TransformerChain<ITransformer> chain && chain.LastTransformer is QuantizedModelTransformer last)
            return (new TransformerChain<ITransformer>(chain.Take(chain.Count() - 1).ToArray()), last);
        throw new ToolException($"'{path}' does not end with a QatMl quantized model (write it with qatml quantize, or mlContext.Model.Save of a QuantizedModelTransformer).");
    }
}

using Microsoft.ML;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Auto;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;

namespace QatMl.Tool.Quantize;

/// <summary>The trials run and the one kept.</summary>
internal sealed record SearchResult(IReadOnlyList<Trial> Trials, Trial Chosen, string Strategy, string Reason);

/// <summary>
/// <c>--precision int8|w4a8</c>: one trial. <c>--precision auto</c>: <c>mlContext.Quantization.Auto</c> against the
/// budget (calibration rows train, evaluation rows validate; accuracy with labels, else an output cosine of
/// 1 - budget / 100); its trials are printed as they end and the chosen model is compared and timed like a fixed scheme.
/// </summary>
internal static class SchemeSearch
{
    public static SearchResult Run(TrialRunner runner, string precision, ModelInfo model, ProgressBoard board)
    {
        switch (precision)
        {
            case "int8":
            case "w4a8":
            {
                var step = board.Add("trials", 1, "trials");
                Trial trial = runner.Run(precision == "int8" ? Scheme.Int8 : Scheme.W4A8);
                step.Complete(trial.ToString());
                return new SearchResult([trial], trial, $"fixed scheme {trial.Scheme.Name}", "the scheme asked for");
            }
            case "auto":
                return Auto(runner, model, board);
            default:
                throw new ToolException($"--precision: '{precision}' is not int8, w4a8 or auto.");
        }
    }

    private static SearchResult Auto(TrialRunner runner, ModelInfo model, ProgressBoard board)
    {
        RunSettings settings = runner.Settings;
        double budget = settings.Budget ?? 0.5;
        var step = board.Add("search trials (mlContext.Quantization.Auto)", MaxTrials, "trials");
        int done = 0;
        var options = new AutoQuantizationOptions
        {
            PostTraining = new PostTrainingOptions
            {
                ModelPath = model.Path, BatchSize = settings.BatchSize, IntraOpNumThreads = settings.Threads, SampleCount = runner.CalibrationRows, Backend = settings.Backend,
            },
            // Accuracy with labels; the agreement and cosine budgets as an output cosine of 1 - budget / 100.
            LabelColumnName = settings.Metric == QualityMetric.Accuracy ? runner.LabelColumn : null,
            MaxAccuracyDrop = budget,
            MinOutputCosine = 1 - budget / 100,
            MaxTrials = MaxTrials,
            ValidationRowCount = runner.EvaluationRows,
            CancellationToken = runner.Cancel,
            Progress = new SyncProgress<QuantizationTrial>(t =>
            {
                board.Note($"  [grey]trial {t.Index}:[/] {Spectre.Console.Markup.Escape(t.ToString())}");
                step.Report(++done, MaxTrials);
            }),
        };
        // Not disposed here: its only resource is the chosen model, which the trial below owns.
        AutoQuantizationResult result = runner.Context.Quantization.Auto(options).Execute(runner.Calibration, runner.EvaluationData);
        QuantizationTrial best = result.BestTrial;
        step.Complete($"{result.Trials.Count} trials, kept #{best.Index} {best.Configuration}");
        var scheme = new Scheme(best.Configuration, best.Precision, false, best.CalibrationMethod, best.FloatNodes,
            $"chosen by mlContext.Quantization.Auto among {result.Trials.Count} trials") { AutoTrial = best };
        Trial chosen = runner.Evaluate(scheme, result.Model);
        string plain = result.BestFixedScheme is { } p ? $"; the best plain scheme: {p.Configuration}, {p.SizeBytes / 1024.0:F0} KiB" : "; no plain scheme meets the budget";
        string reason = result.ConstraintMet
            ? $"the smallest of {result.Trials.Count(t => t.Accepted)} accepted trial(s) within the {budget:0.##}-point budget{plain}"
            : $"no trial is within the {budget:0.##}-point budget; the most accurate one";
        return new SearchResult([chosen], chosen, $"auto: mlContext.Quantization.Auto ({result.Trials.Count} trials, guided by sensitivity; docs/auto.md)", reason);
    }

    private const int MaxTrials = 20;
}

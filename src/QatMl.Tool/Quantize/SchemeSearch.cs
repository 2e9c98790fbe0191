using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Auto;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;
using QatMl.Tool.Report;

namespace QatMl.Tool.Quantize;

/// <summary>The trials run and the one kept.</summary>
/// <param name="Trials">The trials measured with Compare (the chosen one among them).</param>
/// <param name="Chosen">The trial kept.</param>
/// <param name="Strategy">How the trials were chosen.</param>
/// <param name="Reason">Why the chosen one was kept.</param>
/// <param name="Table">
/// The report's trial rows when a search measured more trials than it compared (auto: every trial of
/// mlContext.Quantization.Auto, the row at <paramref name="ChosenRow"/> replaced by the chosen trial's measurements); null:
/// one row per trial in <paramref name="Trials"/>.
/// </param>
/// <param name="ChosenRow">The chosen trial's row in <paramref name="Table"/>.</param>
internal sealed record SearchResult(IReadOnlyList<Trial> Trials, Trial Chosen, string Strategy, string Reason, IReadOnlyList<TrialSummary>? Table = null, int ChosenRow = -1);

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
        bool accuracy = settings.Metric == QualityMetric.Accuracy && runner.LabelColumn is not null;
        var step = board.Add("search trials (mlContext.Quantization.Auto)", MaxTrials, "trials");
        int done = 0;
        var options = new AutoQuantizationOptions
        {
            PostTraining = new PostTrainingOptions
            {
                ModelPath = model.Path, BatchSize = settings.BatchSize, IntraOpNumThreads = settings.Threads, SampleCount = runner.CalibrationRows, Backend = settings.Backend,
            },
            // Accuracy with labels; the agreement and cosine budgets as an output cosine of 1 - budget / 100.
            Metric = accuracy ? AutoQuantizationMetric.MulticlassAccuracy : AutoQuantizationMetric.OutputCosine,
            LabelColumnName = accuracy ? runner.LabelColumn : null,
            MaxAccuracyDrop = budget,
            MinOutputCosine = 1 - budget / 100,
            MaxTrials = MaxTrials,
            ValidationRowCount = runner.EvaluationRows,
            CancellationToken = runner.Cancel,
            Progress = new SyncProgress<QuantizationTrial>(t =>
            {
                string measured = double.IsNaN(t.Metric) ? t.Reason ?? "failed"
                    : string.Create(CultureInfo.InvariantCulture, $"{(accuracy ? "accuracy" : "output cosine")} {t.Metric:0.#####}, {t.SizeBytes / 1024.0:F0} KiB, {t.LatencyMilliseconds:F3} ms/row, {(t.Accepted ? "within budget" : t.Reason)}");
                board.Note($"  [grey]{(double.IsNaN(t.Metric) ? "failed trial" : "trial")} {t.Index}:[/] {Spectre.Console.Markup.Escape($"{t.Configuration}: {measured}")}");
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
        // The report lists every trial that ran, as the search measured it (the agreement and SQNR are not measured there; the
        // latency, one batch on the chosen backend, only for the trials within the budget).
        string searchBackend = (settings.Backend == Microsoft.ML.Quantization.Inference.QuantizedBackend.Native ? "native engine" : "ONNX Runtime") + " (search, one batch)";
        var ran = result.Trials.Where(t => !double.IsNaN(t.Metric)).ToList();
        var table = ran.Select(t => new TrialSummary(t.Configuration, t.FixedScheme ? "a plain scheme, tried first" : "a step of the guided search",
            t.Precision.ToString(), TrialRunner.Method(t.CalibrationMethod), t.FloatNodes.Count, t.SizeBytes,
            accuracy ? t.Metric / 100 : t.Metric, accuracy ? result.FloatMetric - t.Metric : (1 - t.Metric) * 100, double.NaN,
            accuracy ? double.NaN : t.Metric, double.NaN, t.LatencyMilliseconds, searchBackend, t.Accepted, false)).ToList();
        return new SearchResult([chosen], chosen, $"auto: mlContext.Quantization.Auto ({result.Trials.Count} trials, guided by sensitivity; docs/auto.md)", reason,
            table, ran.IndexOf(best));
    }

    private const int MaxTrials = 20;
}

using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Auto;

/// <summary>What <see cref="AutoQuantizationExperiment.Execute"/> found: the chosen model, every trial and the Pareto front.</summary>
public sealed class AutoQuantizationResult : IDisposable
{
    internal AutoQuantizationResult(QuantizedModelTransformer model, QuantizationTrial best, IReadOnlyList<QuantizationTrial> trials, AutoQuantizationMetric metricKind, string metric, double floatMetric,
        TimeSpan floatEvaluation, TimeSpan time)
    {
        Model = model;
        BestTrial = best;
        Trials = trials;
        MetricKind = metricKind;
        Metric = metric;
        FloatMetric = floatMetric;
        FloatEvaluationTime = floatEvaluation;
        Time = time;
    }

    /// <summary>The chosen configuration's quantized model (Save with <c>mlContext.Model.Save</c>, restore with <c>mlContext.Quantization.LoadModel</c>).</summary>
    public QuantizedModelTransformer Model { get; }

    /// <summary>The chosen trial: the best by the objective among the accepted ones, or the best metric when none was accepted.</summary>
    public QuantizationTrial BestTrial { get; }

    /// <summary>Whether <see cref="BestTrial"/> meets the constraint.</summary>
    public bool ConstraintMet => BestTrial.Accepted;

    /// <summary>Every trial in the order it ran.</summary>
    public IReadOnlyList<QuantizationTrial> Trials { get; }

    /// <summary>
    /// The accepted trials no other accepted trial beats on metric, size and latency together (metric first, then size): the
    /// trade-offs among the models that meet the constraint (only those have a measured latency). Empty when none was accepted.
    /// </summary>
    public IReadOnlyList<QuantizationTrial> ParetoFront => [.. Trials.Where(t => t.Accepted && !Trials.Any(u => u.Accepted && Dominates(u, t)))
        .OrderByDescending(t => t.Metric).ThenBy(t => t.SizeBytes)];

    /// <summary>The smallest accepted plain scheme (INT8, W4A8 or W4A4 with MinMax), or null when none met the constraint.</summary>
    public QuantizationTrial? BestFixedScheme => Trials.Where(t => t.FixedScheme && t.Accepted).OrderBy(t => t.SizeBytes).ThenByDescending(t => t.Metric).FirstOrDefault();

    /// <summary>How the trials were scored.</summary>
    public AutoQuantizationMetric MetricKind { get; }

    /// <summary>The metric in words: "accuracy" (percent), "AUC", "R-squared", "output cosine" or "output SQNR" (dB).</summary>
    public string Metric { get; }

    /// <summary>The float model's metric on the validation rows (accuracy, AUC or R-squared; 1 for the output cosine, infinity for the output SQNR).</summary>
    public double FloatMetric { get; }

    /// <summary>Wall time of one float scoring pass over the validation rows (the unit the experiment's cost is told in).</summary>
    public TimeSpan FloatEvaluationTime { get; }

    /// <summary>Wall time of the whole experiment, calibration and preparation included.</summary>
    public TimeSpan Time { get; }

    /// <summary>The trial table, one line per trial.</summary>
    public override string ToString() => string.Join(Environment.NewLine, Trials.Select(t => (t == BestTrial ? "* " : "  ") + t));

    private static bool Dominates(QuantizationTrial u, QuantizationTrial t)
        => u.Metric >= t.Metric && u.SizeBytes <= t.SizeBytes && u.LatencyMilliseconds <= t.LatencyMilliseconds
           && (u.Metric > t.Metric || u.SizeBytes < t.SizeBytes || u.LatencyMilliseconds < t.LatencyMilliseconds);

    /// <summary>Disposes <see cref="Model"/>.</summary>
    public void Dispose() => Model.Dispose();
}

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>One quantized node's effect on the model's outputs, measured on calibration rows.</summary>
/// <param name="Name">The node.</param>
/// <param name="OpType">Its op type.</param>
/// <param name="Alone">The metric (see <see cref="SensitivityReport.Metric"/>) with only this node quantized.</param>
/// <param name="KeptFloat">Whether the analysis left it float.</param>
public sealed record NodeSensitivity(string Name, string OpType, double Alone, bool KeptFloat)
{
    /// <summary>The wider precision the analysis gave the node (8-bit weights for a W4 node), or null.</summary>
    public QuantizationPrecision? Raised { get; init; }
}

/// <summary>What the sensitivity analysis of <c>PostTraining</c> measured and decided.</summary>
public sealed class SensitivityReport
{
    [System.Text.Json.Serialization.JsonConstructor]
    internal SensitivityReport() { }

    /// <summary>"output cosine" (mean over rows, worst output) or "accuracy drop" (percentage points against the label).</summary>
    public required string Metric { get; init; }

    /// <summary>The target on the calibration rows: the least cosine (half of the loss MinOutputCosine allows), or the largest accuracy drop.</summary>
    public double Target { get; init; }

    /// <summary>The metric with every node quantized.</summary>
    public double AllQuantized { get; init; }

    /// <summary>The metric with the nodes in <see cref="Nodes"/> marked KeptFloat left float and those marked Raised widened.</summary>
    public double Final { get; init; }

    /// <summary>Whether <see cref="Final"/> meets <see cref="Target"/> (false when even the analysis could not reach it).</summary>
    public bool TargetMet { get; init; }

    /// <summary>Calibration rows the metric was measured on.</summary>
    public int Rows { get; init; }

    /// <summary>Model runs over those rows.</summary>
    public int Evaluations { get; init; }

    /// <summary>Every compute node measured, most sensitive first (empty when the fully quantized model met the target).</summary>
    public IReadOnlyList<NodeSensitivity> Nodes { get; init; } = [];

    /// <summary>The nodes left float.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IEnumerable<NodeSensitivity> KeptFloat => Nodes.Where(n => n.KeptFloat);

    /// <summary>The nodes given a wider precision (8-bit weights) instead of being left float.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IEnumerable<NodeSensitivity> Raised => Nodes.Where(n => n.Raised is not null && !n.KeptFloat);

    /// <summary>Checks a report restored from a model zip: what a hand-edited JSON could leave null or out of range.</summary>
    internal void Validate()
    {
        if (Metric is null || Nodes is null || Nodes.Any(n => n?.Name is null || n.OpType is null))
            throw new ArgumentException("The sensitivity report lacks its metric or node list, or a node's name or op type.");
        if (Rows < 0 || Evaluations < 0)
            throw new ArgumentException($"The sensitivity report has a negative row or evaluation count ({Rows}, {Evaluations}).");
        foreach (var n in Nodes)
            n.Raised?.Validate($"Sensitivity node '{n.Name}'");
    }
}

/// <summary>
/// Finds the quantized nodes that cost the most accuracy and widens them until a target is met, on switchable
/// fake-quantized graphs (<see cref="FakeQuantGraph"/>) over the first calibration rows. Each step measures the model
/// as asked; when it misses the target, each switched node is measured alone, the nodes are ranked by that, and the
/// shortest most-sensitive prefix switched off that meets the target is found by doubling then bisection. Step 1
/// (nodes below 8-bit weights) gives the most sensitive 8-bit weights; step 2 (when step 1 is not enough, or there is
/// none) leaves the most sensitive nodes float.
/// </summary>
internal static class SensitivityAnalysis
{
    internal sealed record Result(Dictionary<string, string> KeptFloat, Dictionary<string, QuantizationPrecision> Raised, SensitivityReport Report);

    public static Result Run(MLContext context, OnnxModel prepared, CalibrationTable table, PostTrainingOptions options, RowSample rows, string modelName, IChannel channel,
        IReadOnlyDictionary<string, string>? keptFloat = null, IReadOnlyDictionary<string, float[]>? inputMeans = null)
    {
        bool accuracy = options.MaxAccuracyDrop is not null;
        string metric = accuracy ? "accuracy drop" : "output cosine";
        // The calibration ranges fit the calibration rows, so held-out rows lose more: the cosine target is aimed at
        // with half the allowed loss in reserve (0.99 -> 0.995 on the calibration rows).
        double target = options.MaxAccuracyDrop ?? 1 - (1 - options.MinOutputCosine) / 2;
        bool Meets(double value) => accuracy ? value <= target : value >= target;

        // The float model's outputs on the rows: the reference of every measurement.
        using var reference = new SampleRunner(context, prepared.Clone(), 0, options, modelName, rows);
        float[][] expected = reference.Run(null);
        int evaluations = 1;
        var report = new List<NodeSensitivity>();
        var raised = new Dictionary<string, QuantizationPrecision>(StringComparer.Ordinal);
        double? all = null;

        // 1. Nodes below 8-bit weights (W4A8): the most sensitive get 8-bit weights first.
        var plan = QdqPlan.Create(prepared.Clone(), table, options, keptFloat, inputMeans: inputMeans);
        var low = plan.ComputeNodes.Where(n => plan.Precision[n].WeightBits < 8 && plan.Constants.Keys.Any(k => k.Node == n)).ToDictionary(n => n, n => plan.Precision[n], StringComparer.Ordinal);
        if (low.Count > 0)
        {
            var wide = low.ToDictionary(kv => kv.Key, kv => new QuantizationPrecision(8, kv.Value.ActivationBits), StringComparer.Ordinal);
            var fake = FakeQuantGraph.Build(plan, QdqPlan.Create(prepared.Clone(), table, options, keptFloat, wide, inputMeans));
            using var runner = new SampleRunner(context, fake.Model, fake.Switches.Count, options, modelName, rows) { Reference = expected };
            var search = Search(runner, fake.Switches.Count, accuracy, Meets, options.CancellationToken);
            evaluations += runner.Evaluations;
            all = search.All;
            foreach (int i in search.Reached ? search.Kept : Enumerable.Range(0, fake.Switches.Count))
                raised[fake.Switches[i]] = wide[fake.Switches[i]];
            report.AddRange(search.Ranked.Select(i => new NodeSensitivity(fake.Switches[i], plan.Node(fake.Switches[i]).OpType, search.Alone[i], false)
            {
                Raised = raised.GetValueOrDefault(fake.Switches[i]),
            }));
            if (search.Reached)
                return Finish(search.Final, []);
        }

        // 2. Nodes left float, most sensitive first (with the 8-bit weights chosen above).
        {
            var floatPlan = QdqPlan.Create(prepared.Clone(), table, options, keptFloat, raised, inputMeans);
            var fake = FakeQuantGraph.Build(floatPlan);
            using var runner = new SampleRunner(context, fake.Model, fake.Switches.Count, options, modelName, rows) { Reference = expected };
            var search = Search(runner, fake.Switches.Count, accuracy, Meets, options.CancellationToken);
            evaluations += runner.Evaluations;
            all ??= search.All;
            var kept = search.Kept.Select(i => fake.Switches[i]).ToHashSet(StringComparer.Ordinal);
            foreach (string name in kept)
                raised.Remove(name);
            var nodes = search.Ranked.Select(i => fake.Switches[i])
                .Select((name, k) => new NodeSensitivity(name, floatPlan.Node(name).OpType, search.Alone[search.Ranked[k]], kept.Contains(name)) { Raised = raised.GetValueOrDefault(name) })
                .ToList();
            // A node measured in both steps is reported once, with the float step's measurement.
            report.RemoveAll(r => nodes.Any(n => n.Name == r.Name));
            report.InsertRange(0, nodes);
            var reasons = nodes.Where(x => x.KeptFloat).ToDictionary(x => x.Name,
                x => $"kept float by the sensitivity analysis (quantized alone it gives {metric} {x.Alone:F4}; target {target:0.####})", StringComparer.Ordinal);
            return Finish(search.Final, reasons, search.Reached);
        }

        Result Finish(double final, Dictionary<string, string> kept, bool reached = true)
        {
            channel.Info(MessageSensitivity.None, "{0}", $"Sensitivity analysis on {rows.Count} calibration rows: {metric} {all:F4} as asked, {final:F4} with " +
                $"{raised.Count} nodes given 8-bit weights and {kept.Count} left float{(kept.Count > 0 ? $" ({string.Join(", ", kept.Keys.Take(8).Select(k => $"'{k}'"))}{(kept.Count > 8 ? $" and {kept.Count - 8} more" : "")})" : "")}" +
                $"{(reached ? "" : $"; the target {target:0.####} was not reached")}; {evaluations} runs.");
            return new Result(kept, raised, new SensitivityReport
            {
                Metric = metric, Target = target, AllQuantized = all!.Value, Final = final, TargetMet = reached, Rows = rows.Count, Evaluations = evaluations, Nodes = report,
            });
        }
    }

    /// <summary>What one search found: the ranking (most sensitive first), each node's metric alone, the nodes switched off and the result.</summary>
    private sealed record SearchResult(double All, double[] Alone, int[] Ranked, HashSet<int> Kept, double Final, bool Reached);

    /// <summary>Each flag on alone: its metric, and the flags most sensitive first.</summary>
    internal static (double[] Alone, int[] Ranked) Rank(SampleRunner runner, int n, bool accuracy, CancellationToken cancel)
    {
        var alone = new double[n];
        var on = new bool[n];
        for (int i = 0; i < n; i++)
        {
            cancel.ThrowIfCancellationRequested();
            Array.Clear(on);
            on[i] = true;
            alone[i] = runner.Measure(on, accuracy);
        }
        return (alone, [.. Enumerable.Range(0, n).OrderBy(i => accuracy ? -alone[i] : alone[i]).ThenBy(i => i)]);
    }

    /// <summary>
    /// With every flag on, then (when that misses the target) each flag on alone: the nodes ranked, and the shortest
    /// most-sensitive prefix switched off that meets the target (doubling, then bisection).
    /// </summary>
    private static SearchResult Search(SampleRunner runner, int n, bool accuracy, Func<double, bool> meets, CancellationToken cancel)
    {
        var on = new bool[n];
        double Measure(Func<int, bool> quantized)
        {
            for (int i = 0; i < n; i++)
                on[i] = quantized(i);
            return runner.Measure(on, accuracy);
        }
        double all = Measure(_ => true);
        if (meets(all) || n == 0)
            return new SearchResult(all, [], [], [], all, meets(all));

        var (alone, ranked) = Rank(runner, n, accuracy, cancel);
        var cache = new Dictionary<int, double> { [0] = all };
        double WithPrefixOff(int k)
        {
            if (!cache.TryGetValue(k, out double value))
            {
                var off = ranked.Take(k).ToHashSet();
                cache[k] = value = Measure(i => !off.Contains(i));
            }
            return value;
        }
        int lowCount = 0, highCount = 1;
        while (highCount < n && !meets(WithPrefixOff(highCount)))
        {
            lowCount = highCount;
            highCount = Math.Min(n, highCount * 2);
        }
        highCount = Math.Min(highCount, n);
        bool reached = meets(WithPrefixOff(highCount));
        while (reached && highCount - lowCount > 1)
        {
            int mid = (lowCount + highCount) / 2;
            if (meets(WithPrefixOff(mid)))
                highCount = mid;
            else
                lowCount = mid;
        }
        int count = reached ? highCount : n;
        return new SearchResult(all, alone, ranked, [.. ranked.Take(count)], WithPrefixOff(count), reached);
    }
}

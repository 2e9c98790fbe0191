using Microsoft.ML.Quantization.Calibration;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;

namespace QatMl.Tool.Quantize;

/// <summary>The trials run and the one kept.</summary>
internal sealed record SearchResult(IReadOnlyList<Trial> Trials, Trial Chosen, string Strategy, string Reason);

/// <summary>
/// <c>--precision int8|w4a8</c>: one trial. <c>--precision auto</c>: a fixed-scheme sweep against the budget, built
/// from the public API (PostTraining options and Compare), not a general search: INT8 first; if it fits, W4A8 (smaller);
/// if not, INT8 with Percentile then Entropy ranges, then INT8 with the nodes around the worst tensors (lowest SQNR)
/// kept in float. The smallest trial within budget wins (ties: the more accurate); with none within budget, the most
/// accurate. A richer automatic experiment can replace <see cref="Auto"/> behind the same <see cref="SearchResult"/>.
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
        var trials = new List<Trial>();
        var step = board.Add("search trials", 2, "trials");
        Trial Try(Scheme scheme, int planned)
        {
            step.Describe($"search trials ({scheme.Name})");
            Trial t = runner.Run(scheme);
            trials.Add(t);
            board.Note($"  [grey]trial {trials.Count}:[/] {Spectre.Console.Markup.Escape(t.ToString())}");
            step.Report(trials.Count, planned);
            return t;
        }

        try
        {
            Trial int8 = Try(Scheme.Int8, 2);
            if (int8.MeetsBudget != false)
                Try(Scheme.W4A8, 2);
            else
            {
                Trial best = int8;
                foreach (var method in new[] { CalibrationMethod.Percentile, CalibrationMethod.Entropy })
                {
                    var t = Try(Scheme.Int8 with { Name = $"INT8 {TrialRunner.Method(method)}", Method = method, Why = $"INT8 missed the budget; {TrialRunner.Method(method)} clips outliers" }, 5);
                    if (t.Loss < best.Loss)
                        best = t;
                    if (t.MeetsBudget == true)
                        break;
                }
                if (trials.All(t => t.MeetsBudget != true))
                {
                    foreach (int worst in new[] { 1, 3 })
                    {
                        string[] nodes = NodesAround(model, best.Comparison.Layers.Take(worst).Select(l => l.TensorName));
                        if (nodes.Length == 0)
                            break;
                        var t = Try(best.Scheme with
                        {
                            Name = $"{best.Scheme.Name} + {nodes.Length} float node(s)",
                            FloatNodes = nodes,
                            Why = $"keeps the nodes around the {worst} lowest-SQNR tensor(s) in float",
                        }, trials.Count + (worst == 1 ? 2 : 1));
                        if (t.MeetsBudget == true)
                            break;
                    }
                }
            }
            step.Report(trials.Count, trials.Count);
            var within = trials.Where(t => t.MeetsBudget == true).ToList();
            Trial chosen;
            string reason;
            if (within.Count > 0)
            {
                chosen = within.OrderBy(t => t.Bytes).ThenByDescending(t => t.Quality).First();
                reason = $"the smallest of {within.Count} trial(s) within the {runner.Settings.Budget:0.##}-point budget of {runner.Settings.MetricName}";
            }
            else
            {
                chosen = trials.OrderBy(t => t.Loss).ThenBy(t => t.Bytes).First();
                reason = $"no trial is within the {runner.Settings.Budget:0.##}-point budget; the most accurate one";
            }
            step.Complete($"{trials.Count} trials, kept {chosen.Scheme.Name}");
            return new SearchResult(trials, chosen, "auto: fixed-scheme sweep (INT8, W4A8; if INT8 misses: Percentile, Entropy, float fallback of the worst tensors)", reason);
        }
        catch
        {
            foreach (var t in trials)
                t.Dispose();
            throw;
        }
    }

    /// <summary>The producer and consumers of each tensor (so it is neither written nor read quantized).</summary>
    private static string[] NodesAround(ModelInfo model, IEnumerable<string> tensors)
    {
        var graph = model.Model.Graph;
        var names = new List<string>();
        foreach (string tensor in tensors)
        {
            if (graph.Producer(tensor) is { } producer && producer.Name.Length > 0)
                names.Add(producer.Name);
            names.AddRange(graph.Consumers(tensor).Select(n => n.Name).Where(n => n.Length > 0));
        }
        return names.Distinct(StringComparer.Ordinal).ToArray();
    }
}

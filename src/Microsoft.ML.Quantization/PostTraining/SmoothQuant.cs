using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// SmoothQuant (Xiao et al. 2023): a MatMul's activation outliers sit in a few input channels, which per-tensor
/// activation quantization cannot represent next to the others. Dividing input channel k by
/// s_k = max|X_k|^alpha / max|W_k|^(1 - alpha) and multiplying weight row k by s_k leaves the product unchanged and moves
/// the outliers into the weights, which are quantized per output channel. The division is a float Mul before the
/// MatMul (shared by the MatMuls reading one tensor, whose weight rows take the largest |W_k|); the smoothed tensor's
/// range follows exactly from the per-channel ranges, so no second calibration is needed. Alpha is searched: each
/// candidate (and no smoothing) is measured on the fake-quantized graph, and the best output cosine wins.
/// </summary>
internal static class SmoothQuant
{
    internal const string NodePrefix = "qatml_smooth";

    internal sealed record Result(OnnxModel Model, CalibrationTable Table, double? Alpha, int Smoothed, IReadOnlyDictionary<string, string> FloatNodes, string Summary);

    /// <summary>
    /// The best of the alphas and no smoothing by the output cosine of the fake-quantized graph on <paramref name="rows"/>.
    /// With <paramref name="minOutlierRatio"/> above 0, smooths only when some smoothed activation has outlier channels: its
    /// largest channel magnitude at least that many times its median channel's.
    /// </summary>
    public static Result Apply(MLContext context, OnnxModel prepared, CalibrationTable table, PostTrainingOptions options, RowSample rows, string modelName,
        float[][] reference, double minOutlierRatio = 0)
    {
        var plan = QdqPlan.Create(prepared.Clone(), table, options);
        // MatMul / Gemm (transA 0) reading an activation with constant 2-D weights, grouped by the activation they read.
        var targets = plan.ComputeNodes.Select(plan.Node)
            .Where(n => n.OpType is "MatMul" or "Gemm" && n.GetInt("transA", 0) == 0 && plan.Constants.TryGetValue((n.Name, 1), out var w) && w.Source.Dims.Length == 2
                        && plan.Activations.ContainsKey(n.Inputs[0]) && !rows.Inputs.Any(i => i.TensorName == n.Inputs[0] && (!i.Batched || i.ElementType != Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)))
            .GroupBy(n => n.Inputs[0], StringComparer.Ordinal).ToList();
        if (targets.Count == 0)
            return new Result(prepared, table, null, 0, new Dictionary<string, string>(), "no MatMul/Gemm reads a quantized activation with constant weights");

        // Per input channel (the last axis) min and max of each smoothed activation over the calibration rows: graph
        // inputs from the rows themselves, other tensors as extra outputs of the float model.
        string[] tensors = [.. targets.Select(t => t.Key)];
        var values = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (string t in tensors)
        {
            int k = Array.FindIndex(rows.Inputs, i => i.TensorName == t);
            if (k >= 0)
                values[t] = ((float[])rows.Data[k])[..(rows.Count * rows.Inputs[k].RowSize)];
        }
        string[] computed = [.. tensors.Where(t => !values.ContainsKey(t))];
        if (computed.Length > 0)
        {
            using var runner = new SampleRunner(context, prepared, 0, options, modelName, rows, computed);
            float[][] outputs = runner.Run(null);
            for (int i = 0; i < computed.Length; i++)
                values[computed[i]] = outputs[i];
        }
        var stats = new Dictionary<string, (float[] Min, float[] Max)>(StringComparer.Ordinal);
        foreach (var group in targets)
        {
            int k = Channels(prepared.Graph, group.First());
            if (k > 0 && values[group.Key].Length % k == 0)
                stats[group.Key] = ChannelRanges(values[group.Key], k);
        }

        double ratio = stats.Values.Select(OutlierRatio).DefaultIfEmpty(0).Max();
        if (ratio < minOutlierRatio)
            return new Result(prepared, table, null, 0, new Dictionary<string, string>(), $"no activation outliers: the largest channel is {ratio:F1}x the median one, under {minOutlierRatio}");

        double Measure(OnnxModel model, CalibrationTable t, IReadOnlyDictionary<string, string> floatNodes)
        {
            var fake = FakeQuantGraph.Build(QdqPlan.Create(model.Clone(), t, options, floatNodes));
            using var runner = new SampleRunner(context, fake.Model, fake.Switches.Count, options, modelName, rows) { Reference = reference };
            return runner.Measure(Enumerable.Repeat(true, fake.Switches.Count).ToArray(), accuracy: false);
        }

        double best = Measure(prepared, table, new Dictionary<string, string>());
        var result = new Result(prepared, table, null, 0, new Dictionary<string, string>(), "");
        var measured = new List<string> { $"none {best:F4}" };
        foreach (double alpha in options.SmoothQuantAlphas)
        {
            var candidate = Smooth(prepared, table, targets, stats, alpha);
            double score = Measure(candidate.Model, candidate.Table, candidate.FloatNodes);
            measured.Add($"{alpha:0.##} {score:F4}");
            if (score > best)
                (best, result) = (score, candidate with { Alpha = alpha });
        }
        return result with { Summary = $"output cosine (all quantized) by alpha: {string.Join(", ", measured)}" };
    }

    /// <summary>The largest channel magnitude over the median one (a channel's magnitude: max(|min|, |max|)).</summary>
    private static double OutlierRatio((float[] Min, float[] Max) range)
    {
        float[] magnitude = [.. range.Min.Zip(range.Max, (lo, hi) => MathF.Max(-lo, hi))];
        float max = magnitude.Max();
        Array.Sort(magnitude);
        return max / Math.Max(magnitude[magnitude.Length / 2], 1e-6);
    }

    /// <summary>The last-axis size of a target's input: MatMul B's rows, Gemm B's K.</summary>
    private static int Channels(OnnxGraph g, OnnxNode node)
    {
        if (!g.TryGetInitializer(node.Inputs[1], out var w) || w.Dims.Length != 2)
            return 0;
        return checked((int)(node.OpType == "Gemm" && node.GetInt("transB", 0) != 0 ? w.Dims[1] : w.Dims[0]));
    }

    private static (float[] Min, float[] Max) ChannelRanges(float[] values, int channels)
    {
        var min = Enumerable.Repeat(float.PositiveInfinity, channels).ToArray();
        var max = Enumerable.Repeat(float.NegativeInfinity, channels).ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i];
            if (!float.IsFinite(v))
                continue;
            int c = i % channels;
            min[c] = MathF.Min(min[c], v);
            max[c] = MathF.Max(max[c], v);
        }
        for (int c = 0; c < channels; c++)
            if (min[c] > max[c])
                (min[c], max[c]) = (0, 0);
        return (min, max);
    }

    private static Result Smooth(OnnxModel prepared, CalibrationTable table, List<IGrouping<string, OnnxNode>> targets,
        Dictionary<string, (float[] Min, float[] Max)> stats, double alpha)
    {
        var model = prepared.Clone();
        var g = model.Graph;
        var nodes = g.Nodes.ToDictionary(n => n.Name, StringComparer.Ordinal);
        var entries = table.ToDictionary(e => e.TensorName, StringComparer.Ordinal);
        var floatNodes = new Dictionary<string, string>(StringComparer.Ordinal);
        int smoothed = 0;
        foreach (var group in targets)
        {
            if (!stats.TryGetValue(group.Key, out var range))
                continue;
            int k = range.Min.Length;
            // max|W_k| over every reader's row k.
            var weightMax = new float[k];
            var weights = new List<(OnnxNode Node, OnnxTensor W, bool RowsAreK)>();
            foreach (var target in group)
            {
                var node = nodes[target.Name];
                g.TryGetInitializer(node.Inputs[1], out var w);
                bool kFirst = !(node.OpType == "Gemm" && node.GetInt("transB", 0) != 0);   // [K, N] or [N, K]
                int n = checked((int)(kFirst ? w.Dims[1] : w.Dims[0]));
                float[] v = w.ToFloatArray();
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < n; j++)
                        weightMax[i] = MathF.Max(weightMax[i], MathF.Abs(v[kFirst ? i * n + j : j * k + i]));
                weights.Add((node, w, kFirst));
            }
            var scale = new float[k];
            for (int i = 0; i < k; i++)
            {
                double a = Math.Max(Math.Max(-range.Min[i], range.Max[i]), 1e-5), b = Math.Max(weightMax[i], 1e-5);
                scale[i] = (float)Math.Clamp(Math.Pow(a, alpha) / Math.Pow(b, 1 - alpha), 1e-4, 1e4);
            }
            // x / s as a float Mul; every reader takes the smoothed tensor and rows scaled by s.
            string inverse = g.FreshName(NodePrefix + "_inverse_scale");
            g.SetInitializer(OnnxTensor.FromFloats(inverse, [k], [.. scale.Select(s => 1f / s)]));
            string smoothedTensor = g.FreshName(group.Key + "_smoothed");
            var mul = g.AddNode("Mul", [group.Key, inverse], [smoothedTensor], g.FreshName(NodePrefix + "_" + group.Key));
            floatNodes[mul.Name] = "SmoothQuant's division of the input channels stays float (its output is quantized for the MatMul)";
            foreach (var (node, w, kFirst) in weights)
            {
                int n = checked((int)(kFirst ? w.Dims[1] : w.Dims[0]));
                float[] v = w.ToFloatArray();
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < n; j++)
                        v[kFirst ? i * n + j : j * k + i] *= scale[i];
                string name = g.FreshName(w.Name + "_smoothed");
                g.SetInitializer(OnnxTensor.FromFloats(name, w.Dims, v));
                node.Inputs[1] = name;
                node.Inputs[0] = smoothedTensor;
            }
            // The smoothed tensor's range follows from the channel ranges.
            float lo = 0, hi = 0;
            for (int i = 0; i < k; i++)
            {
                lo = MathF.Min(lo, range.Min[i] / scale[i]);
                hi = MathF.Max(hi, range.Max[i] / scale[i]);
            }
            var original = entries[group.Key];
            bool signed = original.IsSigned;
            var p = QuantizationParameters.Compute(lo, hi, original.Bits, signed, original.IsSymmetric);
            entries[smoothedTensor] = new CalibrationTableEntry(smoothedTensor, TensorKind.Activation, original.Method, original.Bits, signed, original.IsSymmetric,
                null, [lo], [hi], [p.Scale], [p.ZeroPoint], original.Histogram);
            smoothed += weights.Count;
        }
        g.RemoveUnused();
        g.SortTopologically();
        var smoothedTable = new CalibrationTable();
        foreach (var e in entries.Values)
            smoothedTable.Add(e);
        return new Result(model, smoothedTable, alpha, smoothed, floatNodes, "");
    }
}

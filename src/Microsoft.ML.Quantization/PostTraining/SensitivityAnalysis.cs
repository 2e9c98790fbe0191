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
    public IEnumerable<NodeSensitivity> KeptFloat => Nodes.Where(n => n.KeptFloat);

    /// <summary>The nodes given a wider precision (8-bit weights) instead of being left float.</summary>
    public IEnumerable<NodeSensitivity> Raised => Nodes.Where(n => n.Raised is not null && !n.KeptFloat);
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

    public static Result Run(MLContext context, OnnxModel prepared, CalibrationTable table, PostTrainingOptions options, IDataView data, string modelName, IChannel channel)
    {
        bool accuracy = options.MaxAccuracyDrop is not null;
        string metric = accuracy ? "accuracy drop" : "output cosine";
        // The calibration ranges fit the calibration rows, so held-out rows lose more: the cosine target is aimed at
        // with half the allowed loss in reserve (0.99 -> 0.995 on the calibration rows).
        double target = options.MaxAccuracyDrop ?? 1 - (1 - options.MinOutputCosine) / 2;
        bool Meets(double value) => accuracy ? value <= target : value >= target;

        // The float model's outputs on the rows: the reference of every measurement.
        using var reference = new Runner(context, prepared.Clone(), 0, options, modelName, RowSample.Load(context, prepared, options, data, modelName));
        var rows = reference.Rows;
        float[][] expected = reference.Run(null);
        int evaluations = 1;
        var report = new List<NodeSensitivity>();
        var raised = new Dictionary<string, QuantizationPrecision>(StringComparer.Ordinal);
        double? all = null;

        // 1. Nodes below 8-bit weights (W4A8): the most sensitive get 8-bit weights first.
        var plan = QdqPlan.Create(prepared.Clone(), table, options);
        var low = plan.ComputeNodes.Where(n => plan.Precision[n].WeightBits < 8 && plan.Constants.Keys.Any(k => k.Node == n)).ToDictionary(n => n, n => plan.Precision[n], StringComparer.Ordinal);
        if (low.Count > 0)
        {
            var wide = low.ToDictionary(kv => kv.Key, kv => new QuantizationPrecision(8, kv.Value.ActivationBits), StringComparer.Ordinal);
            var fake = FakeQuantGraph.Build(plan, QdqPlan.Create(prepared.Clone(), table, options, precisionOverrides: wide));
            using var runner = new Runner(context, fake.Model, fake.Switches.Count, options, modelName, rows) { Reference = expected };
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
            var floatPlan = QdqPlan.Create(prepared.Clone(), table, options, precisionOverrides: raised);
            var fake = FakeQuantGraph.Build(floatPlan);
            using var runner = new Runner(context, fake.Model, fake.Switches.Count, options, modelName, rows) { Reference = expected };
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

    /// <summary>
    /// With every flag on, then (when that misses the target) each flag on alone: the nodes ranked, and the shortest
    /// most-sensitive prefix switched off that meets the target (doubling, then bisection).
    /// </summary>
    private static SearchResult Search(Runner runner, int n, bool accuracy, Func<double, bool> meets, CancellationToken cancel)
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

        var alone = new double[n];
        for (int i = 0; i < n; i++)
        {
            cancel.ThrowIfCancellationRequested();
            alone[i] = Measure(j => j == i);
        }
        int[] ranked = [.. Enumerable.Range(0, n).OrderBy(i => accuracy ? -alone[i] : alone[i]).ThenBy(i => i)];
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

    /// <summary>The first calibration rows, held in memory typed as their inputs, with their labels when a target needs them.</summary>
    private sealed class RowSample
    {
        public required InputSpec[] Inputs { get; init; }
        public required Array[] Data { get; init; }
        public long[]? Labels { get; init; }
        public required int Count { get; init; }
        public required bool FixedBatch { get; init; }
        public required string[] Outputs { get; init; }

        public static RowSample Load(MLContext context, OnnxModel model, PostTrainingOptions options, IDataView data, string modelName)
        {
            var graph = model.Graph;
            var result = OrtSessionFactory.Create(context, model.ToBytes(), options, modelName);
            using var session = result.Session;
            var inputBindings = options.Inputs.Count > 0 ? options.Inputs : graph.RuntimeInputs.Select(i => new OnnxColumnBinding(i.Name, i.Name)).ToList();
            string[] outputs = options.Outputs.Count > 0 ? [.. options.Outputs.Select(o => o.TensorName)]
                : [.. graph.Outputs.Where(o => o.ElementType == OnnxElementType.Float).Select(o => o.Name)];
            var (inputs, _, fixedBatch) = OrtBatchScorer.Describe(session, modelName, inputBindings,
                outputs.Select(o => new OnnxColumnBinding(o, o)).ToList(), options.InputShapes, options.BatchSize);
            BatchScorerSchema.ValidateInputSchema(inputs, data.Schema, "input");

            int wanted = Math.Max(1, options.SensitivityRowCount);
            var store = new RowStore(inputs, wanted);
            var columns = inputs.Select(i => data.Schema[i.ColumnName]).ToList();
            DataViewSchema.Column? label = options.MaxAccuracyDrop is null ? null
                : data.Schema.GetColumnOrNull(options.LabelColumnName!) ?? throw Internal.SchemaErrors.MissingColumn("input", options.LabelColumnName!);
            using var cursor = data.GetRowCursor(label is { } l ? columns.Append(l) : columns);
            var readers = columns.Select((c, k) => BatchScorerSchema.CreateReader(cursor, c, inputs[k], k)).ToArray();
            Func<long>? getLabel = label is { } lc ? QuantizationComparer.LabelGetter(cursor, lc) : null;
            var labels = new List<long>();
            int count = 0;
            while (count < wanted && cursor.MoveNext())
            {
                foreach (var read in readers)
                    read(store, count, cursor.Position);
                if (getLabel is not null)
                    labels.Add(getLabel() - options.LabelOffset);
                count++;
            }
            if (count == 0)
                throw new InvalidOperationException("The calibration data is empty: the input IDataView returned no rows.");
            return new RowSample
            {
                Inputs = inputs, Data = store.Data, Labels = getLabel is null ? null : [.. labels], Count = count, FixedBatch = fixedBatch, Outputs = outputs,
            };
        }
    }

    /// <summary>A model's session over the row sample: the float model, or a switchable one (a bool flag per switched node).</summary>
    private sealed class Runner : IDisposable
    {
        private readonly InferenceSession _session;
        private readonly RunOptions _runOptions = new();
        private readonly int _switchCount;
        private readonly int _chunk;
        private int[]? _referenceArgMax;

        public Runner(MLContext context, OnnxModel model, int switchCount, PostTrainingOptions options, string modelName, RowSample rows)
        {
            _session = OrtSessionFactory.Create(context, model.ToBytes(), options, modelName).Session;
            _switchCount = switchCount;
            _chunk = options.BatchSize;
            Rows = rows;
        }

        public RowSample Rows { get; }

        /// <summary>The float model's outputs on the rows.</summary>
        public float[][]? Reference { get; init; }

        public int Evaluations { get; private set; }

        /// <summary>Mean row cosine of the worst output against the reference, or the accuracy drop in points.</summary>
        public double Measure(bool[] quantized, bool accuracy)
        {
            float[][] reference = Reference!;
            float[][] result = Run(quantized);
            int rows = Rows.Count;
            if (accuracy)
            {
                _referenceArgMax ??= ArgMaxes(reference[0], rows);
                int[] q = ArgMaxes(result[0], rows);
                int floatCorrect = _referenceArgMax.Where((a, r) => a == Rows.Labels![r]).Count();
                int quantCorrect = q.Where((a, r) => a == Rows.Labels![r]).Count();
                return 100.0 * (floatCorrect - quantCorrect) / rows;
            }
            double worst = double.PositiveInfinity;
            for (int o = 0; o < result.Length; o++)
            {
                int size = result[o].Length / rows;
                double sum = 0;
                int counted = 0;
                for (int r = 0; r < rows; r++)
                {
                    // Rows the float model itself turns into NaN or infinities (NaN inputs) say nothing about quantization.
                    var expected = reference[o].AsSpan(r * size, size);
                    if (!AllFinite(expected))
                        continue;
                    var row = result[o].AsSpan(r * size, size);
                    sum += AllFinite(row) ? Cosine(expected, row) : 0;
                    counted++;
                }
                worst = Math.Min(worst, counted == 0 ? 1 : sum / counted);
            }
            return worst;
        }

        private static bool AllFinite(ReadOnlySpan<float> values)
        {
            foreach (float v in values)
                if (!float.IsFinite(v))
                    return false;
            return true;
        }

        private static int[] ArgMaxes(float[] output, int rows)
        {
            int size = output.Length / rows;
            return [.. Enumerable.Range(0, rows).Select(r => QuantizationComparer.ArgMax(output.AsSpan(r * size, size)))];
        }

        private static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
        {
            double dot = 0, aa = 0, bb = 0;
            for (int i = 0; i < a.Length; i++)
            {
                dot += (double)a[i] * b[i];
                aa += (double)a[i] * a[i];
                bb += (double)b[i] * b[i];
            }
            return aa == 0 && bb == 0 ? 1 : dot / Math.Sqrt(aa * bb + double.Epsilon);
        }

        /// <summary>Every output over all rows, rows in order (a fixed-batch graph runs padded batches).</summary>
        public float[][] Run(bool[]? quantized)
        {
            Evaluations++;
            var collected = Rows.Outputs.Select(_ => new List<float>()).ToArray();
            using var switches = quantized is null ? null : OrtValue.CreateTensorValueFromMemory(quantized, [_switchCount]);
            string[] names = [.. Rows.Inputs.Select(i => i.TensorName), .. switches is null ? Array.Empty<string>() : [FakeQuantGraph.SwitchInput]];
            for (int start = 0; start < Rows.Count; start += _chunk)
            {
                int rows = Math.Min(_chunk, Rows.Count - start);
                int run = Rows.FixedBatch ? _chunk : rows;
                var values = new List<OrtValue>();
                try
                {
                    for (int k = 0; k < Rows.Inputs.Length; k++)
                        values.Add(Slice(Rows.Data[k], Rows.Inputs[k], start, rows, run));
                    using var results = _session.Run(_runOptions, names, switches is null ? values : [.. values, switches], Rows.Outputs);
                    for (int o = 0; o < Rows.Outputs.Length; o++)
                    {
                        var span = results[o].GetTensorDataAsSpan<float>();
                        collected[o].AddRange(span[..(span.Length / run * rows)].ToArray());
                    }
                }
                finally
                {
                    foreach (var v in values)
                        v.Dispose();
                }
            }
            return [.. collected.Select(c => c.ToArray())];
        }

        /// <summary>Rows [start, start + rows) of an input, padded with its first row up to <paramref name="run"/> rows.</summary>
        private static OrtValue Slice(Array data, InputSpec spec, int start, int rows, int run)
        {
            long[] shape = spec.Batched ? [run, .. spec.RowDims.Select(d => (long)d)] : [.. spec.RowDims.Select(d => (long)d)];
            int size = spec.RowSize;
            return data switch
            {
                float[] f => Value(f, size, start, rows, run, shape),
                long[] l => Value(l, size, start, rows, run, shape),
                int[] i => Value(i, size, start, rows, run, shape),
                bool[] b => Value(b, size, start, rows, run, shape),
                _ => throw new InvalidOperationException($"Input '{spec.TensorName}' has an unsupported type."),
            };
        }

        private static OrtValue Value<T>(T[] data, int size, int start, int rows, int run, long[] shape)
            where T : unmanaged
        {
            if (run == rows)
                return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, data.AsMemory(start * size, rows * size), shape);
            var padded = new T[run * size];
            Array.Copy(data, start * size, padded, 0, rows * size);
            for (int r = rows; r < run; r++)
                Array.Copy(data, start * size, padded, r * size, size);
            return OrtValue.CreateTensorValueFromMemory(padded, shape);
        }

        public void Dispose()
        {
            _runOptions.Dispose();
            _session.Dispose();
        }
    }

    /// <summary>Rows held in memory, typed as their inputs.</summary>
    private sealed class RowStore(InputSpec[] inputs, int capacity) : IScoringBatch
    {
        public Array[] Data { get; } = [.. inputs.Select(i => BatchScorerSchema.CreateInputBuffer(i, capacity))];

        public float[][] InputBuffers => [.. Data.Select(d => d as float[] ?? [])];

        public float[][] OutputBuffers => [];

        public int[] OutputRowSizes => [];

        public void SetRow<T>(int input, int slot, in VBuffer<T> row, long rowIndex)
            where T : unmanaged
        {
            InputSpec spec = inputs[input];
            BatchScorerSchema.CopyRow(spec, row, ((T[])Data[input]).AsSpan(slot * spec.RowSize, spec.RowSize), rowIndex);
        }

        public void Run(int rows)
        {
        }

        public void Dispose()
        {
        }
    }
}

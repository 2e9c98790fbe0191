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
public sealed record NodeSensitivity(string Name, string OpType, double Alone, bool KeptFloat);

/// <summary>What the sensitivity analysis of <c>PostTraining</c> measured and decided.</summary>
public sealed class SensitivityReport
{
    internal SensitivityReport() { }

    /// <summary>"output cosine" (mean over rows, worst output) or "accuracy drop" (percentage points against the label).</summary>
    public required string Metric { get; init; }

    /// <summary>The target: the least cosine, or the largest accuracy drop.</summary>
    public double Target { get; init; }

    /// <summary>The metric with every node quantized.</summary>
    public double AllQuantized { get; init; }

    /// <summary>The metric with the nodes in <see cref="Nodes"/> marked KeptFloat left float.</summary>
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
}

/// <summary>
/// Finds the quantized nodes that cost the most accuracy and leaves them float until a target is met. On one
/// switchable fake-quantized graph (<see cref="FakeQuantGraph"/>) over the first calibration rows: the fully quantized
/// model is measured; when it misses the target, each compute node is measured quantized alone, the nodes are ranked by
/// that, and the shortest most-sensitive prefix left float that meets the target is found by doubling then bisection.
/// </summary>
internal static class SensitivityAnalysis
{
    internal sealed record Result(Dictionary<string, string> KeptFloat, SensitivityReport Report);

    public static Result Run(MLContext context, OnnxModel prepared, CalibrationTable table, PostTrainingOptions options, IDataView data, string modelName, IChannel channel)
    {
        var plan = QdqPlan.Create(prepared.Clone(), table, options);
        var fake = FakeQuantGraph.Build(plan);
        using var runner = new Runner(context, fake, options, data, modelName);
        bool accuracy = options.MaxAccuracyDrop is not null;
        string metric = accuracy ? "accuracy drop" : "output cosine";
        double target = options.MaxAccuracyDrop ?? options.MinOutputCosine;
        bool Meets(double value) => accuracy ? value <= target : value >= target;

        int n = fake.Switches.Count;
        var on = new bool[n];
        double Measure(Func<int, bool> quantized)
        {
            for (int i = 0; i < n; i++)
                on[i] = quantized(i);
            return runner.Measure(on, accuracy);
        }

        double all = Measure(_ => true);
        if (Meets(all) || n == 0)
        {
            channel.Info(MessageSensitivity.None, "{0}", $"Sensitivity analysis: every node quantized gives {metric} {all:F4} on {runner.Rows} calibration rows (target {target}); nothing left float.");
            return new Result([], new SensitivityReport { Metric = metric, Target = target, AllQuantized = all, Final = all, TargetMet = Meets(all), Rows = runner.Rows, Evaluations = runner.Evaluations });
        }

        // Each node quantized alone, worst first.
        var alone = new double[n];
        for (int i = 0; i < n; i++)
        {
            options.CancellationToken.ThrowIfCancellationRequested();
            alone[i] = Measure(j => j == i);
        }
        int[] ranked = [.. Enumerable.Range(0, n).OrderBy(i => accuracy ? -alone[i] : alone[i]).ThenBy(i => i)];

        // The shortest prefix of the ranking left float that meets the target: doubling, then bisection.
        var cache = new Dictionary<int, double> { [0] = all };
        double WithPrefixFloat(int k)
        {
            if (!cache.TryGetValue(k, out double value))
            {
                var kept = ranked.Take(k).ToHashSet();
                cache[k] = value = Measure(i => !kept.Contains(i));
            }
            return value;
        }
        int low = 0, high = 1;
        while (high < n && !Meets(WithPrefixFloat(high)))
        {
            low = high;
            high = Math.Min(n, high * 2);
        }
        high = Math.Min(high, n);
        bool reached = Meets(WithPrefixFloat(high));
        while (reached && high - low > 1)
        {
            int mid = (low + high) / 2;
            if (Meets(WithPrefixFloat(mid)))
                high = mid;
            else
                low = mid;
        }
        int count = reached ? high : n;
        double final = WithPrefixFloat(count);
        var keptFloat = ranked.Take(count).ToHashSet();
        var nodes = ranked.Select(i => new NodeSensitivity(fake.Switches[i], plan.Node(fake.Switches[i]).OpType, alone[i], keptFloat.Contains(i))).ToList();
        var reasons = nodes.Where(x => x.KeptFloat).ToDictionary(x => x.Name,
            x => $"kept float by the sensitivity analysis (quantized alone it gives {metric} {x.Alone:F4}; target {target})", StringComparer.Ordinal);
        channel.Info(MessageSensitivity.None, "{0}", $"Sensitivity analysis on {runner.Rows} calibration rows: {metric} {all:F4} with every node quantized, " +
            $"{final:F4} with {count} of {n} nodes left float ({string.Join(", ", nodes.Where(x => x.KeptFloat).Take(8).Select(x => $"'{x.Name}' {x.Alone:F4}"))}" +
            $"{(count > 8 ? $" and {count - 8} more" : "")}){(reached ? "" : $"; the target {target} was not reached")}; {runner.Evaluations} runs.");
        return new Result(reasons, new SensitivityReport
        {
            Metric = metric, Target = target, AllQuantized = all, Final = final, TargetMet = reached, Rows = runner.Rows, Evaluations = runner.Evaluations, Nodes = nodes,
        });
    }

    /// <summary>The switchable graph's session and the calibration rows it runs on, held in memory.</summary>
    private sealed class Runner : IDisposable
    {
        private readonly InferenceSession _session;
        private readonly RunOptions _runOptions = new();
        private readonly InputSpec[] _inputs;
        private readonly string[] _outputs;
        private readonly Array[] _data;
        private readonly long[]? _labels;
        private readonly int _chunk;
        private readonly bool _fixedBatch;
        private float[][]? _reference;
        private int[]? _referenceArgMax;

        public Runner(MLContext context, FakeQuantGraph fake, PostTrainingOptions options, IDataView data, string modelName)
        {
            var graph = fake.Model.Graph;
            var session = OrtSessionFactory.Create(context, fake.Model.ToBytes(), options, modelName);
            _session = session.Session;
            try
            {
                var inputBindings = options.Inputs.Count > 0 ? options.Inputs
                    : graph.RuntimeInputs.Where(i => i.Name != FakeQuantGraph.SwitchInput).Select(i => new OnnxColumnBinding(i.Name, i.Name)).ToList();
                _outputs = options.Outputs.Count > 0 ? [.. options.Outputs.Select(o => o.TensorName)]
                    : [.. graph.Outputs.Where(o => o.ElementType == OnnxElementType.Float).Select(o => o.Name)];
                var (inputs, _, fixedBatch) = OrtBatchScorer.Describe(_session, modelName, inputBindings,
                    _outputs.Select(o => new OnnxColumnBinding(o, o)).ToList(), options.InputShapes, options.BatchSize);
                _inputs = inputs;
                _fixedBatch = fixedBatch;
                _chunk = options.BatchSize;
                BatchScorerSchema.ValidateInputSchema(_inputs, data.Schema, "input");

                int wanted = Math.Max(1, options.SensitivityRowCount);
                var store = new RowStore(_inputs, wanted);
                var columns = _inputs.Select(i => data.Schema[i.ColumnName]).ToList();
                DataViewSchema.Column? label = options.MaxAccuracyDrop is null ? null
                    : data.Schema.GetColumnOrNull(options.LabelColumnName!) ?? throw Internal.SchemaErrors.MissingColumn("input", options.LabelColumnName!);
                using var cursor = data.GetRowCursor(label is { } l ? columns.Append(l) : columns);
                var readers = columns.Select((c, k) => BatchScorerSchema.CreateReader(cursor, c, _inputs[k], k)).ToArray();
                Func<long>? getLabel = label is { } lc ? QuantizationComparer.LabelGetter(cursor, lc) : null;
                var labels = new List<long>();
                while (Rows < wanted && cursor.MoveNext())
                {
                    foreach (var read in readers)
                        read(store, Rows, cursor.Position);
                    if (getLabel is not null)
                        labels.Add(getLabel() - options.LabelOffset);
                    Rows++;
                }
                if (Rows == 0)
                    throw new InvalidOperationException("The calibration data is empty: the input IDataView returned no rows.");
                _data = store.Data;
                _labels = getLabel is null ? null : [.. labels];
                _switchCount = fake.Switches.Count;
            }
            catch
            {
                _session.Dispose();
                throw;
            }
        }

        private readonly int _switchCount;

        public int Rows { get; }

        public int Evaluations { get; private set; }

        /// <summary>Mean row cosine of the worst output against float, or the accuracy drop in points.</summary>
        public double Measure(bool[] quantized, bool accuracy)
        {
            if (_reference is null)
            {
                _reference = Run(new bool[_switchCount]);
                _referenceArgMax = ArgMaxes(_reference[0]);
            }
            float[][] result = Run(quantized);
            if (accuracy)
            {
                int[] q = ArgMaxes(result[0]);
                int floatCorrect = _referenceArgMax!.Where((a, r) => a == _labels![r]).Count();
                int quantCorrect = q.Where((a, r) => a == _labels![r]).Count();
                return 100.0 * (floatCorrect - quantCorrect) / Rows;
            }
            double worst = double.PositiveInfinity;
            for (int o = 0; o < result.Length; o++)
            {
                int size = result[o].Length / Rows;
                double sum = 0;
                int counted = 0;
                for (int r = 0; r < Rows; r++)
                {
                    // Rows the float model itself turns into NaN or infinities (NaN inputs) say nothing about quantization.
                    var reference = _reference[o].AsSpan(r * size, size);
                    if (!AllFinite(reference))
                        continue;
                    var row = result[o].AsSpan(r * size, size);
                    sum += AllFinite(row) ? Cosine(reference, row) : 0;
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

        private int[] ArgMaxes(float[] output)
        {
            int size = output.Length / Rows;
            return [.. Enumerable.Range(0, Rows).Select(r => QuantizationComparer.ArgMax(output.AsSpan(r * size, size)))];
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
        private float[][] Run(bool[] quantized)
        {
            Evaluations++;
            var collected = _outputs.Select(_ => new List<float>()).ToArray();
            using var switches = OrtValue.CreateTensorValueFromMemory(quantized, [quantized.Length]);
            for (int start = 0; start < Rows; start += _chunk)
            {
                int rows = Math.Min(_chunk, Rows - start);
                int run = _fixedBatch ? _chunk : rows;
                var values = new List<OrtValue>();
                try
                {
                    for (int k = 0; k < _inputs.Length; k++)
                        values.Add(Slice(_data[k], _inputs[k], start, rows, run));
                    values.Add(switches);
                    string[] names = [.. _inputs.Select(i => i.TensorName), FakeQuantGraph.SwitchInput];
                    using var results = _session.Run(_runOptions, names, values, _outputs);
                    for (int o = 0; o < _outputs.Length; o++)
                    {
                        var span = results[o].GetTensorDataAsSpan<float>();
                        collected[o].AddRange(span[..(span.Length / run * rows)].ToArray());
                    }
                }
                finally
                {
                    foreach (var v in values.Where(v => !ReferenceEquals(v, switches)))
                        v.Dispose();
                }
            }
            return [.. collected.Select(c => c.ToArray())];
        }

        /// <summary>Rows [start, start + rows) of an input, padded with its first row up to <paramref name="run"/> rows.</summary>
        private static OrtValue Slice(Array data, InputSpec spec, int start, int rows, int run)
        {
            long[] shape = [run, .. spec.RowDims.Select(d => (long)d)];
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

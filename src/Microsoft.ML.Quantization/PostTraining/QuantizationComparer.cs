using System.Diagnostics;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// Runs a float model and its quantized version over the same rows and measures the difference: accuracy, top-1
/// agreement, cosine similarity and SQNR of the outputs, SQNR per quantized activation, model size and time.
/// </summary>
internal static class QuantizationComparer
{
    public static QuantizationComparison Compare(MLContext context, string floatModelFile, QuantizedModelTransformer quantized, IDataView data, ComparisonOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(floatModelFile);
        if (!File.Exists(floatModelFile))
            throw new FileNotFoundException($"Float ONNX model '{floatModelFile}' does not exist.", floatModelFile);
        var settings = quantized.Settings;
        var clock = Stopwatch.StartNew();
        // mlContext.Log messages and ML.NET's progress channel (rows compared of the data's rows), besides options.Progress.
        using var progress = new OperationProgress(context, "QatMl.Compare", ["rows"]);
        var floatModel = PostTrainingEstimator.Prepare(new PostTrainingOptions { ModelPath = floatModelFile }, floatModelFile);
        var quantizedModel = OnnxModel.Parse(quantized.QuantizedModel);
        string output = options.OutputTensorName ?? floatModel.Graph.Outputs[0].Name;
        if (!floatModel.Graph.IsGraphOutput(output) || !quantizedModel.Graph.IsGraphOutput(output))
            throw new ArgumentException($"Output '{output}' is not a graph output of both the float and the quantized model.", nameof(options));

        // Quantized activations: the float tensor each QuantizeLinear reads, and the value its first DequantizeLinear gives back.
        var layers = new List<(string Float, string Quantized)>();
        if (options.PerLayer)
        {
            // Graph inputs are not outputs of either model; their quantization error shows in the first layer's.
            var floatTensors = floatModel.Graph.TensorNames().ToHashSet(StringComparer.Ordinal);
            floatTensors.ExceptWith(floatModel.Graph.RuntimeInputs.Select(i => i.Name));
            var qg = quantizedModel.Graph;
            foreach (var q in qg.Nodes.Where(n => n.OpType == "QuantizeLinear"))
            {
                string quantizedOut = q.Outputs[0];
                var next = qg.Consumers(quantizedOut);
                if (next.Count == 1 && next[0].OpType == "Clip")
                    next = qg.Consumers(next[0].Outputs[0]);
                var dq = next.FirstOrDefault(n => n.OpType == "DequantizeLinear");
                if (dq is null)
                    continue;
                string floatName = next.Where(n => n.OpType == "DequantizeLinear").Select(n => n.Outputs[0]).FirstOrDefault(qg.IsGraphOutput) ?? q.Inputs[0];
                if (floatTensors.Contains(floatName) && floatName != output)
                    layers.Add((floatName, dq.Outputs[0]));
            }
        }

        OnnxModelScoringOptions Scoring(byte[] model, string modelName, IEnumerable<(string Column, string Tensor)> outputs)
        {
            var s = settings.ToScoringOptions(model);
            s.ModelSource = modelName;
            s.Outputs.Clear();
            foreach (var (column, tensor) in outputs)
                s.Outputs.Add(new OnnxColumnBinding(column, tensor));
            return s;
        }
        var floatOutputs = new[] { ("__out", output) }.Concat(layers.Select((l, i) => ($"__l{i}", l.Float)));
        var quantOutputs = new[] { ("__out", output) }.Concat(layers.Select((l, i) => ($"__l{i}", l.Quantized)));
        using var floatScorer = new OnnxModelScoringTransformer(context, Scoring(floatModel.ToBytes(), floatModelFile, floatOutputs));
        using var quantScorer = new OnnxModelScoringTransformer(context, Scoring(quantized.QuantizedModel, settings.ModelName!, quantOutputs));
        IDataView a = floatScorer.Transform(data), b = quantScorer.Transform(data);

        int n = 1 + layers.Count;
        var signal = new double[n];
        var noise = new double[n];
        long rows = 0, agree = 0, floatCorrect = 0, quantCorrect = 0;
        double cosineSum = 0;
        var columnsA = Enumerable.Range(0, n).Select(i => a.Schema[i == 0 ? "__out" : $"__l{i - 1}"]).ToList();
        var columnsB = Enumerable.Range(0, n).Select(i => b.Schema[i == 0 ? "__out" : $"__l{i - 1}"]).ToList();
        DataViewSchema.Column? label = options.LabelColumnName is null ? null
            : data.Schema.GetColumnOrNull(options.LabelColumnName) ?? throw Internal.SchemaErrors.MissingColumn(nameof(data), options.LabelColumnName, data.Schema,
                $"{nameof(ComparisonOptions)}.{nameof(ComparisonOptions.LabelColumnName)} names it; null compares without accuracy.");
        long? planned = data.GetRowCount();
        progress.Info($"Comparing '{floatModelFile}' with its quantized model on {(planned is long p ? p.ToString(System.Globalization.CultureInfo.InvariantCulture) : "the")} rows" +
            $" (output '{output}'{(layers.Count > 0 ? $", {layers.Count} quantized activations" : "")}).");
        using (var ca = a.GetRowCursor(label is { } lc ? columnsA.Append(a.Schema[lc.Name]) : columnsA))
        using (var cb = b.GetRowCursor(columnsB))
        {
            var ga = columnsA.Select(c => ca.GetGetter<VBuffer<float>>(c)).ToArray();
            var gb = columnsB.Select(c => cb.GetGetter<VBuffer<float>>(c)).ToArray();
            Func<long>? getLabel = label is { } l ? LabelGetter(ca, a.Schema[l.Name]) : null;
            VBuffer<float> x = default, y = default;
            while (ca.MoveNext() && cb.MoveNext())
            {
                for (int i = 0; i < n; i++)
                {
                    ga[i](ref x);
                    gb[i](ref y);
                    // The scoring transforms hand out dense buffers: read them in place, no per-row copies.
                    ReadOnlySpan<float> xs = x.IsDense ? x.GetValues() : x.DenseValues().ToArray();
                    ReadOnlySpan<float> ys = y.IsDense ? y.GetValues() : y.DenseValues().ToArray();
                    if (xs.Length != ys.Length)
                        throw new InvalidOperationException($"Tensor '{(i == 0 ? output : layers[i - 1].Float)}' has {xs.Length} values per row in the float model but {ys.Length} in the quantized one.");
                    double dot = 0, xx = 0, yy = 0, diff = 0;
                    for (int k = 0; k < xs.Length; k++)
                    {
                        dot += (double)xs[k] * ys[k];
                        xx += (double)xs[k] * xs[k];
                        yy += (double)ys[k] * ys[k];
                        double d = (double)xs[k] - ys[k];
                        diff += d * d;
                    }
                    signal[i] += xx;
                    noise[i] += diff;
                    if (i != 0)
                        continue;
                    cosineSum += xx == 0 && yy == 0 ? 1 : dot / Math.Sqrt(xx * yy + double.Epsilon);
                    int ax = ArgMax(xs), ay = ArgMax(ys);
                    agree += ax == ay ? 1 : 0;
                    if (getLabel is not null)
                    {
                        long truth = getLabel() - options.LabelOffset;
                        floatCorrect += ax == truth ? 1 : 0;
                        quantCorrect += ay == truth ? 1 : 0;
                    }
                }
                rows++;
                if (rows % settings.BatchSize == 0)
                    Report(rows);
            }
        }
        if (rows == 0)
            throw new InvalidOperationException("The comparison data is empty: the input IDataView returned no rows.");
        Report(rows);
        progress.Checkpoint();
        progress.Info($"Compared {rows} rows: top-1 agreement {(double)agree / rows:P2}" +
            (label is null ? "" : $", accuracy float {(double)floatCorrect / rows:P2}, quantized {(double)quantCorrect / rows:P2}") + $", {clock.Elapsed.TotalSeconds:F1} s.");

        void Report(long done)
        {
            options.Progress?.Report(new ComparisonProgress(done, planned, clock.Elapsed));
            if (planned is long all)
                progress.ReportSteps(done, Math.Max(all, done), (d, n) => $"Compared {d} of {n} rows, {clock.Elapsed.TotalSeconds:F1} s.");
            else
                progress.Report(0, done, null);
        }

        TimeSpan? floatTime = null, quantTime = null;
        if (options.MeasureLatency)
        {
            progress.Info($"Timing both models: best of {Math.Max(1, options.LatencyRepeats)} passes over the rows after one warm-up.");
            using var plainFloat = new OnnxModelScoringTransformer(context, Scoring(OnnxModelSource.ReadBytes(floatModelFile, null), floatModelFile, [("__out", output)]));
            floatTime = Best(options.LatencyRepeats, () => Consume(plainFloat.Transform(data), "__out"));
            string quantColumn = quantized.OutputColumnNames.Contains(output) ? output
                : settings.Outputs.FirstOrDefault(o => o.TensorName == output)?.ColumnName ?? quantized.OutputColumnNames[0];
            quantTime = Best(options.LatencyRepeats, () => Consume(quantized.Transform(data), quantColumn));
        }

        return new QuantizationComparison
        {
            Rows = rows,
            FloatAccuracy = label is null ? null : (double)floatCorrect / rows,
            QuantizedAccuracy = label is null ? null : (double)quantCorrect / rows,
            Top1Agreement = (double)agree / rows,
            MeanCosineSimilarity = cosineSum / rows,
            OutputSqnrDb = Sqnr(signal[0], noise[0]),
            Layers = layers.Select((l, i) => new LayerError(l.Float, Sqnr(signal[i + 1], noise[i + 1]))).OrderBy(l => l.SqnrDb).ToList(),
            FloatModelBytes = new FileInfo(floatModelFile).Length,
            QuantizedModelBytes = quantized.QuantizedModel.Length,
            FloatTime = floatTime,
            QuantizedTime = quantTime,
            MaxAccuracyDrop = options.MaxAccuracyDrop,
        };
    }

    internal static double Sqnr(double signal, double noise) => noise == 0 ? double.PositiveInfinity : 10 * Math.Log10(signal / noise);

    /// <summary>The index of the largest value; ties go to the lowest index (as the accuracy figures are defined).</summary>
    internal static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++)
            if (v[i] > v[best])
                best = i;
        return best;
    }

    internal static Func<long> LabelGetter(DataViewRow row, DataViewSchema.Column column)
    {
        DataViewType type = column.Type;
        if (type is KeyDataViewType || type == NumberDataViewType.UInt32)
        {
            var g = row.GetGetter<uint>(column);
            return () => { uint v = 0; g(ref v); return v; };
        }
        if (type == NumberDataViewType.Int32)
        {
            var g = row.GetGetter<int>(column);
            return () => { int v = 0; g(ref v); return v; };
        }
        if (type == NumberDataViewType.Int64)
        {
            var g = row.GetGetter<long>(column);
            return () => { long v = 0; g(ref v); return v; };
        }
        if (type == NumberDataViewType.Single)
        {
            var g = row.GetGetter<float>(column);
            return () => { float v = 0; g(ref v); return (long)v; };
        }
        throw Internal.SchemaErrors.Mismatch("data", column.Name, "UInt32, Int32, Int64, Single or a key", Internal.SchemaShapes.Describe(type));
    }

    private static TimeSpan Best(int repeats, Action action)
    {
        action();
        var best = TimeSpan.MaxValue;
        for (int i = 0; i < Math.Max(1, repeats); i++)
        {
            var clock = Stopwatch.StartNew();
            action();
            if (clock.Elapsed < best)
                best = clock.Elapsed;
        }
        return best;
    }

    private static void Consume(IDataView view, string column)
    {
        var c = view.Schema[column];
        using var cursor = view.GetRowCursor([c]);
        var getter = cursor.GetGetter<VBuffer<float>>(c);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
            getter(ref value);
    }
}

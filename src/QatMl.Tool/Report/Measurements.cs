using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Tool.Data;

namespace QatMl.Tool.Report;

/// <summary>The report's measurements beyond what Compare returns: activation histograms and confusion matrices.</summary>
internal static class Measurements
{
    private const int Bins = 64;

    /// <summary>
    /// Histograms of <paramref name="tensors"/> (names in the graph PostTraining quantizes) over <paramref name="rows"/>:
    /// the float model is run with those tensors as extra outputs; bins span the calibration's observed extremes and
    /// clipping range.
    /// </summary>
    public static List<TensorHistogram> Histograms(MLContext context, ModelInfo model, CalibrationTable table, IReadOnlyList<LayerError> tensors,
        IDataView rows, int batchSize, int threads, CancellationToken cancel)
    {
        var chosen = tensors.Where(t => table.TryGetEntry(t.TensorName, out var e) && e.Kind == TensorKind.Activation).ToList();
        if (chosen.Count == 0)
            return [];
        // The prepared graph (BatchNormalization folded, Identity removed) holds the tensors the table names.
        byte[] prepared = PostTrainingEstimator.Prepare(new PostTrainingOptions { ModelPath = model.Path }, model.Path).ToBytes();
        var options = new OnnxModelScoringOptions { ModelBytes = prepared, BatchSize = batchSize, IntraOpNumThreads = threads };
        for (int i = 0; i < chosen.Count; i++)
            options.Outputs.Add(new OnnxColumnBinding($"__h{i}", chosen[i].TensorName));
        var scorer = context.Quantization.ScoreOnnxModel(options).Fit(rows);
        try
        {
            var edges = new double[chosen.Count][];
            var counts = new long[chosen.Count][];
            var dataMin = new double[chosen.Count];
            var dataMax = new double[chosen.Count];
            for (int i = 0; i < chosen.Count; i++)
            {
                var entry = table[chosen[i].TensorName];
                double lo = Math.Min(entry.Histogram.Min, entry.RangeMin[0]), hi = Math.Max(entry.Histogram.Max, entry.RangeMax[0]);
                if (!(hi > lo))
                    hi = lo + 1;
                edges[i] = Enumerable.Range(0, Bins + 1).Select(b => lo + (hi - lo) * b / Bins).ToArray();
                counts[i] = new long[Bins];
                dataMin[i] = double.PositiveInfinity;
                dataMax[i] = double.NegativeInfinity;
            }
            IDataView scored = scorer.Transform(rows);
            var columns = Enumerable.Range(0, chosen.Count).Select(i => scored.Schema[$"__h{i}"]).ToArray();
            using (var cursor = scored.GetRowCursor(columns))
            {
                var getters = columns.Select(c => cursor.GetGetter<VBuffer<float>>(c)).ToArray();
                VBuffer<float> value = default;
                while (cursor.MoveNext())
                {
                    cancel.ThrowIfCancellationRequested();
                    for (int i = 0; i < chosen.Count; i++)
                    {
                        getters[i](ref value);
                        double lo = edges[i][0], width = (edges[i][Bins] - lo) / Bins;
                        foreach (float v in value.GetValues())
                        {
                            if (!float.IsFinite(v))
                                continue;
                            dataMin[i] = Math.Min(dataMin[i], v);
                            dataMax[i] = Math.Max(dataMax[i], v);
                            counts[i][Math.Clamp((int)((v - lo) / width), 0, Bins - 1)]++;
                        }
                    }
                }
            }
            return chosen.Select((t, i) => new TensorHistogram(t.TensorName, t.SqnrDb, edges[i], counts[i],
                table[t.TensorName].RangeMin[0], table[t.TensorName].RangeMax[0], dataMin[i], dataMax[i])).ToList();
        }
        finally
        {
            (scorer as IDisposable)?.Dispose();
        }
    }

    /// <summary>The argmax of <paramref name="outputColumn"/> per row.</summary>
    public static int[] Predictions(ITransformer transformer, IDataView rows, string outputColumn, CancellationToken cancel)
    {
        IDataView scored = transformer.Transform(rows);
        var column = scored.Schema[outputColumn];
        var result = new List<int>();
        using var cursor = scored.GetRowCursor([column]);
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            cancel.ThrowIfCancellationRequested();
            getter(ref value);
            ReadOnlySpan<float> v = value.GetValues();
            int best = 0;
            for (int i = 1; i < v.Length; i++)
                if (v[i] > v[best])
                    best = i;
            result.Add(best);
        }
        return [.. result];
    }

    public static int[,] Confusion(IReadOnlyList<uint> labels, int[] predicted, int classes)
    {
        var m = new int[classes, classes];
        for (int i = 0; i < predicted.Length; i++)
            if (labels[i] < classes && predicted[i] < classes)
                m[labels[i], predicted[i]]++;
        return m;
    }
}

using System.Diagnostics;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Auto;

/// <summary>
/// A trial's model on the backend and thread count the result runs with (<see cref="PostTrainingOptions.Backend"/>,
/// <see cref="OnnxRuntimeOptions.IntraOpNumThreads"/>), driven through the backend's batch scorer (no IDataView cursor): the
/// validation pass of a trial that runs on the native engine, and every accepted trial's latency.
/// </summary>
internal sealed class AutoBackend : IDisposable
{
    /// <summary>Timed runs after the warm-up; the best one counts (the least disturbed by other work on the machine).</summary>
    internal const int LatencyRuns = 3;

    private readonly QuantizedModelTransformer _model;
    private readonly IBatchScorer _scorer;
    private readonly RowSample _rows;
    private readonly int[] _inputs;

    public AutoBackend(MLContext context, QdqResult written, PostTrainingOptions options, RowSample rows)
    {
        _model = new QuantizedModelTransformer(context, written.Model, options.ToScoringSettings(), written.Nodes);
        _scorer = _model.BatchScorer;
        _rows = rows;
        _inputs = [.. _scorer.Inputs.Select(i => Array.FindIndex(rows.Inputs, r => r.TensorName == i.TensorName))];
        int missing = Array.IndexOf(_inputs, -1);
        if (missing >= 0)
            throw new InvalidOperationException($"Model input '{_scorer.Inputs[missing].TensorName}' is not among the validation sample's inputs.");
    }

    /// <summary>Whether the native engine runs the model (not ONNX Runtime, by choice or by fall-back).</summary>
    public bool Native => _model.Settings.Backend == QuantizedBackend.Native && _model.BackendFallbackReason is null;

    /// <summary>Every scored output over all rows (the sample's output order), or null when the backend does not produce one of them.</summary>
    public float[][]? Run()
    {
        int[] outputs = [.. _rows.Outputs.Select(o => Array.FindIndex(_scorer.Outputs, s => s.TensorName == o))];
        if (outputs.Contains(-1))
            return null;
        var collected = _rows.Outputs.Select(_ => new List<float>()).ToArray();
        using IScoringBatch batch = _scorer.CreateBatch([.. _scorer.Outputs.Select(_ => true)], _scorer.BatchSize);
        for (int start = 0; start < _rows.Count; start += _scorer.BatchSize)
        {
            int count = Math.Min(_scorer.BatchSize, _rows.Count - start);
            Fill(batch, start, count);
            batch.Run(count);
            for (int o = 0; o < outputs.Length; o++)
                collected[o].AddRange(batch.OutputBuffers[outputs[o]].AsSpan(0, count * batch.OutputRowSizes[outputs[o]]));
        }
        return [.. collected.Select(c => c.ToArray())];
    }

    /// <summary>Milliseconds per row of one batch (BatchSize rows, or fewer when the sample is smaller): one warm-up, the best of <see cref="LatencyRuns"/>.</summary>
    public double Latency()
    {
        int count = Math.Min(_scorer.BatchSize, _rows.Count);
        using IScoringBatch batch = _scorer.CreateBatch([.. _scorer.Outputs.Select(_ => true)], _scorer.BatchSize);
        Fill(batch, 0, count);
        batch.Run(count);
        double best = double.PositiveInfinity;
        for (int run = 0; run < LatencyRuns; run++)
        {
            long start = Stopwatch.GetTimestamp();
            batch.Run(count);
            best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        return best / count;
    }

    private void Fill(IScoringBatch batch, int first, int count)
    {
        for (int k = 0; k < _inputs.Length; k++)
        {
            int size = _rows.Inputs[_inputs[k]].RowSize;
            switch (_rows.Data[_inputs[k]])
            {
                case float[] f: Fill(batch, k, f, size, first, count); break;
                case long[] l: Fill(batch, k, l, size, first, count); break;
                case int[] i: Fill(batch, k, i, size, first, count); break;
                case bool[] b: Fill(batch, k, b, size, first, count); break;
                default: throw new InvalidOperationException($"Input '{_rows.Inputs[_inputs[k]].TensorName}' has an unsupported element type.");
            }
        }
    }

    private static void Fill<T>(IScoringBatch batch, int input, T[] data, int rowSize, int first, int count)
        where T : unmanaged
    {
        // SetRow copies the row into the batch, so one buffer serves every row.
        var row = new T[rowSize];
        for (int r = 0; r < count; r++)
        {
            data.AsSpan((first + r) * rowSize, rowSize).CopyTo(row);
            batch.SetRow(input, r, new VBuffer<T>(rowSize, row), first + r);
        }
    }

    public void Dispose() => _model.Dispose();
}

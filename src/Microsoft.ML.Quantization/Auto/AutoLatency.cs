using System.Diagnostics;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Auto;

/// <summary>
/// The latency of a trial's model on the backend and thread count the result runs with (<see cref="PostTrainingOptions.Backend"/>,
/// <see cref="OnnxRuntimeOptions.IntraOpNumThreads"/>): one batch of validation rows through the backend's batch scorer (no
/// IDataView cursor), one warm-up run, then the best of a few.
/// </summary>
internal static class AutoLatency
{
    /// <summary>Timed runs after the warm-up; the best one counts (the least disturbed by other work on the machine).</summary>
    internal const int Runs = 3;

    /// <summary>Milliseconds per row of the best run of one batch (BatchSize rows, or fewer when the sample is smaller).</summary>
    public static double Measure(MLContext context, QdqResult written, PostTrainingOptions options, RowSample rows)
    {
        using var model = new QuantizedModelTransformer(context, written.Model, options.ToScoringSettings(), written.Nodes);
        IBatchScorer scorer = model.BatchScorer;
        int count = Math.Min(scorer.BatchSize, rows.Count);
        using IScoringBatch batch = scorer.CreateBatch([.. scorer.Outputs.Select(_ => true)], scorer.BatchSize);
        for (int k = 0; k < scorer.Inputs.Length; k++)
        {
            int source = Array.FindIndex(rows.Inputs, i => i.TensorName == scorer.Inputs[k].TensorName);
            if (source < 0)
                throw new InvalidOperationException($"Model input '{scorer.Inputs[k].TensorName}' is not among the validation sample's inputs.");
            Fill(batch, k, rows.Data[source], rows.Inputs[source].RowSize, count);
        }
        batch.Run(count);
        double best = double.PositiveInfinity;
        for (int run = 0; run < Runs; run++)
        {
            long start = Stopwatch.GetTimestamp();
            batch.Run(count);
            best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        return best / count;
    }

    private static void Fill(IScoringBatch batch, int input, Array data, int rowSize, int count)
    {
        switch (data)
        {
            case float[] f: Fill(batch, input, f, rowSize, count); break;
            case long[] l: Fill(batch, input, l, rowSize, count); break;
            case int[] i: Fill(batch, input, i, rowSize, count); break;
            case bool[] b: Fill(batch, input, b, rowSize, count); break;
            default: throw new InvalidOperationException($"Input {input} has an unsupported element type.");
        }
    }

    private static void Fill<T>(IScoringBatch batch, int input, T[] data, int rowSize, int count)
        where T : unmanaged
    {
        for (int r = 0; r < count; r++)
            batch.SetRow(input, r, new VBuffer<T>(rowSize, data[(r * rowSize)..((r + 1) * rowSize)]), r);
    }
}

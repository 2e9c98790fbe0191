using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// Bias correction (Nagel et al., data-free quantization, here with measured means): rounding a layer's weights shifts
/// the mean of its output by (W_q - W) E[x]; with E[x] per input channel measured on calibration rows, the shift is
/// subtracted from the bias. It matters most for depthwise convolutions, whose few weights per channel round coarsely.
/// </summary>
internal static class BiasCorrection
{
    /// <summary>The per-channel means of the inputs of the Conv and Gemm nodes the plan quantizes with constant weights.</summary>
    public static Dictionary<string, float[]> InputMeans(MLContext context, OnnxModel prepared, QdqPlan plan, PostTrainingOptions options, RowSample rows, string modelName)
    {
        var channels = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var name in plan.ComputeNodes)
        {
            var node = plan.Node(name);
            if (node.OpType is "Conv" && plan.Constants.TryGetValue((name, 1), out var w) && w.Source.Dims.Length >= 3)
                channels[node.Inputs[0]] = checked((int)(w.Source.Dims[1] * node.GetInt("group", 1)));
            else if (node.OpType is "Gemm" && node.GetInt("transA", 0) == 0 && plan.Constants.TryGetValue((name, 1), out var b) && b.Source.Dims.Length == 2)
                channels[node.Inputs[0]] = checked((int)(node.GetInt("transB", 0) != 0 ? b.Source.Dims[1] : b.Source.Dims[0]));
        }
        var result = new Dictionary<string, float[]>(StringComparer.Ordinal);
        if (channels.Count == 0)
            return result;

        // Graph inputs are in the sample itself; every other tensor becomes an output of the float model.
        var fromInputs = channels.Keys.Where(t => rows.Inputs.Any(i => i.TensorName == t)).ToList();
        foreach (string t in fromInputs)
        {
            int k = Array.FindIndex(rows.Inputs, i => i.TensorName == t);
            if (rows.Data[k] is float[] values && rows.Inputs[k].Batched)
                AddMeans(result, t, values.AsSpan(0, rows.Count * rows.Inputs[k].RowSize), rows.Count, channels[t]);
        }
        string[] outputs = [.. channels.Keys.Except(fromInputs)];
        if (outputs.Length == 0)
            return result;
        using var runner = new SampleRunner(context, prepared, 0, options, modelName, rows, outputs);
        float[][] values2 = runner.Run(null);
        for (int o = 0; o < outputs.Length; o++)
            AddMeans(result, outputs[o], values2[o], rows.Count, channels[outputs[o]]);
        return result;
    }

    /// <summary>Channel means of a batch-major tensor [rows, channels, inner...] (inner 1 for [rows, K]).</summary>
    private static void AddMeans(Dictionary<string, float[]> result, string tensor, ReadOnlySpan<float> values, int rows, int channels)
    {
        if (rows == 0 || values.Length % rows != 0 || values.Length / rows % channels != 0)
            return;
        int inner = values.Length / rows / channels;
        var sums = new double[channels];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < channels; c++)
            {
                var span = values.Slice((r * channels + c) * inner, inner);
                double s = 0;
                foreach (float v in span)
                    s += v;
                sums[c] += s;
            }
        result[tensor] = [.. sums.Select(s => (float)(s / ((double)rows * inner)))];
    }

    /// <summary>
    /// (W_q - W) E[x] per output channel: Conv weights [M, C/g, k...] over their group's input channels, Gemm B [K, N]
    /// or [N, K] times alpha; null when the shapes do not match the means.
    /// </summary>
    public static float[]? MeanError(OnnxNode node, QuantizedConstant weight, float[] means)
    {
        float[] w = weight.Source.ToFloatArray(), q = weight.Dequantize();
        long[] dims = weight.Source.Dims;
        if (node.OpType == "Conv")
        {
            int m = checked((int)dims[0]), cg = checked((int)dims[1]), group = checked((int)node.GetInt("group", 1));
            int kernel = w.Length / (m * cg);
            if (means.Length != cg * group || m % group != 0)
                return null;
            var error = new float[m];
            for (int o = 0; o < m; o++)
            {
                int first = o / (m / group) * cg;
                double e = 0;
                for (int j = 0; j < cg; j++)
                    for (int k = 0; k < kernel; k++)
                    {
                        int at = (o * cg + j) * kernel + k;
                        e += (q[at] - w[at]) * (double)means[first + j];
                    }
                error[o] = (float)e;
            }
            return error;
        }
        if (node.OpType == "Gemm")
        {
            bool transB = node.GetInt("transB", 0) != 0;
            int n = checked((int)(transB ? dims[0] : dims[1])), k = checked((int)(transB ? dims[1] : dims[0]));
            if (means.Length != k)
                return null;
            float alpha = node.GetFloat("alpha", 1f);
            var error = new float[n];
            for (int j = 0; j < n; j++)
            {
                double e = 0;
                for (int i = 0; i < k; i++)
                {
                    int at = transB ? j * k + i : i * n + j;
                    e += (q[at] - w[at]) * (double)means[i];
                }
                error[j] = (float)(alpha * e);
            }
            return error;
        }
        return null;
    }
}

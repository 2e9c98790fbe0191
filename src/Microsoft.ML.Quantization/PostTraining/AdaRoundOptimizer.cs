using System.Runtime.CompilerServices;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Onnx;
using TorchSharp;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// AdaRound's optimisation of one layer on TorchSharp (CPU): each weight w = s (floor(w / s) + h(V)) with the rectified
/// sigmoid h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1), V initialised so h starts at the weight's fractional
/// part; Adam minimises the layer's reconstruction error (sum over output channels of the squared error, mean over
/// output positions) plus lambda * sum(1 - |2h - 1|^beta), beta annealed from 20 to 2 after a 20% warm-up, which
/// drives every h to 0 or 1. The layer is written as a matrix product over im2col columns (a Conv's input patches, a
/// Gemm's or MatMul's input rows), gathered a chunk at a time so no full im2col copy exists. When a Relu alone reads the
/// layer's output the error is measured after it (the paper's f_a: outputs the Relu zeroes in both do not count), on
/// random batches of a seeded sample of columns each step; without one and with few inputs per output (K) the error is
/// exact over every column through the Gram matrix X^T X, accumulated chunk by chunk. Only this class touches libtorch:
/// PostTraining without AdaRound never compiles it.
/// </summary>
internal static class AdaRoundOptimizer
{
    private const double Zeta = 1.1, Gamma = -0.1;
    private const double BetaStart = 20, BetaEnd = 2, WarmupFraction = 0.2;

    /// <summary>Steps between returns of the C heap's freed pages to the OS (each step frees a dozen weight-sized tensors).</summary>
    private const int TrimSteps = 8;

    /// <summary>The optimisation's settings (BRECQ's and AIMET's defaults, with a larger step for fewer iterations).</summary>
    internal sealed record Settings(int Iterations, int Seed)
    {
        public double LearningRate { get; init; } = 1e-2;
        public double RegularizationWeight { get; init; } = 0.01;

        /// <summary>Multiply-adds of one step's forward product: the batch of columns is this over K times the outputs, within [256, 4096].</summary>
        public long StepMultiplyAdds { get; init; } = 1L << 25;

        /// <summary>Floats of the sampled input columns held for the batched path: columns are sampled beyond it.</summary>
        public long ColumnBudget { get; init; } = 1L << 24;

        /// <summary>Largest K (inputs per output) optimised through the Gram matrix.</summary>
        public int GramLimit { get; init; } = 1024;

        /// <summary>Floats of the input columns gathered at once (the memory bound of the im2col step).</summary>
        public long ChunkFloats { get; init; } = 1L << 20;
    }

    /// <summary>The quantization of the layer's output (after its Relu) when it is coarse enough to count in the error.</summary>
    internal readonly record struct OutputGrid(float Scale, int ZeroPoint, int Min, int Max);

    /// <summary>The learned integers (in the weight's own layout) and the reconstruction errors of both roundings.</summary>
    internal sealed record Outcome(sbyte[] Values, double NearestError, double LearnedError, int Changed);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Outcome Learn(OnnxNode node, QuantizedConstant nearest, float[] floatInput, float[] quantizedInput, long[] inputShape, bool relu, OutputGrid? grid,
        Settings settings)
    {
        TorchSharpRuntime.EnsureLoaded();
        var layer = LayerColumns.Create(node, nearest, inputShape, settings.ColumnBudget, settings.Seed);
        bool gram = !relu && grid is null && layer.InputsPerOutput <= settings.GramLimit;
        if (gram)
            layer = LayerColumns.Create(node, nearest, inputShape, long.MaxValue, settings.Seed);
        int g = layer.Groups, m = layer.OutputsPerGroup, k = layer.InputsPerOutput, p = layer.Columns;
        int qmax = (1 << (nearest.Bits - 1)) - 1;
        int chunk = (int)Math.Clamp(settings.ChunkFloats / ((long)g * k), 1, p);

        using var scope = torch.NewDisposeScope();
        Tensor w = torch.tensor(layer.WeightMatrix(nearest.Source.ToFloatArray()), [g, m, k]);
        Tensor s = torch.tensor(layer.ScaleMatrix(nearest.Scales), [g, m, 1]);
        Tensor nearestW = s * torch.tensor(layer.IntegerMatrix(nearest.Values), [g, m, k]);
        Tensor ratio = w / s;
        Tensor floor = ratio.floor();
        Tensor rest = (ratio - floor).clamp(1e-4, 1 - 1e-4);
        var v = new Parameter(-torch.log((Zeta - Gamma) / (rest - Gamma) - 1), requires_grad: true);
        Tensor wt = w.transpose(1, 2);

        // Gram path: X_q^T X_q [g, k, k], Y_f^T X_q [g, m, k] and |Y_f|^2; batched path: the sampled X_q [g, p, k] and f_a(Y_f) [g, p, m].
        Tensor? h = null, a = null, quantized = null, target = null;
        double c = 0;
        if (gram)
        {
            h = torch.zeros([g, k, k]);
            a = torch.zeros([g, m, k]);
        }
        else
        {
            quantized = torch.empty([g, p, k]);
            target = torch.empty([g, p, m]);
        }
        for (int start = 0; start < p; start += chunk)
        {
            using var chunkScope = torch.NewDisposeScope();
            int length = Math.Min(chunk, p - start);
            Tensor xq = torch.tensor(layer.Gather(quantizedInput, start, length), [g, length, k]);
            Tensor y = torch.tensor(layer.Gather(floatInput, start, length), [g, length, k]).bmm(wt);   // the float layer's outputs
            if (gram)
            {
                h!.add_(xq.transpose(1, 2).bmm(xq));
                a!.add_(y.transpose(1, 2).bmm(xq));
                c += y.to(ScalarType.Float64).pow(2).sum().item<double>();
            }
            else
            {
                quantized!.narrow(1, start, length).copy_(xq);
                target!.narrow(1, start, length).copy_(relu ? y.relu() : y);
            }
        }
        Tensor Weights(Tensor soft) => s * (floor + soft).clamp(-qmax, qmax);
        Tensor Rectified() => (torch.sigmoid(v) * (Zeta - Gamma) + Gamma).clamp(0, 1);
        // The quantized layer's output: the product, its Relu, and the output's fake quantization (straight-through gradient).
        Tensor Output(Tensor columns, Tensor weights)
        {
            Tensor y = columns.bmm(weights.transpose(1, 2));
            if (relu)
                y = y.relu();
            if (grid is not { } o)
                return y;
            Tensor levels = (y / o.Scale).round().add(o.ZeroPoint).clamp(o.Min, o.Max).sub(o.ZeroPoint).mul(o.Scale);
            return y + (levels - y).detach();
        }

        var random = new Random(settings.Seed);
        int batch = (int)Math.Min(p, Math.Clamp(settings.StepMultiplyAdds / ((long)g * m * k), 256, 4096));
        // Adam by hand, every temporary inside the step's dispose scope.
        Tensor moment = torch.zeros_like(v), second = torch.zeros_like(v);
        const double Beta1 = 0.9, Beta2 = 0.999, Epsilon = 1e-8;
        int warmup = (int)(WarmupFraction * settings.Iterations);
        for (int step = 0; step < settings.Iterations; step++)
        {
            if (step % TrimSteps == 0)
                TorchSharpRuntime.ReleaseFreedMemory();
            using var stepScope = torch.NewDisposeScope();
            Tensor soft = Rectified();
            Tensor wq = Weights(soft);
            Tensor reconstruction;
            if (gram)
                reconstruction = (c - 2 * (wq * a!).sum() + (wq.bmm(h!) * wq).sum()) / p;
            else
            {
                Tensor index = torch.tensor(SampleIndices(random, p, batch));
                Tensor error = target!.index_select(1, index) - Output(quantized!.index_select(1, index), wq);
                reconstruction = error.pow(2).sum() / batch;
            }
            Tensor loss = reconstruction;
            if (step >= warmup)
            {
                double beta = BetaEnd + (BetaStart - BetaEnd) * (1 - (double)(step - warmup) / Math.Max(1, settings.Iterations - warmup));
                loss = loss + settings.RegularizationWeight * (1 - (2 * soft - 1).abs().pow(beta)).sum();
            }
            Tensor gradient = torch.autograd.grad([loss], [v])[0];
            using (torch.no_grad())
            {
                moment.mul_(Beta1).add_(gradient, alpha: 1 - Beta1);
                second.mul_(Beta2).add_(gradient.square(), alpha: 1 - Beta2);
                double correction1 = 1 - Math.Pow(Beta1, step + 1), correction2 = 1 - Math.Pow(Beta2, step + 1);
                v.sub_(moment / ((second / correction2).sqrt() + Epsilon) * (settings.LearningRate / correction1));
            }
        }

        TorchSharpRuntime.ReleaseFreedMemory();
        using (torch.no_grad())
        {
            Tensor hard = v.ge(0.0).to(ScalarType.Float32);
            Tensor learnedW = Weights(hard);
            double learnedError = Error(learnedW), nearestError = Error(nearestW);
            float[] integers = (floor + hard).clamp(-qmax, qmax).contiguous().data<float>().ToArray();
            sbyte[] values = layer.ToWeightLayout(integers);
            int changed = values.Where((q, i) => q != nearest.Values[i]).Count();
            return new Outcome(values, nearestError, learnedError, changed);
        }

        // The exact error over every (sampled) column, in float64.
        double Error(Tensor weights)
        {
            if (gram)
            {
                Tensor wd = weights.to(ScalarType.Float64);
                return (c - 2 * (wd * a!.to(ScalarType.Float64)).sum().item<double>() + (wd.bmm(h!.to(ScalarType.Float64)) * wd).sum().item<double>()) / p;
            }
            double sum = 0;
            for (int start = 0; start < p; start += chunk)
            {
                using var chunkScope = torch.NewDisposeScope();
                int length = Math.Min(chunk, p - start);
                Tensor error = target!.narrow(1, start, length) - Output(quantized!.narrow(1, start, length), weights);
                sum += error.to(ScalarType.Float64).pow(2).sum().item<double>();
            }
            return sum / p;
        }
    }

    private static long[] SampleIndices(Random random, int count, int batch)
    {
        var result = new long[batch];
        for (int i = 0; i < batch; i++)
            result[i] = random.Next(count);
        return result;
    }
}

/// <summary>
/// A Conv (2-D), Gemm or MatMul as a grouped matrix product: per group, the weight matrix [outputs, K] times columns of
/// K inputs (a Conv's input patches over channels and kernel positions, or an input row), columns sampled
/// (seeded) when the full set is larger than the budget. Managed im2col: padding, stride, dilation and groups as ONNX
/// defines them, computing only the sampled columns.
/// </summary>
internal sealed class LayerColumns
{
    private readonly Action<float[], int, int, float[], int>? _patch;   // (input, position, group, target, offset) for Conv
    private readonly int[] _positions;
    private readonly bool _transposedWeight;   // the source is [K, N] (Gemm transB=0, MatMul)
    private readonly int _rowInputs;            // Gemm/MatMul: K values per position

    private LayerColumns(int groups, int outputsPerGroup, int inputsPerOutput, long totalColumns, int[] positions, bool transposedWeight, int rowInputs,
        Action<float[], int, int, float[], int>? patch)
    {
        TotalColumns = totalColumns;
        Groups = groups;
        OutputsPerGroup = outputsPerGroup;
        InputsPerOutput = inputsPerOutput;
        _positions = positions;
        _transposedWeight = transposedWeight;
        _rowInputs = rowInputs;
        _patch = patch;
    }

    public int Groups { get; }
    public int OutputsPerGroup { get; }
    public int InputsPerOutput { get; }
    public int Columns => _positions.Length;

    /// <summary>Every column of the input (its rows times a Conv's output positions), sampled or not.</summary>
    public long TotalColumns { get; }

    /// <summary>
    /// A Gemm/MatMul with more inputs per output than rows to learn from: each output's rounding is under-determined. On
    /// FmnistNet's fc1 (3136 inputs, 1000 rows) the learned rounding lowered the error even on calibration rows it had
    /// not seen, yet cost half a point of test accuracy; such a layer keeps round-to-nearest. A Conv learns whatever its
    /// count of columns: on ResNet18 (32 rows) keeping its six such convolutions at round-to-nearest lowered the output cosine.
    /// </summary>
    public bool Underdetermined => _patch is null && InputsPerOutput > TotalColumns;

    public static LayerColumns Create(OnnxNode node, QuantizedConstant weight, long[] inputShape, long columnBudget, int seed)
    {
        long[] wd = weight.Source.Dims;
        if (node.OpType == "Conv")
        {
            if (inputShape.Length != 4)
                throw new NotSupportedException($"{node.Describe}: AdaRound needs a 4-D input, got [{string.Join(", ", inputShape)}].");
            int n = checked((int)inputShape[0]), channels = checked((int)inputShape[1]), height = checked((int)inputShape[2]), width = checked((int)inputShape[3]);
            int m = checked((int)wd[0]), cg = checked((int)wd[1]), kh = checked((int)wd[2]), kw = checked((int)wd[3]);
            int groups = checked((int)node.GetInt("group", 1));
            long[] strides = node.GetInts("strides") ?? [1, 1], dilations = node.GetInts("dilations") ?? [1, 1], pads = node.GetInts("pads") ?? [0, 0, 0, 0];
            int sh = (int)strides[0], sw = (int)strides[1], dh = (int)dilations[0], dw = (int)dilations[1], top = (int)pads[0], left = (int)pads[1];
            int outH = (height + top + (int)pads[2] - dh * (kh - 1) - 1) / sh + 1, outW = (width + left + (int)pads[3] - dw * (kw - 1) - 1) / sw + 1;
            if (cg * groups != channels || m % groups != 0 || outH < 1 || outW < 1)
                throw new NotSupportedException($"{node.Describe}: its weight [{string.Join(", ", wd)}] does not fit its input [{string.Join(", ", inputShape)}].");
            int k = cg * kh * kw;
            int[] positions = Sample((long)n * outH * outW, columnBudget / ((long)groups * k), seed);
            return new LayerColumns(groups, m / groups, k, (long)n * outH * outW, positions, false, 0, (x, position, group, target, offset) =>
            {
                int row = position / (outH * outW), oy = position / outW % outH, ox = position % outW;
                int at = offset;
                for (int c = 0; c < cg; c++)
                {
                    int plane = (row * channels + group * cg + c) * height * width;
                    for (int ky = 0; ky < kh; ky++)
                    {
                        int iy = oy * sh - top + ky * dh;
                        for (int kx = 0; kx < kw; kx++, at++)
                        {
                            int ix = ox * sw - left + kx * dw;
                            target[at] = iy >= 0 && iy < height && ix >= 0 && ix < width ? x[plane + iy * width + ix] : 0f;
                        }
                    }
                }
            });
        }
        // Gemm (transA 0): [rows, K] x B; MatMul: [..., K] x B[K, N].
        bool transB = node.OpType == "Gemm" && node.GetInt("transB", 0) != 0;
        int outputs = checked((int)(transB ? wd[0] : wd[1])), inputs = checked((int)(transB ? wd[1] : wd[0]));
        long total = inputShape.Aggregate(1L, (a, b) => a * b);
        if (inputShape[^1] != inputs || total % inputs != 0)
            throw new NotSupportedException($"{node.Describe}: its weight [{string.Join(", ", wd)}] does not fit its input [{string.Join(", ", inputShape)}].");
        return new LayerColumns(1, outputs, inputs, total / inputs, Sample(total / inputs, columnBudget / inputs, seed), !transB, inputs, null);
    }

    /// <summary>Every position when they fit the budget, else a seeded sample of them in increasing order.</summary>
    private static int[] Sample(long count, long budget, int seed)
    {
        int total = checked((int)count);
        int keep = (int)Math.Clamp(budget, 1, total);
        if (keep == total)
            return [.. Enumerable.Range(0, total)];
        var random = new Random(seed);
        int[] all = [.. Enumerable.Range(0, total)];
        random.Shuffle(all);
        return [.. all.Take(keep).Order()];
    }

    /// <summary>Columns [start, start + count) of the sample, of an input [groups, count, K].</summary>
    public float[] Gather(float[] input, int start, int count)
    {
        var result = new float[(long)Groups * count * InputsPerOutput];
        for (int group = 0; group < Groups; group++)
            for (int j = 0; j < count; j++)
            {
                int offset = (group * count + j) * InputsPerOutput;
                int position = _positions[start + j];
                if (_patch is not null)
                    _patch(input, position, group, result, offset);
                else
                    Array.Copy(input, (long)position * _rowInputs, result, offset, _rowInputs);
            }
        return result;
    }

    /// <summary>The weight as [groups, outputs, K] (a Conv's layout already is; [K, N] sources are transposed).</summary>
    public float[] WeightMatrix(float[] source) => _transposedWeight ? Transpose(source, InputsPerOutput, OutputsPerGroup) : source;

    public float[] IntegerMatrix(sbyte[] source) => WeightMatrix([.. source.Select(v => (float)v)]);

    /// <summary>The scale of each output row: per channel (the weight's output axis) or one for all.</summary>
    public float[] ScaleMatrix(float[] scales)
        => [.. Enumerable.Range(0, Groups * OutputsPerGroup).Select(o => scales[scales.Length == 1 ? 0 : o])];

    /// <summary>Integers of the matrix layout back in the weight's own layout.</summary>
    public sbyte[] ToWeightLayout(float[] matrix)
    {
        float[] source = _transposedWeight ? Transpose(matrix, OutputsPerGroup, InputsPerOutput) : matrix;
        return [.. source.Select(v => (sbyte)v)];
    }

    private static float[] Transpose(float[] values, int rows, int columns)
    {
        var result = new float[values.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                result[c * rows + r] = values[r * columns + c];
        return result;
    }
}

using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Quantization.Tests.Onnx;

namespace Microsoft.ML.Quantization.Tests.PostTraining;

/// <summary>
/// Cross-layer equalization, bias correction and SmoothQuant on generated models built to show the problem each one
/// solves (channels whose ranges differ by orders of magnitude, inputs with a large mean, activation outlier channels):
/// each keeps the float function and brings the quantized output closer to it. 16-bit activations per tensor too.
/// </summary>
public sealed class AccuracyToolsTests
{
    private const int Rows = 32;

    private static OnnxModel Model(int[] rowDims, Action<OnnxGraph> build) => OpCoverageTests.Generated(rowDims, build);

    private static float[] Random(int n, float scale, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale)];
    }

    /// <summary>Rows of x: per-row smooth patterns around <paramref name="offset"/>, with per-channel scales when given.</summary>
    private static IDataView Data(MLContext context, int[] rowDims, int seed, float offset = 0, float[]? channelScale = null)
    {
        int size = rowDims.Aggregate(1, (a, b) => a * b), inner = size / rowDims[0];
        var random = new Random(seed);
        return GeneratedRows.View(context, Enumerable.Range(0, Rows).Select(r => (float[])
            [.. Enumerable.Range(0, size).Select(i => (offset + MathF.Sin(0.31f * i + r) + 0.3f * (float)(random.NextDouble() - 0.5)) * (channelScale?[i / inner] ?? 1))]).ToList(), rowDims);
    }

    private static double Cosine(MLContext context, byte[] floatModel, QuantizedModelTransformer quantized, IDataView data)
    {
        using var scoring = context.Quantization.ScoreOnnxModel(new Microsoft.ML.Quantization.Inference.OnnxModelScoringOptions { ModelBytes = floatModel, IntraOpNumThreads = 1 }).Fit(data);
        return OrtRunner.Cosine([.. scoring.Transform(data).GetColumn<float[]>("y").SelectMany(v => v)], [.. quantized.Transform(data).GetColumn<float[]>("y").SelectMany(v => v)]);
    }

    /// <summary>Every tool off (bias correction and equalization are on by default): each test switches on the one it shows.</summary>
    private static PostTrainingOptions Options(byte[] model) => new()
    {
        ModelBytes = model, SampleCount = Rows, BatchSize = 8, IntraOpNumThreads = 1, MinOutputCosine = 0, BiasCorrection = false, CrossLayerEqualization = false,
    };

    [Fact]
    public void CrossLayerEqualization_KeepsTheFunction_EvensTheRanges_AndHelpsDepthwise()
    {
        // Conv (8 channels, their scales 0.01 .. 10) -> Relu -> depthwise Conv -> pointwise Conv.
        float[] scales = [0.01f, 0.05f, 0.2f, 1f, 3f, 10f, 0.02f, 5f];
        var model = Model([3, 8, 8], g =>
        {
            float[] w = Random(8 * 3 * 9, 0.5f, 1);
            for (int i = 0; i < w.Length; i++)
                w[i] *= scales[i / 27];
            g.SetInitializer(OnnxTensor.FromFloats("w1", [8, 3, 3, 3], w));
            g.SetInitializer(OnnxTensor.FromFloats("b1", [8], [.. Random(8, 0.1f, 2).Select((b, i) => b * scales[i])]));
            g.SetInitializer(OnnxTensor.FromFloats("wd", [8, 1, 3, 3], Random(72, 0.5f, 3)));
            g.SetInitializer(OnnxTensor.FromFloats("wp", [4, 8, 1, 1], Random(32, 0.5f, 4)));
            g.AddNode("Conv", ["x", "w1", "b1"], ["c1"], "conv1").SetInts("pads", [1, 1, 1, 1]);
            g.AddNode("Relu", ["c1"], ["r1"], "relu1");
            g.AddNode("Conv", ["r1", "wd"], ["dw"], "depthwise").With(n => { n.SetInt("group", 8); n.SetInts("pads", [1, 1, 1, 1]); });
            g.AddNode("Conv", ["dw", "wp"], ["y"], "pointwise");
        });
        var equalized = model.Clone();
        Assert.Equal(2, OnnxRewrites.EqualizeCrossLayers(equalized));
        float[] x = OrtRunner.RandomInput(2 * 192, 5);
        OrtRunner.AssertClose(OrtRunner.Run(model.ToBytes(), x, [2, 3, 8, 8]), OrtRunner.Run(equalized.ToBytes(), x, [2, 3, 8, 8]), 1e-4);
        // The first weight's per-channel ranges, 0.01 .. 10 apart before, within a small factor after.
        var g2 = equalized.Graph;
        g2.TryGetInitializer(g2.Nodes.Single(n => n.Name == "conv1").Inputs[1], out var w1);
        var ranges = Enumerable.Range(0, 8).Select(c => w1.ToFloatArray().Skip(c * 27).Take(27).Max(MathF.Abs)).ToList();
        Assert.True(ranges.Max() / ranges.Min() < 30, $"ranges {string.Join(", ", ranges)}");

        var context = new MLContext(seed: 1);
        IDataView data = Data(context, [3, 8, 8], seed: 1);
        var options = Options(model.ToBytes());
        using var plain = context.Quantization.PostTraining(options).Fit(data);
        options.CrossLayerEqualization = true;
        using var cle = context.Quantization.PostTraining(options).Fit(data);
        double before = Cosine(context, model.ToBytes(), plain, data), after = Cosine(context, model.ToBytes(), cle, data);
        Assert.True(after > before && after > 0.99, $"cosine {before:F5} -> {after:F5}");
    }

    [Fact]
    public void BiasCorrection_RemovesTheMeanShiftOfRoundedWeights()
    {
        // A Conv over inputs with a large mean: its rounded weights shift every output by (Wq - W) * mean.
        var model = Model([4, 6, 6], g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("w", [4, 1, 3, 3], Random(36, 0.8f, 7)));
            g.AddNode("Conv", ["x", "w"], ["y"], "depthwise").SetInt("group", 4);
        });
        var context = new MLContext(seed: 1);
        IDataView data = Data(context, [4, 6, 6], seed: 2, offset: 6f);
        var options = Options(model.ToBytes());
        options.Precision = new QuantizationPrecision(3, 8);
        using var plain = context.Quantization.PostTraining(options).Fit(data);
        options.BiasCorrection = true;
        using var corrected = context.Quantization.PostTraining(options).Fit(data);
        double MeanError(QuantizedModelTransformer q)
        {
            using var scoring = context.Quantization.ScoreOnnxModel(new Microsoft.ML.Quantization.Inference.OnnxModelScoringOptions { ModelBytes = model.ToBytes(), IntraOpNumThreads = 1 }).Fit(data);
            float[] f = [.. scoring.Transform(data).GetColumn<float[]>("y").SelectMany(v => v)];
            float[] o = [.. q.Transform(data).GetColumn<float[]>("y").SelectMany(v => v)];
            return Math.Abs(f.Zip(o).Average(p => (double)p.Second - p.First));
        }
        double before = MeanError(plain), after = MeanError(corrected);
        Assert.True(after < before / 3, $"mean output error {before:g4} -> {after:g4}");
        // The conv had no bias: the correction added one, stored as int32.
        var g = OnnxModel.Parse(corrected.QuantizedModel).Graph;
        var conv = g.Nodes.Single(n => n.Name == "depthwise");
        Assert.Equal(3, conv.Inputs.Count);
        Assert.True(g.TryGetInitializer(g.Producer(conv.Inputs[2])!.Inputs[0], out var bias) && bias.ElementType == OnnxElementType.Int32);
    }

    [Fact]
    public void SmoothQuant_MovesActivationOutliersIntoTheWeights()
    {
        // A MatMul whose input has two outlier channels 60x larger than the rest, read by weights 60x smaller (as in
        // transformers): per-tensor activation levels go to the outliers and the other channels lose their resolution.
        float[] channelScale = [.. Enumerable.Range(0, 32).Select(i => i is 3 or 17 ? 60f : 1f)];
        var model = Model([6, 32], g =>
        {
            float[] w = Random(512, 0.3f, 9);
            for (int i = 0; i < w.Length; i++)
                w[i] /= channelScale[i / 16];
            g.SetInitializer(OnnxTensor.FromFloats("w", [32, 16], w));
            g.AddNode("MatMul", ["x", "w"], ["y"], "projection");
        });
        var context = new MLContext(seed: 1);
        int[] dims = [6, 32];
        // Channels are the last axis here: scale element i by channelScale[i % 32].
        var random = new Random(3);
        IDataView data = GeneratedRows.View(context, Enumerable.Range(0, Rows).Select(r =>
            (float[])[.. Enumerable.Range(0, 192).Select(i => (MathF.Sin(0.7f * i + r) + 0.2f * (float)random.NextDouble()) * channelScale[i % 32])]).ToList(), dims);

        var options = Options(model.ToBytes());
        using var plain = context.Quantization.PostTraining(options).Fit(data);
        options.SmoothQuant = true;
        using var smoothed = context.Quantization.PostTraining(options).Fit(data);
        double before = Cosine(context, model.ToBytes(), plain, data), after = Cosine(context, model.ToBytes(), smoothed, data);
        Assert.True(after > before && after > 0.995, $"cosine {before:F5} -> {after:F5}");
        var mul = Assert.Single(smoothed.Nodes, n => n.OpType == "Mul");
        Assert.Null(mul.Precision);
        Assert.Contains("SmoothQuant", mul.Reason);
        Assert.NotNull(smoothed.Nodes.Single(n => n.Name == "projection").Precision);
    }

    [Fact]
    public void TensorBits_SixteenBitActivationsRunInOnnxRuntime()
    {
        var model = Model([3, 8, 8], g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("w", [4, 3, 3, 3], Random(108, 0.5f, 1)));
            g.AddNode("Conv", ["x", "w"], ["c"], "conv");
            g.AddNode("Sigmoid", ["c"], ["y"], "sigmoid");
        });
        var context = new MLContext(seed: 1);
        IDataView data = Data(context, [3, 8, 8], seed: 4);
        var options = Options(model.ToBytes());
        using var eight = context.Quantization.PostTraining(options).Fit(data);
        options.TensorBits["c"] = 16;
        using var sixteen = context.Quantization.PostTraining(options).Fit(data);
        var q = OnnxModel.Parse(sixteen.QuantizedModel);
        Assert.Equal(21, q.DefaultOpset);
        var quantizeC = q.Graph.Nodes.Single(n => n.OpType == "QuantizeLinear" && n.Inputs[0] == "c");
        Assert.True(q.Graph.TryGetInitializer(quantizeC.Inputs[2], out var zp) && zp.ElementType == OnnxElementType.UInt16);
        Assert.True(Cosine(context, model.ToBytes(), sixteen, data) >= Cosine(context, model.ToBytes(), eight, data));
    }
}

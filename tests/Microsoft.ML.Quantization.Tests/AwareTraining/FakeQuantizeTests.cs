using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Calibration;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Quantization.Tests.AwareTraining;

/// <summary>Fake quantization against ONNX QuantizeLinear/DequantizeLinear, and its straight-through gradients.</summary>
public sealed class FakeQuantizeTests
{
    [Fact]
    public void Forward_EqualsQuantizeThenDequantize_PerTensorAndPerChannel()
    {
        TorchSharpRuntime.EnsureLoaded();
        var rng = new Random(3);
        float[] x = Enumerable.Range(0, 6 * 50).Select(_ => (float)(rng.NextDouble() * 8 - 4)).ToArray();
        // Exact halves must round to even, as QuantizeLinear does.
        x[0] = 0.25f; x[1] = 0.75f; x[2] = -0.25f;
        const float scale = 0.5f / 1;   // x / scale = 0.5, 1.5, -0.5
        using var input = torch.tensor(x, [6, 50]);
        using var s = torch.tensor(scale);
        using var z = torch.tensor(3f);
        using var y = FakeQuantize.Apply(input, s, z, 0, 15);
        float[] got = y.data<float>().ToArray();
        for (int i = 0; i < x.Length; i++)
        {
            int q = LinearQuantization.QuantizeLinear(x[i], scale, 3, 8, isSigned: false);
            q = Math.Clamp(q, 0, 15);
            Assert.Equal(LinearQuantization.DequantizeLinear(q, scale, 3), got[i]);
        }

        float[] scales = [0.1f, 0.2f, 0.05f, 0.3f, 0.01f, 1f];
        using var sc = torch.tensor(scales);
        using var zc = torch.zeros(6);
        using var yc = FakeQuantize.Apply(input, sc, zc, -127, 127, axis: 0);
        float[] gotc = yc.data<float>().ToArray();
        for (int i = 0; i < x.Length; i++)
        {
            float sci = scales[i / 50];
            int q = Math.Clamp(LinearQuantization.QuantizeLinear(x[i], sci, 0, 8, isSigned: true), -127, 127);
            Assert.Equal(LinearQuantization.DequantizeLinear(q, sci, 0), gotc[i]);
        }
    }

    [Fact]
    public void Backward_StraightThroughInsideTheRange_ZeroOutside_LsqScaleGetsScaledGradient()
    {
        TorchSharpRuntime.EnsureLoaded();
        using var x = torch.tensor(new float[] { -1f, 0.3f, 1.2f, 2.9f, 5f }, requires_grad: true);
        using var s = torch.tensor(0.1f, requires_grad: true);
        using var z = torch.tensor(0f);
        using var y = FakeQuantize.Apply(x, s, z, 0, 25, gradientScale: 0.5);   // range [0, 2.5]
        y.sum().backward();
        Assert.Equal(new float[] { 0, 1, 1, 0, 0 }, x.grad!.data<float>().ToArray());
        float grad = s.grad!.item<float>();
        // LSQ: d/ds of the clamped ends is qmin or qmax; inside it is round(x/s) - x/s. Scaled by 0.5.
        float expected = 0.5f * ((0 - 0) + (3 - 3f) + (12 - 12f) + 25 + 25);
        Assert.Equal(expected, grad, 3);
    }

    [Fact]
    public void Pact_ClipsAtTheLearnedLevel_AndTheLevelGetsTheClippedGradient()
    {
        TorchSharpRuntime.EnsureLoaded();
        using var q = new FakeQuantizer("pact", bits: 8, learning: RangeLearning.LearnedClipping, initialMin: 0f, initialMax: 3f);
        q.train();
        Assert.Equal((0f, 3f), q.Range);
        using var x = torch.tensor(new float[] { -1f, 0.5f, 2f, 5f }, requires_grad: true);
        using var y = q.forward(x);
        float[] values = y.data<float>().ToArray();
        Assert.Equal(0f, values[0]);
        Assert.Equal(3f, values[3], 5);                         // clipped at a = 3
        y.sum().backward();
        Assert.Equal(new float[] { 0, 1, 1, 0 }, x.grad!.data<float>().ToArray());
        var clip = q.parameters().Single();
        Assert.Equal(1f, clip.grad!.item<float>());            // one value was clipped at a
        Assert.Throws<ArgumentException>(() => new FakeQuantizer("pact0", learning: RangeLearning.LearnedClipping));
    }

    [Theory]
    [InlineData(RangeLearning.MovingAverage)]
    [InlineData(RangeLearning.LearnedStepSize)]
    [InlineData(RangeLearning.LearnedClipping)]
    public void GradualBitWidth_QuantizesFinelyWhileOverridden_ThenOnTheTargetGrid(RangeLearning learning)
    {
        TorchSharpRuntime.EnsureLoaded();
        using var q = new FakeQuantizer("q4", bits: 4, learning: learning, initialMin: 0f, initialMax: 1.5f) { ObserverEnabled = false };
        q.train();
        using var x = torch.tensor(new float[] { 0.33f, 0.77f, 1.21f });
        q.BitsOverride = 16;
        float[] fine = q.forward(x).detach().data<float>().ToArray();
        Assert.All(fine.Zip(new[] { 0.33f, 0.77f, 1.21f }), p => Assert.Equal(p.Second, p.First, 4));   // 1.5 / 65535 steps
        q.BitsOverride = null;
        float[] coarse = q.forward(x).detach().data<float>().ToArray();
        Assert.Equal(new[] { 0.3f, 0.8f, 1.2f }, coarse.Select(v => MathF.Round(v, 4)).ToArray());     // 1.5 / 15 = 0.1 steps
        Assert.Equal((0f, 1.5f), (q.Range.Min, MathF.Round(q.Range.Max, 5)));
    }

    [Fact]
    public void Module_ObservesWithMovingAverage_FreezesAndPassesThroughWhenDisabled()
    {
        TorchSharpRuntime.EnsureLoaded();
        using var q = new FakeQuantizer("q", bits: 8);
        q.train();
        using (var a = torch.tensor(new float[] { 0f, 1f })) q.forward(a).Dispose();        // first batch: [0, 1]
        using (var b = torch.tensor(new float[] { -1f, 3f })) q.forward(b).Dispose();       // average: 1% toward [-1, 3]
        Assert.Equal(-0.01f, q.Range.Min, 6);
        Assert.Equal(1.02f, q.Range.Max, 6);
        q.ObserverEnabled = false;
        using (var c = torch.tensor(new float[] { -50f, 50f })) q.forward(c).Dispose();
        Assert.Equal(1.02f, q.Range.Max, 6);
        q.FakeQuantEnabled = false;
        using var d = torch.tensor(new float[] { 0.123456f });
        using var passed = q.forward(d);
        Assert.Equal(0.123456f, passed.item<float>());
        Assert.Throws<ArgumentException>(() => new FakeQuantizer("lsq", learning: RangeLearning.LearnedStepSize));
    }

    public static TheoryData<string> Cases() => ["lsq per tensor, zero point 0", "lsq per tensor, zero point 7", "lsq per channel", "lsq zero point learned",
        "fixed per tensor, zero point 0", "fixed per tensor, zero point 7", "fixed per channel"];

    /// <summary>
    /// The fused autograd op against the chain of primitives it replaced (<see cref="CompositeFakeQuantize"/>) on random
    /// tensors with exact ties and saturated values mixed in: the same output bits, the same input gradient (up to the
    /// composite's g * s / s rounding), and the same scale and zero-point gradients up to summation order.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void FusedOp_MatchesTheCompositeOfPrimitives_ValuesAndGradients(string name)
    {
        TorchSharpRuntime.EnsureLoaded();
        bool learned = name.StartsWith("lsq", StringComparison.Ordinal), perChannel = name.EndsWith("per channel", StringComparison.Ordinal);
        float zero = name.Contains("zero point 7") ? 7f : 0f;
        long qmin = zero != 0 ? 0 : -127, qmax = zero != 0 ? 255 : 127;
        var rng = new Random(name.Length);
        const int channels = 6, perRow = 400;
        float[] scales = perChannel ? [0.011f, 0.02f, 0.005f, 0.03f, 0.0007f, 0.1f] : [0.013f];
        float[] x = new float[channels * perRow];
        for (int i = 0; i < x.Length; i++)
        {
            float s = scales[perChannel ? i / perRow : 0];
            x[i] = (i % 7) switch
            {
                0 => (MathF.Round((float)(rng.NextDouble() * 400 - 200)) + 0.5f) * s,   // an exact tie (x / s = k + 0.5)
                1 => (float)(rng.NextDouble() * 600 - 300) * s,                          // saturates about half the time
                _ => (float)(rng.NextDouble() * 250 - 125) * s,
            };
        }
        float[] upstream = Enumerable.Range(0, x.Length).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int? axis = perChannel ? 0 : null;

        (float[] Y, float[] Dx, float[] Ds, float[] Dz) Run(bool fused)
        {
            using var scope = torch.NewDisposeScope();
            Tensor input = torch.tensor(x, [channels, perRow]).requires_grad_(true);
            Tensor scaleLeaf = torch.tensor(scales, perChannel ? [channels] : []).requires_grad_(learned);
            Tensor zeroLeaf = torch.full(perChannel ? [channels] : [], zero).requires_grad_(name.Contains("learned"));
            double gradientScale = learned ? 1.0 / Math.Sqrt(perRow * (double)qmax) : 1.0;
            Tensor scale = learned ? scaleLeaf.abs() + 1e-12f : scaleLeaf;
            Tensor y = fused ? FakeQuantize.Apply(input, scale, zeroLeaf, qmin, qmax, axis, gradientScale)
                : CompositeFakeQuantize.Apply(input, scale, zeroLeaf, qmin, qmax, axis, gradientScale);
            (y * torch.tensor(upstream, [channels, perRow])).sum().backward();
            return (y.data<float>().ToArray(), input.grad!.data<float>().ToArray(),
                scaleLeaf.grad?.data<float>().ToArray() ?? [], zeroLeaf.grad?.data<float>().ToArray() ?? []);
        }

        var reference = Run(fused: false);
        var got = Run(fused: true);
        Assert.Equal(reference.Y, got.Y);
        Assert.Contains(got.Dx, v => v == 0);                                     // some values saturated
        for (int i = 0; i < x.Length; i++)
            Assert.True(Math.Abs(reference.Dx[i] - got.Dx[i]) <= 1e-6 * Math.Abs(upstream[i]), $"dx[{i}]: {reference.Dx[i]} vs {got.Dx[i]}");
        Assert.Equal(reference.Ds.Length, got.Ds.Length);
        Assert.Equal(reference.Dz.Length, got.Dz.Length);
        double gradientScale = learned ? 1.0 / Math.Sqrt(perRow * (double)qmax) : 1.0;
        for (int c = 0; c < reference.Ds.Length; c++)
        {
            // A sum of 400 (per channel) or 2400 terms of size up to |g| * qmax, in another order: 2e-6 of the largest possible sum.
            double bound = 2e-6 * gradientScale * perRow * (perChannel ? 1 : channels) * qmax;
            Assert.True(Math.Abs(reference.Ds[c] - got.Ds[c]) <= bound, $"ds[{c}]: {reference.Ds[c]} vs {got.Ds[c]}");
        }
        for (int c = 0; c < reference.Dz.Length; c++)
            Assert.True(Math.Abs(reference.Dz[c] - got.Dz[c]) <= 1e-5 * Math.Abs(reference.Dz[c]) + 1e-6, $"dz[{c}]: {reference.Dz[c]} vs {got.Dz[c]}");
        Assert.Equal(learned, got.Ds.Length > 0 && got.Ds.Any(v => v != 0));
    }

    [Fact]
    public void FusedOp_SaturatesInfinities_AsQuantizeLinear_AndPassesNoGradientThroughThem()
    {
        TorchSharpRuntime.EnsureLoaded();
        using var x = torch.tensor(new[] { float.NegativeInfinity, 0.5f, float.PositiveInfinity }, requires_grad: true);
        using var s = torch.tensor(0.25f, requires_grad: true);
        using var z = torch.tensor(0f);
        using var y = FakeQuantize.Apply(x, s, z, -127, 127);
        Assert.Equal(new[] { -127 * 0.25f, 0.5f, 127 * 0.25f }, y.data<float>().ToArray());
        y.sum().backward();
        Assert.Equal(new float[] { 0, 1, 0 }, x.grad!.data<float>().ToArray());
        Assert.Equal(-127 + 0 + 127, s.grad!.item<float>());    // saturated ends give qmin and qmax, the exact level 0
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void FusedOp_RetainedGraph_BackwardTwice_AccumulatesTheSameGradientAgain(bool learned)
    {
        TorchSharpRuntime.EnsureLoaded();
        using var x = torch.tensor(new[] { -1f, 0.3f, 1.2f, 2.9f }, requires_grad: true);
        using var s = torch.tensor(0.1f, requires_grad: learned);
        using var z = torch.tensor(0f);
        using var y = FakeQuantize.Apply(x, s, z, 0, 25);
        using var g = torch.ones(4);
        y.backward([g], retain_graph: true);
        Assert.Equal(new float[] { 0, 1, 1, 0 }, x.grad!.data<float>().ToArray());
        float scaleGradient = learned ? s.grad!.item<float>() : 0;
        y.backward([g]);
        Assert.Equal(new float[] { 0, 2, 2, 0 }, x.grad!.data<float>().ToArray());
        if (learned)
            Assert.Equal(2 * scaleGradient, s.grad!.item<float>());
    }

    /// <summary>
    /// The implementation the fused op replaced, kept as the reference: fake quantization from autograd primitives
    /// (rounding detached for the straight-through estimator, LSQ's scale gradient from the chain rule).
    /// </summary>
    private static class CompositeFakeQuantize
    {
        public static Tensor Apply(Tensor x, Tensor scale, Tensor zeroPoint, long quantMin, long quantMax, int? axis, double gradientScale)
        {
            Tensor s = scale, z = zeroPoint;
            if (gradientScale != 1.0 && scale.requires_grad)
                s = (s - s.detach()) * gradientScale + s.detach();
            if (axis is int a)
            {
                long[] shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
                shape[a] = -1;
                s = s.reshape(shape);
                z = z.reshape(shape);
            }
            if (!s.requires_grad && !z.requires_grad)
                return FixedRange(x, s, z, quantMin, quantMax);
            Tensor scaled = x / s;
            Tensor rounded = scaled + (scaled.round() - scaled).detach();
            Tensor q = (rounded + z).clamp(quantMin, quantMax);
            return (q - z) * s;
        }

        private static Tensor FixedRange(Tensor x, Tensor s, Tensor z, long quantMin, long quantMax)
        {
            Tensor quantized;
            using (torch.no_grad())
            {
                quantized = x / s;
                quantized.round_().add_(z).clamp_(quantMin, quantMax).sub_(z).mul_(s);
            }
            Tensor clamped = x.clamp((quantMin - z) * s, (quantMax - z) * s);
            using (torch.no_grad())
                quantized.sub_(clamped);
            return clamped.add_(quantized);
        }
    }
}

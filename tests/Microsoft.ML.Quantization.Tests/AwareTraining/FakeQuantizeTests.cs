using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Calibration;
using TorchSharp;

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
}

using Microsoft.ML.Quantization.Calibration;

namespace Microsoft.ML.Quantization.Tests.Calibration;

public class QuantizationParametersTests
{
    [Fact]
    public void Uint8Asymmetric_FollowsOnnxRuntime()
    {
        var p = QuantizationParameters.Compute(-1f, 3f, 8, isSigned: false, isSymmetric: false);
        Assert.Equal((float)(4.0 / 255), p.Scale);
        Assert.Equal(64, p.ZeroPoint); // round(0 + 1 / (4/255)) = round(63.75)
    }

    [Fact]
    public void Int8Asymmetric_ZeroPointRoundsHalfToEven()
    {
        var p = QuantizationParameters.Compute(-1f, 1f, 8, isSigned: true, isSymmetric: false);
        Assert.Equal((float)(2.0 / 255), p.Scale);
        Assert.Equal(0, p.ZeroPoint); // round(-128 + 127.5) = round(-0.5) = 0 (half to even)
    }

    [Fact]
    public void Int8Symmetric_UsesRestrictedRangeAndZeroZeroPoint()
    {
        var p = QuantizationParameters.Compute(-0.5f, 2.54f, 8, isSigned: true, isSymmetric: true);
        Assert.Equal((float)((2.54f + 2.54f) / 254.0), p.Scale);
        Assert.Equal(0, p.ZeroPoint);
        Assert.Equal((-127, 127), QuantizationParameters.GetQuantizedRange(8, true, true));
        Assert.Equal((-128, 127), QuantizationParameters.GetTypeRange(8, true));
    }

    [Fact]
    public void Uint8Symmetric_ZeroPointIsMidpointRoundedToEven()
        => Assert.Equal(128, QuantizationParameters.Compute(-1f, 1f, 8, isSigned: false, isSymmetric: true).ZeroPoint);

    [Fact]
    public void RangeIsExtendedToIncludeZero()
    {
        var positive = QuantizationParameters.Compute(2f, 4f, 8, false, false);
        Assert.Equal((float)(4.0 / 255), positive.Scale);
        Assert.Equal(0, positive.ZeroPoint);
        var negative = QuantizationParameters.Compute(-3f, -3f, 8, false, false);
        Assert.Equal((float)(3.0 / 255), negative.Scale);
        Assert.Equal(255, negative.ZeroPoint);
    }

    [Theory]
    [InlineData(0f, 0f)]
    [InlineData(1e-45f, 1e-45f)]
    [InlineData(-1e-40f, 0f)]
    public void ZeroOrTinyRange_GetsScaleOneAndZeroPointZero(float min, float max)
    {
        foreach (bool signed in new[] { false, true })
        foreach (bool symmetric in new[] { false, true })
        {
            var p = QuantizationParameters.Compute(min, max, 8, signed, symmetric);
            Assert.Equal(new QuantizationParameters(1f, 0), p);
        }
    }

    [Fact]
    public void ZeroIsExactlyRepresentable_ForManyRangesAndWidths()
    {
        var rng = new Random(7);
        for (int n = 0; n < 2000; n++)
        {
            float a = (float)(rng.NextDouble() * 20 - 10), b = (float)(rng.NextDouble() * 20 - 10);
            int bits = rng.Next(2, 17);
            bool signed = rng.Next(2) == 0, symmetric = rng.Next(2) == 0;
            var p = QuantizationParameters.Compute(MathF.Min(a, b), MathF.Max(a, b), bits, signed, symmetric);
            Assert.True(p.Scale > 0 && float.IsFinite(p.Scale));
            var (lo, hi) = QuantizationParameters.GetQuantizedRange(bits, signed, symmetric);
            Assert.InRange(p.ZeroPoint, lo, hi);
            int q = LinearQuantization.QuantizeLinear(0f, p.Scale, p.ZeroPoint, bits, signed);
            Assert.Equal(p.ZeroPoint, q);
            Assert.Equal(0f, LinearQuantization.DequantizeLinear(q, p.Scale, p.ZeroPoint));
        }
    }

    [Theory]
    [InlineData(2, true, true, -1, 1)]
    [InlineData(2, true, false, -2, 1)]
    [InlineData(4, false, false, 0, 15)]
    [InlineData(16, true, true, -32767, 32767)]
    [InlineData(16, false, true, 0, 65535)]
    public void QuantizedRanges_CoverTwoToSixteenBits(int bits, bool signed, bool symmetric, int lo, int hi)
        => Assert.Equal((lo, hi), QuantizationParameters.GetQuantizedRange(bits, signed, symmetric));

    [Fact]
    public void BadInput_GivesClearErrors()
    {
        Assert.Contains("finite", Assert.Throws<ArgumentException>(() => QuantizationParameters.Compute(float.NaN, 1f, 8, false, false)).Message);
        Assert.Contains("exceeds", Assert.Throws<ArgumentException>(() => QuantizationParameters.Compute(2f, 1f, 8, false, false)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizationParameters.Compute(0f, 1f, 1, false, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizationParameters.Compute(0f, 1f, 17, false, false));
        Assert.Contains("too wide", Assert.Throws<ArgumentException>(() => QuantizationParameters.Compute(-3e38f, 3e38f, 8, false, false)).Message);
    }
}

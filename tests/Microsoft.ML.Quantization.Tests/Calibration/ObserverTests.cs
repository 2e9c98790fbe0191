using Microsoft.ML.Quantization.Calibration;

namespace Microsoft.ML.Quantization.Tests.Calibration;

public class ObserverTests
{
    private static TensorObserver Observe(CalibrationOptions options, float[] data, int batch = 4096)
    {
        var observer = new TensorObserver(options);
        CalibrationData.Feed(observer, data, batch);
        return observer;
    }

    private static (float Min, float Max) Range(CalibrationOptions options, float[] data, int batch = 4096)
    {
        var (min, max) = Observe(options, data, batch).ComputeRanges();
        return (min[0], max[0]);
    }

    [Fact]
    public void MinMax_IsExactAndKeepsOutliers()
    {
        var data = CalibrationData.GaussianWithOutliers();
        var (min, max) = Range(new CalibrationOptions { Method = CalibrationMethod.MinMax }, data);
        Assert.Equal(-60f, min);
        Assert.Equal(60f, max);
        var (smin, smax) = Range(new CalibrationOptions { Method = CalibrationMethod.MinMax }, [-1f, 0.5f, 3f]);
        Assert.Equal((-1f, 3f), (smin, smax));
    }

    [Fact]
    public void MovingAverageMinMax_MatchesHandComputedAverage()
    {
        var observer = new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.MovingAverageMinMax, MovingAverageConstant = 0.01 });
        observer.Observe([0f, 1f]);
        observer.Observe([-1f, 3f]);
        var (min, max) = observer.ComputeRanges();
        Assert.Equal((float)(0 + 0.01 * (-1 - 0)), min[0]);
        Assert.Equal((float)(1 + 0.01 * (3 - 1)), max[0]);
        Assert.Equal(-1f, observer.Summarize().Min); // the summary keeps the exact extremes
    }

    [Fact]
    public void MovingAverageMinMax_RefusesToMerge()
    {
        var options = new CalibrationOptions { Method = CalibrationMethod.MovingAverageMinMax };
        var a = new TensorObserver(options);
        var b = new TensorObserver(options);
        var e = Assert.Throws<InvalidOperationException>(() => a.Merge(b));
        Assert.Contains("order of the batches", e.Message);
    }

    [Fact]
    public void Percentile_MatchesHandComputedBinEdge()
    {
        // 9990 x 1.0 and 10 x 100: max 100 -> grid [0, 128), bin width 1/16; 99.85% leaves a tail budget of 15
        // values, so the 10 outliers are clipped and the edge is the top of 1.0's bin: 17/16.
        float[] data = [.. Enumerable.Repeat(1f, 9990), .. Enumerable.Repeat(100f, 10)];
        var asymmetric = Range(new CalibrationOptions { Method = CalibrationMethod.Percentile, Percentile = 99.85 }, data, 333);
        Assert.Equal((1f, 1.0625f), asymmetric);
        var symmetric = Range(new CalibrationOptions { Method = CalibrationMethod.Percentile, Percentile = 99.85, IsSigned = true, IsSymmetric = true }, data, 333);
        Assert.Equal((-1.0625f, 1.0625f), symmetric);
        // 100th percentile is the exact extreme, not a bin edge.
        Assert.Equal((1f, 100f), Range(new CalibrationOptions { Method = CalibrationMethod.Percentile, Percentile = 100 }, data));
    }

    [Fact]
    public void Percentile_ClipsGaussianOutliersOnBothSides()
    {
        var (min, max) = Range(new CalibrationOptions { Method = CalibrationMethod.Percentile, IsSigned = true }, CalibrationData.GaussianWithOutliers());
        Assert.InRange(max, 3.5f, 5f);
        Assert.InRange(min, -5f, -3.5f);
    }

    [Fact]
    public void Entropy_ClipsGaussianOutliers()
    {
        var data = CalibrationData.GaussianWithOutliers();
        // Asymmetric: a threshold per side, each inside the data's extremes; symmetric: one |x| threshold.
        var (min, max) = Range(new CalibrationOptions { Method = CalibrationMethod.Entropy, IsSigned = true }, data);
        Assert.InRange(max, 2f, 10f);
        Assert.InRange(-min, 2f, 10f);
        Assert.InRange(min, data.Min(), 0f);
        Assert.InRange(max, 0f, data.Max());
        var (sMin, sMax) = Range(new CalibrationOptions { Method = CalibrationMethod.Entropy, IsSigned = true, IsSymmetric = true }, data);
        Assert.Equal(-sMax, sMin);
        Assert.InRange(sMax, 2f, 10f);
    }

    [Fact]
    public void Entropy_OneSidedNegativeData_AndAsymmetricTails_KeepTheirSides()
    {
        var gaussian = CalibrationData.GaussianWithOutliers();
        // All non-positive: a range [-T, 0] using every level.
        var (nMin, nMax) = Range(new CalibrationOptions { Method = CalibrationMethod.Entropy }, gaussian.Select(v => -MathF.Abs(v)).ToArray());
        Assert.Equal(0f, nMax);
        Assert.InRange(nMin, -60f, -2f);
        // A short negative side and a long positive one (logits): the positive threshold is not cut to the negative width.
        var skewed = gaussian.Select(v => v < 0 ? v * 0.1f : v * 3).ToArray();
        var (min, max) = Range(new CalibrationOptions { Method = CalibrationMethod.Entropy, IsSigned = true }, skewed);
        Assert.True(max > 4 * -min, $"[{min}, {max}]");
    }

    [Fact]
    public void Auto_PicksTheMethodWithTheLeastSquaredError()
    {
        var data = CalibrationData.GaussianWithOutliers();
        var observer = Observe(new CalibrationOptions { Method = CalibrationMethod.Auto, IsSigned = true }, data);
        var (min, max) = observer.ComputeRanges();
        var centres = MseRange.Centres(observer.Channel(0).Histogram!, observer.Channel(0));
        double Error(CalibrationMethod m)
        {
            var (a, b) = Range(new CalibrationOptions { Method = m, IsSigned = true }, data);
            return MseRange.SquaredError(centres, a, b, 8, true, false);
        }
        double chosen = MseRange.SquaredError(centres, min[0], max[0], 8, true, false);
        var errors = new[] { CalibrationMethod.MinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy }.Select(Error).ToList();
        Assert.Equal(errors.Min(), chosen);
        Assert.True(errors.Max() > chosen, "the candidates differ on this data");
    }

    [Fact]
    public void Entropy_PostReluDataUsesAllLevelsAndAZeroBasedRange()
    {
        var data = CalibrationData.GaussianWithOutliers().Select(MathF.Abs).ToArray();
        var observer = Observe(new CalibrationOptions { Method = CalibrationMethod.Entropy, Bits = 8 }, data);
        var (min, max) = observer.ComputeRanges();
        Assert.Equal(0f, min[0]);
        var h = observer.Channel(0).Histogram!;
        int expectedBins = EntropyThreshold.FindThresholdBins(h.AbsoluteCounts(), 256);
        Assert.True(expectedBins >= 256);
        Assert.Equal(MathF.Min((float)(expectedBins * h.BinWidth), 60f), max[0]); // capped at the exact max |x|
        Assert.NotEqual(expectedBins, EntropyThreshold.FindThresholdBins(h.AbsoluteCounts(), 128));
    }

    [Theory]
    [InlineData(9)]
    [InlineData(16)]
    public void Entropy_RefusesMoreThanEightBits(int bits)
    {
        var e = Assert.Throws<ArgumentException>(() => new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.Entropy, Bits = bits }));
        Assert.Contains("2 to 8 bits", e.Message);
    }

    [Fact]
    public void Mse_MatchesHandComputedRangeOnExactGrid()
    {
        // +-1 with int8 symmetric: the full range puts +-1 exactly on +-127 (zero error); any shrink clips them.
        float[] data = [.. Enumerable.Repeat(1f, 1000), .. Enumerable.Repeat(-1f, 1000)];
        var range = Range(new CalibrationOptions { Method = CalibrationMethod.Mse, IsSigned = true, IsSymmetric = true }, data);
        Assert.Equal((-1f, 1f), range);
    }

    [Fact]
    public void Mse_ClipsGaussianOutliersAtLowBitWidth()
    {
        // At 4 bits the rounding error of 100 000 values outweighs clipping 10 outliers.
        var (min, max) = Range(new CalibrationOptions { Method = CalibrationMethod.Mse, Bits = 4, IsSigned = true, IsSymmetric = true }, CalibrationData.GaussianWithOutliers());
        Assert.InRange(max, 1f, 10f);
        Assert.Equal(-max, min);
    }

    [Fact]
    public void Mse_IsNoWorseThanMinMaxOnTheData()
    {
        var data = CalibrationData.GaussianWithOutliers();
        foreach (int bits in new[] { 4, 8 })
        {
            var options = new CalibrationOptions { Method = CalibrationMethod.Mse, Bits = bits, IsSigned = true, IsSymmetric = true };
            var (min, max) = Range(options, data);
            double mse = QuantizationError(data, min, max, bits);
            double minMax = QuantizationError(data, -60f, 60f, bits);
            Assert.True(mse <= minMax * 1.001, $"{bits} bits: mse range error {mse} vs minmax {minMax}");
        }
    }

    private static double QuantizationError(float[] data, float min, float max, int bits)
    {
        var p = QuantizationParameters.Compute(min, max, bits, true, true);
        double error = 0;
        foreach (float x in data)
        {
            int q = Math.Clamp(LinearQuantization.QuantizeLinear(x, p.Scale, p.ZeroPoint, bits, true), -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1);
            double d = x - LinearQuantization.DequantizeLinear(q, p.Scale, p.ZeroPoint);
            error += d * d;
        }
        return error;
    }

    [Fact]
    public void NonFiniteValues_AreCountedAndExcludedFromRanges()
    {
        foreach (CalibrationMethod method in Enum.GetValues<CalibrationMethod>())
        {
            var observer = new TensorObserver(new CalibrationOptions { Method = method, IsSigned = true });
            observer.Observe([1f, float.NaN, -2f, float.PositiveInfinity]);
            observer.Observe([float.NegativeInfinity, 0.5f]);
            var entry = observer.ToEntry("t", TensorKind.Activation);
            Assert.Equal(3, entry.NonFiniteCount);
            Assert.Equal(3, entry.Histogram.Count);
            Assert.Equal(-2f, entry.Histogram.Min);
            Assert.Equal(1f, entry.Histogram.Max);
            Assert.True(float.IsFinite(entry.RangeMin[0]) && float.IsFinite(entry.RangeMax[0]), method.ToString());
            Assert.InRange(entry.RangeMax[0], 0f, 2f); // Entropy may widen to the symmetric |x| threshold
        }
    }

    [Fact]
    public void AllNaN_GivesAClearError()
    {
        var observer = new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.Entropy });
        observer.Observe([float.NaN, float.NaN]);
        var e = Assert.Throws<InvalidOperationException>(() => observer.ToEntry("conv1", TensorKind.Activation));
        Assert.Contains("'conv1'", e.Message);
        Assert.Contains("no finite values", e.Message);
    }

    [Fact]
    public void NoData_GivesAClearError()
    {
        var observer = new TensorObserver(new CalibrationOptions());
        observer.Observe([]);
        var e = Assert.Throws<InvalidOperationException>(() => observer.ComputeRanges("relu3"));
        Assert.Contains("'relu3' has no observed values", e.Message);
    }

    [Fact]
    public void AllZeroAndConstantTensors_GetSafeScales()
    {
        foreach (CalibrationMethod method in Enum.GetValues<CalibrationMethod>())
        foreach (float value in new[] { 0f, 3f, -2f })
        {
            var observer = new TensorObserver(new CalibrationOptions { Method = method });
            observer.Observe(Enumerable.Repeat(value, 1000).ToArray());
            var entry = observer.ToEntry("c", TensorKind.Activation);
            Assert.True(entry.Scales[0] > 0 && float.IsFinite(entry.Scales[0]), $"{method} {value}");
            int q = LinearQuantization.QuantizeLinear(0f, entry.Scales[0], entry.ZeroPoints[0], 8, false);
            Assert.Equal(0f, LinearQuantization.DequantizeLinear(q, entry.Scales[0], entry.ZeroPoints[0]));
        }
    }

    [Fact]
    public void PerChannel_MinMaxPerSlice_AxisZeroAndInnerAxis()
    {
        // [3 channels, 2 inner]: axis 0
        var axis0 = new TensorObserver(CalibrationOptions.ForWeights(), channelCount: 3);
        axis0.Observe([1f, -2f, 0.5f, 0.25f, -4f, 3f], channelAxisSize: 3, innerSize: 2);
        var entry = axis0.ToEntry("w", TensorKind.Weight, axis: 0);
        Assert.Equal([-2f, 0.25f, -4f], entry.RangeMin);
        Assert.Equal([1f, 0.5f, 3f], entry.RangeMax);
        Assert.Equal([2f / 127, 0.5f / 127, 4f / 127], entry.Scales);
        Assert.All(entry.ZeroPoints, z => Assert.Equal(0, z));

        // [outer 2, 2 channels, inner 2]: axis 1 (MatMul B-like)
        var axis1 = new TensorObserver(CalibrationOptions.ForWeights(CalibrationMethod.Mse), channelCount: 2);
        axis1.Observe([1f, 2f, -1f, -2f, 3f, 4f, -3f, -8f], channelAxisSize: 2, innerSize: 2);
        var (min, max) = axis1.ComputeRanges();
        Assert.Equal(4f, max[0]);
        Assert.Equal(-8f, min[1]);
    }

    [Fact]
    public void PerChannel_RejectsMismatchedShapes()
    {
        var o = new TensorObserver(CalibrationOptions.ForWeights(), channelCount: 3);
        Assert.Throws<ArgumentException>(() => o.Observe(new float[6], channelAxisSize: 2, innerSize: 3));
        Assert.Throws<ArgumentException>(() => o.Observe(new float[7], channelAxisSize: 3, innerSize: 2));
        Assert.Throws<InvalidOperationException>(() => o.Observe(new float[6]));
        Assert.Throws<ArgumentException>(() => o.ToEntry("w", TensorKind.Weight));
    }

    [Fact]
    public void Options_AreValidated()
    {
        Assert.Throws<ArgumentException>(() => new TensorObserver(new CalibrationOptions { Bits = 1 }));
        Assert.Throws<ArgumentException>(() => new TensorObserver(new CalibrationOptions { Percentile = 0 }));
        Assert.Throws<ArgumentException>(() => new TensorObserver(new CalibrationOptions { MovingAverageConstant = 2 }));
        Assert.Equal(1000, new CalibrationEstimatorOptions().SampleCount);
    }
}

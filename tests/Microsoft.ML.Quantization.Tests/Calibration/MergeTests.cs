using Microsoft.ML.Quantization.Calibration;

namespace Microsoft.ML.Quantization.Tests.Calibration;

/// <summary>Calibrating shards and merging gives exactly the table of calibrating everything at once.</summary>
public class MergeTests
{
    public static TheoryData<CalibrationMethod, bool, bool> Shardable()
    {
        var data = new TheoryData<CalibrationMethod, bool, bool>();
        foreach (var m in new[] { CalibrationMethod.MinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy, CalibrationMethod.Mse })
        {
            data.Add(m, false, false);
            data.Add(m, true, true);
            data.Add(m, true, false);
        }
        return data;
    }

    private static string TableJson(TensorObserver observer, string name = "t")
        => new CalibrationTable([observer.ToEntry(name, TensorKind.Activation)]).ToJson();

    [Theory]
    [MemberData(nameof(Shardable))]
    public void TwoHalvesMerged_EqualTheWhole(CalibrationMethod method, bool signed, bool symmetric)
    {
        var options = new CalibrationOptions { Method = method, IsSigned = signed, IsSymmetric = symmetric };
        // Small values first and the outliers mostly late, so the shards' grids differ and must be re-binned.
        var gauss = CalibrationData.Gaussian(60_000, 3, sigma: 0.01f);
        float[] data = [.. gauss, .. CalibrationData.GaussianWithOutliers(5), float.NaN, 7e-30f, -0f];

        var whole = new TensorObserver(options);
        CalibrationData.Feed(whole, data, 1000);

        int cut = 60_001;
        var first = new TensorObserver(options);
        CalibrationData.Feed(first, data.AsSpan(0, cut), 777);
        var second = new TensorObserver(options);
        CalibrationData.Feed(second, data.AsSpan(cut), 4096);
        first.Merge(second);

        Assert.Equal(TableJson(whole), TableJson(first));

        // The other order, and three shards merged in yet another order.
        var a = new TensorObserver(options);
        CalibrationData.Feed(a, data.AsSpan(cut), 123);
        var b = new TensorObserver(options);
        CalibrationData.Feed(b, data.AsSpan(0, 1000), 50);
        var c = new TensorObserver(options);
        CalibrationData.Feed(c, data.AsSpan(1000, cut - 1000), 9999);
        c.Merge(a);
        c.Merge(b);
        Assert.Equal(TableJson(whole), TableJson(c));
    }

    [Fact]
    public void PerChannelShards_MergeExactly()
    {
        var options = CalibrationOptions.ForWeights(CalibrationMethod.Mse);
        var data = CalibrationData.Gaussian(4 * 3 * 10, 11);
        // [outer 4, channels 3, inner 10]: shard along the outer dimension.
        var whole = new TensorObserver(options, 3);
        whole.Observe(data, 3, 10);
        var first = new TensorObserver(options, 3);
        first.Observe(data.AsSpan(0, 60), 3, 10);
        var second = new TensorObserver(options, 3);
        second.Observe(data.AsSpan(60), 3, 10);
        second.Merge(first);
        Assert.Equal(new CalibrationTable([whole.ToEntry("w", TensorKind.Weight, 1)]).ToJson(),
                     new CalibrationTable([second.ToEntry("w", TensorKind.Weight, 1)]).ToJson());
    }

    [Fact]
    public void Histogram_GrowingEqualsBinningDirectlyOnTheFinalGrid()
    {
        var data = CalibrationData.Gaussian(10_000, 9, sigma: 3f);
        var grown = new PowerOfTwoHistogram();
        for (int i = 0; i < data.Length; i += 100)
        {
            var batch = data.AsSpan(i, 100);
            float maxAbs = 0;
            foreach (float x in batch)
                maxAbs = MathF.Max(maxAbs, MathF.Abs(x));
            grown.Add(batch, maxAbs, allFinite: true);
        }

        int e = grown.Exponent;
        Assert.Equal(PowerOfTwoHistogram.ExponentFor(data.Max(MathF.Abs)), e);
        var expected = new long[2 * PowerOfTwoHistogram.BinCount];
        foreach (float x in data)
        {
            // The obviously-correct bin on the final grid, in double.
            int bin = (int)Math.Floor(Math.Abs((double)x) / Math.ScaleB(1.0, e) * PowerOfTwoHistogram.BinCount);
            expected[(x < 0 || (x == 0 && float.IsNegative(x)) ? PowerOfTwoHistogram.BinCount : 0) + bin]++;
        }
        Assert.Equal(expected, (long[])[.. grown.NonNegative.ToArray(), .. grown.Negative.ToArray()]);
    }

    [Fact]
    public void Histogram_BulkVectorPathEqualsTheReferenceBins()
    {
        // 100 003 values (not a multiple of the vector width): ReLU-like zeros, -0, negatives, tiny and large values.
        var data = CalibrationData.Gaussian(100_003, 21, sigma: 2f);
        for (int i = 0; i < data.Length; i += 3)
            data[i] = 0f;
        for (int i = 1; i < data.Length; i += 97)
            data[i] = -0f;
        data[5] = 1e-30f;
        data[7] = -47.5f;
        var bulk = new PowerOfTwoHistogram();
        bulk.Add(data, data.Max(MathF.Abs), allFinite: true);   // one call: the vectorised bulk path

        int e = bulk.Exponent;
        var expected = new long[2 * PowerOfTwoHistogram.BinCount];
        foreach (float x in data)
        {
            int bin = (int)Math.Floor(Math.Abs((double)x) / Math.ScaleB(1.0, e) * PowerOfTwoHistogram.BinCount);
            expected[(float.IsNegative(x) ? PowerOfTwoHistogram.BinCount : 0) + bin]++;
        }
        Assert.Equal(expected, (long[])[.. bulk.NonNegative.ToArray(), .. bulk.Negative.ToArray()]);
    }

    [Fact]
    public void OnePassMinMax_OrdersSignedZerosLikeTheReference()
    {
        var rng = new Random(5);
        foreach (int length in new[] { 64, 65, 79, 100, 1000, 4097 })
        {
            foreach (int pattern in Enumerable.Range(0, 6))
            {
                float[] data = pattern switch
                {
                    0 => Enumerable.Range(0, length).Select(i => i % 2 == 0 ? 0f : -0f).ToArray(),
                    1 => Enumerable.Range(0, length).Select(_ => -0f).ToArray(),
                    2 => Enumerable.Range(0, length).Select(i => i == length - 1 ? -0f : (float)rng.NextDouble()).ToArray(),
                    3 => Enumerable.Range(0, length).Select(i => i == length / 2 ? 0f : -(float)rng.NextDouble()).ToArray(),
                    4 => Enumerable.Range(0, length).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray(),
                    _ => Enumerable.Range(0, length).Select(i => i == length - 1 ? 7f : MathF.Max(0, (float)rng.NextDouble() - 0.5f)).ToArray(),
                };
                var stats = new ChannelStatistics(withHistogram: false);
                stats.Observe(data);
                float min = data.Aggregate(float.PositiveInfinity, MathF.Min), max = data.Aggregate(float.NegativeInfinity, MathF.Max);
                Assert.Equal(BitConverter.SingleToInt32Bits(min), BitConverter.SingleToInt32Bits(stats.Min));
                Assert.Equal(BitConverter.SingleToInt32Bits(max), BitConverter.SingleToInt32Bits(stats.Max));
            }
        }
    }

    [Fact]
    public void MergingDifferentOptions_IsAnError()
    {
        var a = new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.Percentile });
        var b = new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.Percentile, Percentile = 99.9 });
        Assert.Throws<ArgumentException>(() => a.Merge(b));
        Assert.Throws<ArgumentException>(() => a.Merge(new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.Percentile }, 2)));
    }
}

public class ObserverStateTests
{
    [Theory]
    [InlineData(CalibrationMethod.MinMax)]
    [InlineData(CalibrationMethod.Percentile)]
    [InlineData(CalibrationMethod.Entropy)]
    [InlineData(CalibrationMethod.Mse)]
    public void ShippedShards_MergeIntoTheWhole(CalibrationMethod method)
    {
        var options = new CalibrationOptions { Method = method, IsSigned = true };
        var data = CalibrationData.GaussianWithOutliers(8);
        var whole = new TensorObserver(options);
        CalibrationData.Feed(whole, data, 2048);

        var local = new TensorObserver(options);
        CalibrationData.Feed(local, data.AsSpan(0, 50_000), 1000);
        var remote = new TensorObserver(options);
        CalibrationData.Feed(remote, data.AsSpan(50_000), 3000);
        remote.Observe([float.NaN]);
        using var wire = new MemoryStream();
        remote.WriteState(wire);
        wire.Position = 0;
        local.Merge(TensorObserver.ReadState(wire));
        whole.Observe([float.NaN]);

        Assert.Equal(new CalibrationTable([whole.ToEntry("t", TensorKind.Activation)]).ToJson(),
                     new CalibrationTable([local.ToEntry("t", TensorKind.Activation)]).ToJson());
    }

    [Fact]
    public void BadState_AndMovingAverage_AreRefused()
    {
        Assert.Throws<InvalidDataException>(() => TensorObserver.ReadState(new MemoryStream([1, 2, 3, 4, 5])));
        var o = new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.Percentile });
        o.Observe([1f, 2f]);
        using var s = new MemoryStream();
        o.WriteState(s);
        var truncated = new MemoryStream(s.ToArray()[..^4]);
        Assert.Contains("truncated", Assert.Throws<InvalidDataException>(() => TensorObserver.ReadState(truncated)).Message);
        Assert.Throws<InvalidOperationException>(() => new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.MovingAverageMinMax }).WriteState(new MemoryStream()));
    }
}

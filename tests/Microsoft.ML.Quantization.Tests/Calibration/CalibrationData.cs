namespace Microsoft.ML.Quantization.Tests.Calibration;

/// <summary>Deterministic synthetic tensors for the calibration tests.</summary>
internal static class CalibrationData
{
    public static float[] Gaussian(int count, int seed, float sigma = 1f, float mean = 0f)
    {
        var rng = new Random(seed);
        var data = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            data[i] = mean + sigma * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return data;
    }

    /// <summary>100 000 N(0, 1) values with 5 outliers at +60 and 5 at -60, shuffled in.</summary>
    public static float[] GaussianWithOutliers(int seed = 42)
    {
        var data = Gaussian(100_000, seed).ToList();
        var rng = new Random(seed + 1);
        for (int i = 0; i < 5; i++)
        {
            data.Insert(rng.Next(data.Count), 60f);
            data.Insert(rng.Next(data.Count), -60f);
        }
        return [.. data];
    }

    /// <summary>Feeds <paramref name="data"/> in batches of <paramref name="batch"/> values.</summary>
    public static void Feed(Microsoft.ML.Quantization.Calibration.TensorObserver observer, ReadOnlySpan<float> data, int batch)
    {
        for (int i = 0; i < data.Length; i += batch)
            observer.Observe(data.Slice(i, Math.Min(batch, data.Length - i)));
    }
}

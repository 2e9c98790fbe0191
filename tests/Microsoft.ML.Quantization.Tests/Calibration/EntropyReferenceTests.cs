using Microsoft.ML.Quantization.Calibration;

namespace Microsoft.ML.Quantization.Tests.Calibration;

/// <summary>The entropy search against a slow, literal port of pytorch-quantization's _compute_amax_entropy.</summary>
public class EntropyReferenceTests
{
    // Literal port: linspace/digitize, a Counter of chunk members, densities normalised, scipy's entropy (which
    // renormalises both and gives +inf where q is 0 but p is not), and the last argmin.
    private static int ReferenceThresholdBins(long[] bins, int nbins)
    {
        int n = bins.Length;
        double totalCounts = bins.Sum();
        var divergence = new List<double>();
        var arguments = new List<int>();
        for (int i = nbins; i <= n; i++)
        {
            double[] space = new double[nbins + 1];
            double step = (double)i / nbins;
            for (int k = 0; k <= nbins; k++)
                space[k] = k * step;
            int[] digitized = new int[i];
            for (int j = 0; j < i; j++)
            {
                int d = 0;
                while (d + 1 <= nbins && space[d + 1] <= j) // numpy.digitize(j, space) - 1
                    d++;
                digitized[j] = bins[j] == 0 ? -1 : d;
            }
            var newDensityCounts = new double[nbins];
            var counter = new Dictionary<int, int>();
            for (int j = 0; j < i; j++)
            {
                if (digitized[j] != -1)
                    newDensityCounts[digitized[j]] += bins[j];
                counter[digitized[j]] = counter.GetValueOrDefault(digitized[j]) + 1;
            }
            foreach (var (key, val) in counter)
            {
                if (key != -1)
                    newDensityCounts[key] /= val;
            }
            var newDensity = new double[i];
            for (int j = 0; j < i; j++)
                newDensity[j] = digitized[j] == -1 ? 0 : newDensityCounts[digitized[j]];
            var reference = new double[i];
            for (int j = 0; j < i; j++)
                reference[j] = bins[j];
            for (int j = i; j < n; j++)
                reference[i - 1] += bins[j];
            Assert.Equal(totalCounts, reference.Sum());

            double sp = reference.Sum(), sq = newDensity.Sum();
            double kl = 0;
            for (int j = 0; j < i; j++)
            {
                double p = reference[j] / sp, q = newDensity[j] / sq;
                if (p > 0)
                    kl += q > 0 ? p * Math.Log(p / q) : double.PositiveInfinity;
            }
            divergence.Add(kl);
            arguments.Add(i);
        }
        double min = divergence.Min();
        return arguments[divergence.LastIndexOf(min)];
    }

    public static TheoryData<string, int> Cases() => new()
    {
        { "gaussian-outliers", 128 }, { "gaussian-outliers", 256 }, { "gaussian-outliers", 8 },
        { "relu", 256 }, { "relu", 128 }, { "uniform", 128 }, { "laplace", 128 }, { "laplace", 2 }, { "sparse", 16 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void FastSearch_MatchesTheReference(string shape, int levels)
    {
        long[] hist = Histogram(shape);
        int fast = EntropyThreshold.FindThresholdBins(hist, levels);
        int slow = ReferenceThresholdBins(hist, levels);
        Assert.Equal(slow, fast);
    }

    private static long[] Histogram(string shape)
    {
        var rng = new Random(shape.Length * 31 + 5);
        float[] data = shape switch
        {
            "gaussian-outliers" => CalibrationData.GaussianWithOutliers(),
            "relu" => CalibrationData.Gaussian(50_000, 2).Select(x => MathF.Max(x, 0f)).ToArray(),
            "uniform" => Enumerable.Range(0, 20_000).Select(_ => (float)rng.NextDouble()).ToArray(),
            "laplace" => Enumerable.Range(0, 50_000).Select(_ => (float)(-Math.Log(1 - rng.NextDouble()) * (rng.Next(2) * 2 - 1))).ToArray(),
            _ => Enumerable.Range(0, 300).Select(_ => (float)Math.Round(rng.NextDouble() * 40) / 4).ToArray(),
        };
        var h = new PowerOfTwoHistogram();
        h.Add(data, data.Max(MathF.Abs), allFinite: true);
        return h.AbsoluteCounts();
    }
}

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// TensorRT's entropy calibration (as in NVIDIA pytorch-quantization's <c>_compute_amax_entropy</c>): for each
/// candidate threshold of i bins (i from the number of quantized levels up to all bins), the reference distribution
/// is bins[0..i) with the clipped tail added to the last bin; the candidate distribution spreads each of the
/// <c>levels</c> merged chunks' counts evenly over that chunk's non-empty bins. The threshold minimising
/// KL(reference || candidate) wins; on ties the largest threshold.
/// </summary>
internal static class EntropyThreshold
{
    /// <summary>Returns the winning bin count i; the threshold is i bin widths.</summary>
    public static int FindThresholdBins(ReadOnlySpan<long> histogram, int levels)
    {
        int n = histogram.Length;
        if (levels < 1 || levels > n)
            throw new ArgumentOutOfRangeException(nameof(levels), levels, $"Entropy calibration needs 1 to {n} quantized levels.");

        var suffix = new long[n + 1];
        for (int j = n - 1; j >= 0; j--)
            suffix[j] = suffix[j + 1] + histogram[j];
        long total = suffix[0];
        if (total == 0)
            return n;

        var chunkSum = new long[levels];
        var chunkNonZero = new int[levels];
        double bestDivergence = double.PositiveInfinity;
        int best = n;
        for (int i = levels; i <= n; i++)
        {
            Array.Clear(chunkSum);
            Array.Clear(chunkNonZero);
            for (int j = 0; j < i; j++)
            {
                long c = histogram[j];
                if (c != 0)
                {
                    int k = (int)((long)j * levels / i);
                    chunkSum[k] += c;
                    chunkNonZero[k]++;
                }
            }

            long inside = total - suffix[i];
            double divergence = 0;
            for (int j = 0; j < i; j++)
            {
                long reference = histogram[j];
                if (j == i - 1)
                    reference += suffix[i];
                if (reference == 0)
                    continue;
                long c = histogram[j];
                if (c == 0)
                {
                    divergence = double.PositiveInfinity; // Tail mass on an empty last bin: the candidate has no mass there.
                    break;
                }
                int k = (int)((long)j * levels / i);
                double p = (double)reference / total;
                double q = (double)chunkSum[k] / chunkNonZero[k] / inside;
                divergence += p * Math.Log(p / q);
            }

            if (divergence <= bestDivergence)
            {
                bestDivergence = divergence;
                best = i;
            }
        }
        return best;
    }
}

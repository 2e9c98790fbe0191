using System.Numerics.Tensors;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// TensorRT's entropy calibration (as in NVIDIA pytorch-quantization's <c>_compute_amax_entropy</c>): for each
/// candidate threshold of i bins (i from the number of quantized levels up to all bins), the reference distribution
/// is bins[0..i) with the clipped tail added to the last bin; the candidate distribution spreads each of the
/// <c>levels</c> merged chunks' counts evenly over that chunk's non-empty bins. The threshold minimising
/// KL(reference || candidate) wins; on ties (equal up to rounding, 1e-12 relative) the largest threshold.
/// </summary>
/// <remarks>
/// Chunk k of candidate i holds the bins j with floor(j * levels / i) = k, a contiguous run, so with prefix sums of
/// h, h log h and the non-empty count, each candidate costs O(levels) instead of O(i):
/// KL = Σ_j (r_j/T) (log r_j - log T - log q_k(j)), q_k = S_k / (nz_k * inside), where r_j = h_j except the last bin,
/// which also carries the clipped tail.
/// </remarks>
internal static class EntropyThreshold
{
    private const double TieTolerance = 1e-12;

    /// <summary>Returns the winning bin count i; the threshold is i bin widths.</summary>
    public static int FindThresholdBins(ReadOnlySpan<long> histogram, int levels)
    {
        int n = histogram.Length;
        if (levels < 1 || levels > n)
            throw new ArgumentOutOfRangeException(nameof(levels), levels, $"Entropy calibration needs 1 to {n} quantized levels.");

        // Prefix sums over bins [0, j): counts, counts * log(counts), non-empty bins.
        var sum = new long[n + 1];
        var sumHLogH = new double[n + 1];
        var nonEmpty = new int[n + 1];
        for (int j = 0; j < n; j++)
        {
            long h = histogram[j];
            sum[j + 1] = sum[j] + h;
            sumHLogH[j + 1] = sumHLogH[j] + (h > 0 ? h * Math.Log(h) : 0);
            nonEmpty[j + 1] = nonEmpty[j] + (h > 0 ? 1 : 0);
        }
        long total = sum[n];
        if (total == 0)
            return n;
        double logTotal = Math.Log(total);

        var logInt = new double[n + 1];
        for (int v = 1; v <= n; v++)
            logInt[v] = Math.Log(v);
        var chunkSum = new double[levels];
        var logChunkSum = new double[levels];
        var bounds = new int[levels + 1];

        double bestDivergence = double.PositiveInfinity;
        int best = n;
        for (int i = levels; i <= n; i++)
        {
            long last = histogram[i - 1];
            long tail = total - sum[i];
            if (tail > 0 && last == 0)
                continue; // Tail mass on an empty last bin: the candidate has no mass there (infinite divergence).

            for (int k = 0; k <= levels; k++)
                bounds[k] = (int)(((long)k * i + levels - 1) / levels); // first bin of chunk k: ceil(k * i / levels)
            for (int k = 0; k < levels; k++)
            {
                long s = sum[bounds[k + 1]] - sum[bounds[k]];
                chunkSum[k] = s == 0 ? 1 : s; // empty chunks carry no reference mass: log(1) = 0 keeps them out
            }
            TensorPrimitives.Log(chunkSum, logChunkSum);

            // Σ_j h_j log q_k(j) over bins j < i - 1 (the last bin is added below with its tail).
            double hLogQ = 0;
            for (int k = 0; k < levels; k++)
            {
                long s = sum[bounds[k + 1]] - sum[bounds[k]];
                if (s == 0)
                    continue;
                int nz = nonEmpty[bounds[k + 1]] - nonEmpty[bounds[k]];
                long inChunk = k == levels - 1 ? s - last : s;
                hLogQ += inChunk * (logChunkSum[k] - logInt[nz]);
            }
            long inside = sum[i];
            double logInside = Math.Log(inside);
            double body = sumHLogH[i - 1] - (double)sum[i - 1] * logTotal - hLogQ + (double)sum[i - 1] * logInside;

            long reference = last + tail;
            if (reference > 0)
            {
                int nzLast = nonEmpty[bounds[levels]] - nonEmpty[bounds[levels - 1]];
                double logQ = logChunkSum[levels - 1] - logInt[nzLast] - logInside;
                body += reference * (Math.Log(reference) - logTotal - logQ);
            }
            double divergence = body / total;

            if (divergence <= bestDivergence + TieTolerance * Math.Abs(bestDivergence) || double.IsPositiveInfinity(bestDivergence))
            {
                bestDivergence = Math.Min(divergence, bestDivergence);
                best = i;
            }
        }
        return best;
    }
}

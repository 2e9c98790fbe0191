namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// Percentile clipping from a <see cref="PowerOfTwoHistogram"/>. At most (100 - p)% of the finite values may lie
/// beyond each end: the end is the outer edge of the bin where that tail budget runs out, never beyond the exact
/// extreme. Symmetric ranges apply this to |x|; asymmetric ones to each side separately.
/// </summary>
internal static class PercentileRange
{
    public static (float Min, float Max) Compute(PowerOfTwoHistogram histogram, ChannelStatistics stats, double percentile, bool symmetric)
    {
        double tail = (100.0 - percentile) / 100.0 * stats.Count;
        double width = histogram.BinWidth;
        if (symmetric)
        {
            float maxAbs = MathF.Max(-stats.Min, stats.Max);
            float a = Edge(histogram.AbsoluteCounts(), tail, width, maxAbs);
            return (-a, a);
        }

        float hi = stats.Max > 0 ? Edge(histogram.NonNegative, tail, width, stats.Max) : stats.Max;
        float lo = stats.Min < 0 ? -Edge(histogram.Negative, tail, width, -stats.Min) : stats.Min;
        return (lo, MathF.Max(lo, hi));
    }

    // Scans from the top: the first bin whose count would exceed the tail budget sets the edge.
    private static float Edge(ReadOnlySpan<long> counts, double tail, double width, float extreme)
    {
        long beyond = 0;
        for (int i = counts.Length - 1; i >= 0; i--)
        {
            beyond += counts[i];
            if (beyond > tail)
                return MathF.Min((float)((i + 1) * width), extreme);
        }
        return 0f;
    }
}

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// The clipping range minimising the squared quantization error, estimated from a <see cref="PowerOfTwoHistogram"/>
/// (each bin's values stand at its centre, clamped to the exact extremes). Candidates shrink the observed range
/// (after extension to include 0) by k / 128, k = 1..128; symmetric ranges shrink [-a, a]. Ties keep the wider range.
/// </summary>
internal static class MseRange
{
    public const int CandidateCount = 128;

    public static (float Min, float Max) Compute(PowerOfTwoHistogram histogram, ChannelStatistics stats, int bits, bool isSigned, bool symmetric)
    {
        float lo = MathF.Min(stats.Min, 0f), hi = MathF.Max(stats.Max, 0f);
        if (symmetric)
        {
            hi = MathF.Max(-lo, hi);
            lo = -hi;
        }
        if (lo == hi)
            return (lo, hi);

        // The non-empty bins once, as (centre, count).
        double width = histogram.BinWidth;
        var centres = new List<(float Value, long Count)>();
        AddSide(centres, histogram.NonNegative, width, 1f, stats);
        AddSide(centres, histogram.Negative, width, -1f, stats);

        var (qmin, qmax) = QuantizationParameters.GetQuantizedRange(bits, isSigned, symmetric);
        double bestError = double.PositiveInfinity;
        (float, float) best = (lo, hi);
        for (int k = 1; k <= CandidateCount; k++)
        {
            float cmin = (float)((double)lo * k / CandidateCount), cmax = (float)((double)hi * k / CandidateCount);
            var p = QuantizationParameters.Compute(cmin, cmax, bits, isSigned, symmetric);
            double error = 0;
            foreach (var (value, count) in centres)
            {
                double q = Math.Clamp(Math.Round((double)(value / p.Scale), MidpointRounding.ToEven) + p.ZeroPoint, qmin, qmax);
                double d = value - (float)(q - p.ZeroPoint) * p.Scale;
                error += d * d * count;
            }
            if (error <= bestError)
            {
                bestError = error;
                best = (cmin, cmax);
            }
        }
        return best;
    }

    private static void AddSide(List<(float, long)> centres, ReadOnlySpan<long> counts, double width, float sign, ChannelStatistics stats)
    {
        for (int i = 0; i < counts.Length; i++)
        {
            if (counts[i] != 0)
                centres.Add((Math.Clamp(sign * (float)((i + 0.5) * width), stats.Min, stats.Max), counts[i]));
        }
    }
}

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

        var centres = Centres(histogram, stats);
        double bestError = double.PositiveInfinity;
        (float, float) best = (lo, hi);
        for (int k = 1; k <= CandidateCount; k++)
        {
            float cmin = (float)((double)lo * k / CandidateCount), cmax = (float)((double)hi * k / CandidateCount);
            double error = SquaredError(centres, cmin, cmax, bits, isSigned, symmetric);
            if (error <= bestError)
            {
                bestError = error;
                best = (cmin, cmax);
            }
        }
        return best;
    }

    /// <summary>The non-empty bins as (centre, count), each centre clamped to the exact extremes.</summary>
    public static List<(float Value, long Count)> Centres(PowerOfTwoHistogram histogram, ChannelStatistics stats)
    {
        double width = histogram.BinWidth;
        var centres = new List<(float Value, long Count)>();
        AddSide(centres, histogram.NonNegative, width, 1f, stats);
        AddSide(centres, histogram.Negative, width, -1f, stats);
        return centres;
    }

    /// <summary>The squared error of quantizing the histogram's values with the parameters of the range [min, max].</summary>
    public static double SquaredError(List<(float Value, long Count)> centres, float min, float max, int bits, bool isSigned, bool symmetric)
    {
        var (qmin, qmax) = QuantizationParameters.GetQuantizedRange(bits, isSigned, symmetric);
        var p = QuantizationParameters.Compute(min, max, bits, isSigned, symmetric);
        double error = 0;
        foreach (var (value, count) in centres)
        {
            double q = Math.Clamp(Math.Round((double)(value / p.Scale), MidpointRounding.ToEven) + p.ZeroPoint, qmin, qmax);
            double d = value - (float)(q - p.ZeroPoint) * p.Scale;
            error += d * d * count;
        }
        return error;
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

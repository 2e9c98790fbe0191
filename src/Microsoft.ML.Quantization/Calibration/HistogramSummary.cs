namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// What calibration saw of a tensor (summed over channels for per-channel entries): the finite values counted,
/// their exact extremes, the NaN/infinite values left out, and the histogram grid when the method used one.
/// </summary>
/// <param name="Count">Finite values observed.</param>
/// <param name="NonFiniteCount">NaN and infinite values observed; reported, never folded into a range.</param>
/// <param name="Min">Exact smallest finite value (0 when none).</param>
/// <param name="Max">Exact largest finite value (0 when none).</param>
/// <param name="BinCount">Bins per side of the histogram (2048), or 0 when the method keeps none (MinMax).</param>
/// <param name="BinsUsed">One past the highest non-empty |x| bin (widest channel); 0 without a histogram.</param>
/// <param name="Exponent">The histogram covers |x| in [0, 2^Exponent) (widest channel); null without a histogram.</param>
public sealed record HistogramSummary(long Count, long NonFiniteCount, float Min, float Max, int BinCount, int BinsUsed, int? Exponent)
{
    /// <summary>The histogram's |x| range, 2^Exponent, or null without a histogram.</summary>
    public double? HistogramRange => Exponent is { } e ? Math.ScaleB(1.0, e) : null;
}

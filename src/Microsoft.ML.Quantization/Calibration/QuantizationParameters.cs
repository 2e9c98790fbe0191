namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// The scale and zero point of an ONNX QuantizeLinear/DequantizeLinear pair, computed from a real range as
/// ONNX Runtime's quantization tool does (<c>compute_scale_zp</c>).
/// </summary>
/// <param name="Scale">The float32 step between adjacent quantized levels; always positive and normal.</param>
/// <param name="ZeroPoint">The quantized value that represents real 0 exactly.</param>
public readonly record struct QuantizationParameters(float Scale, int ZeroPoint)
{
    // numpy.finfo(float32).tiny: below it ORT falls back to scale 1, zero point 0.
    private const float SmallestNormal = 1.17549435E-38f;

    /// <summary>
    /// Computes scale and zero point for the real range [<paramref name="rangeMin"/>, <paramref name="rangeMax"/>].
    /// The range is first extended to include 0 (so 0 is exactly representable) and, when symmetric, made
    /// [-a, a] with a = max(|min|, |max|). scale = (max - min) / (qmax - qmin); zero point =
    /// round_half_even(qmin - min / scale) (symmetric: round_half_even((qmin + qmax) / 2)), clamped to [qmin, qmax].
    /// A zero-width range (a constant or all-zero tensor) gets scale 1 and zero point 0, never 0 or NaN.
    /// </summary>
    /// <param name="rangeMin">Lower end of the real range; finite.</param>
    /// <param name="rangeMax">Upper end of the real range; finite, at least <paramref name="rangeMin"/>.</param>
    /// <param name="bits">Width of the quantized type, 2 to 16.</param>
    /// <param name="isSigned">Signed (int8-like) or unsigned (uint8-like) type.</param>
    /// <param name="isSymmetric">Symmetric range; signed symmetric uses the restricted range (-127..127 for 8 bits).</param>
    public static QuantizationParameters Compute(float rangeMin, float rangeMax, int bits, bool isSigned, bool isSymmetric)
    {
        if (!float.IsFinite(rangeMin) || !float.IsFinite(rangeMax))
            throw new ArgumentException($"The range [{rangeMin}, {rangeMax}] must be finite.");
        if (rangeMin > rangeMax)
            throw new ArgumentException($"The range minimum {rangeMin} exceeds the maximum {rangeMax}.");
        var (qmin, qmax) = GetQuantizedRange(bits, isSigned, isSymmetric);

        float rmin = MathF.Min(rangeMin, 0f), rmax = MathF.Max(rangeMax, 0f);
        if (isSymmetric)
        {
            float absMax = MathF.Max(-rmin, rmax);
            rmin = -absMax;
            rmax = absMax;
        }

        // As ORT: the width in float32, the division and zero point in float64, the scale stored as float32.
        float width = rmax - rmin;
        if (!float.IsFinite(width))
            throw new ArgumentException($"The range [{rangeMin}, {rangeMax}] is too wide for a float32 scale.");
        double scale = (double)width / (qmax - qmin);
        if (scale < SmallestNormal)
            return new QuantizationParameters(1f, 0);

        double zp = isSymmetric ? Math.Round((qmin + qmax) / 2.0, MidpointRounding.ToEven)
                                : Math.Round(qmin - rmin / scale, MidpointRounding.ToEven);
        return new QuantizationParameters((float)scale, (int)Math.Clamp(zp, qmin, qmax));
    }

    /// <summary>
    /// The quantized levels a calibrated range maps onto: signed symmetric [-(2^(b-1)-1), 2^(b-1)-1] (restricted,
    /// zero point 0), signed asymmetric [-2^(b-1), 2^(b-1)-1], unsigned [0, 2^b-1].
    /// </summary>
    public static (int Min, int Max) GetQuantizedRange(int bits, bool isSigned, bool isSymmetric)
    {
        var (lo, hi) = GetTypeRange(bits, isSigned);
        return isSigned && isSymmetric ? (lo + 1, hi) : (lo, hi);
    }

    /// <summary>The full range of the integer type that QuantizeLinear saturates to (int8: -128..127, uint8: 0..255).</summary>
    public static (int Min, int Max) GetTypeRange(int bits, bool isSigned)
    {
        if (bits is < 2 or > 16)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "Bits must be between 2 and 16.");
        return isSigned ? (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) : (0, (1 << bits) - 1);
    }
}

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// Reference ONNX QuantizeLinear / DequantizeLinear over spans: <c>y = saturate(round_half_even(x / scale) + zp)</c>
/// and <c>x = (y - zp) * scale</c>, with float32 division and multiplication as the operator specifies.
/// Per-axis forms take the tensor as [outer, channels, inner] with one scale and zero point per channel.
/// </summary>
public static class LinearQuantization
{
    /// <summary>
    /// Quantizes one value. Infinities saturate; NaN (which ONNX leaves undefined) gives the type's minimum, as ONNX Runtime's
    /// x86 kernels and QatMl's native engine do (their clamp is max then min, and max returns the limit for NaN).
    /// </summary>
    public static int QuantizeLinear(float x, float scale, int zeroPoint, int bits, bool isSigned)
    {
        var (lo, hi) = QuantizationParameters.GetTypeRange(bits, isSigned);
        return Quantize(x, scale, zeroPoint, lo, hi);
    }

    /// <summary>Dequantizes one value: (q - zeroPoint) * scale in float32.</summary>
    public static float DequantizeLinear(int q, float scale, int zeroPoint) => (float)(q - zeroPoint) * scale;

    /// <summary>Per-tensor QuantizeLinear of <paramref name="x"/> into <paramref name="destination"/>.</summary>
    public static void QuantizeLinear(ReadOnlySpan<float> x, float scale, int zeroPoint, int bits, bool isSigned, Span<int> destination)
    {
        CheckScale(scale);
        if (destination.Length < x.Length)
            throw new ArgumentException("Destination is shorter than the source.", nameof(destination));
        var (lo, hi) = QuantizationParameters.GetTypeRange(bits, isSigned);
        for (int i = 0; i < x.Length; i++)
            destination[i] = Quantize(x[i], scale, zeroPoint, lo, hi);
    }

    /// <summary>Per-tensor DequantizeLinear of <paramref name="q"/> into <paramref name="destination"/>.</summary>
    public static void DequantizeLinear(ReadOnlySpan<int> q, float scale, int zeroPoint, Span<float> destination)
    {
        if (destination.Length < q.Length)
            throw new ArgumentException("Destination is shorter than the source.", nameof(destination));
        for (int i = 0; i < q.Length; i++)
            destination[i] = (float)(q[i] - zeroPoint) * scale;
    }

    /// <summary>
    /// Per-axis QuantizeLinear: <paramref name="x"/> is [outer, scales.Length, <paramref name="innerSize"/>]
    /// (row-major); channel c uses scales[c] and zeroPoints[c].
    /// </summary>
    public static void QuantizeLinear(ReadOnlySpan<float> x, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints,
        int innerSize, int bits, bool isSigned, Span<int> destination)
    {
        int channels = CheckAxis(x.Length, scales.Length, zeroPoints.Length, innerSize, destination.Length);
        var (lo, hi) = QuantizationParameters.GetTypeRange(bits, isSigned);
        foreach (float s in scales)
            CheckScale(s);
        for (int i = 0; i < x.Length; i++)
        {
            int c = i / innerSize % channels;
            destination[i] = Quantize(x[i], scales[c], zeroPoints[c], lo, hi);
        }
    }

    /// <summary>Per-axis DequantizeLinear; the layout is as in the per-axis QuantizeLinear.</summary>
    public static void DequantizeLinear(ReadOnlySpan<int> q, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints,
        int innerSize, Span<float> destination)
    {
        int channels = CheckAxis(q.Length, scales.Length, zeroPoints.Length, innerSize, destination.Length);
        for (int i = 0; i < q.Length; i++)
        {
            int c = i / innerSize % channels;
            destination[i] = (float)(q[i] - zeroPoints[c]) * scales[c];
        }
    }

    private static int Quantize(float x, float scale, int zeroPoint, int lo, int hi)
    {
        float scaled = x / scale;
        if (float.IsNaN(scaled))
            return lo;
        double y = Math.Round((double)scaled, MidpointRounding.ToEven) + zeroPoint;
        return (int)Math.Clamp(y, lo, hi);
    }

    private static void CheckScale(float scale)
    {
        if (!(scale > 0) || !float.IsFinite(scale))
            throw new ArgumentOutOfRangeException(nameof(scale), scale, "Scale must be positive and finite.");
    }

    private static int CheckAxis(int length, int scaleCount, int zeroPointCount, int innerSize, int destinationLength)
    {
        if (scaleCount == 0 || scaleCount != zeroPointCount)
            throw new ArgumentException($"Per-axis quantization needs as many zero points ({zeroPointCount}) as scales ({scaleCount}), at least one.");
        if (innerSize < 1 || length % ((long)scaleCount * innerSize) != 0)
            throw new ArgumentException($"A tensor of {length} values is not [outer, {scaleCount}, {innerSize}].");
        if (destinationLength < length)
            throw new ArgumentException("Destination is shorter than the source.");
        return scaleCount;
    }
}

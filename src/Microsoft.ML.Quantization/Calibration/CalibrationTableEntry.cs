namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// The calibration of one tensor: its ranges and the ONNX QuantizeLinear scale and zero point derived from them,
/// one per channel along <see cref="Axis"/> or one for the whole tensor.
/// </summary>
public sealed class CalibrationTableEntry
{
    private readonly float[] _rangeMin, _rangeMax, _scales;
    private readonly int[] _zeroPoints;

    /// <summary>Creates an entry; the arrays are copied and must all have the same, non-zero length.</summary>
    /// <param name="tensorName">The ONNX tensor name.</param>
    /// <param name="kind">Activation or weight.</param>
    /// <param name="method">The calibration method that chose the range.</param>
    /// <param name="bits">Quantized width, 2 to 16.</param>
    /// <param name="isSigned">Signed or unsigned quantized type.</param>
    /// <param name="isSymmetric">Symmetric quantization.</param>
    /// <param name="axis">The per-channel axis, or null for per tensor (then one value per array).</param>
    /// <param name="rangeMin">Calibrated range minimum per channel.</param>
    /// <param name="rangeMax">Calibrated range maximum per channel.</param>
    /// <param name="scales">Scale per channel.</param>
    /// <param name="zeroPoints">Zero point per channel.</param>
    /// <param name="histogram">Summary of the observed values.</param>
    /// <param name="rangeSource">The tensor whose observations this entry reuses (see <see cref="RangeSource"/>), or null.</param>
    public CalibrationTableEntry(string tensorName, TensorKind kind, CalibrationMethod method, int bits, bool isSigned, bool isSymmetric,
        int? axis, IReadOnlyList<float> rangeMin, IReadOnlyList<float> rangeMax, IReadOnlyList<float> scales,
        IReadOnlyList<int> zeroPoints, HistogramSummary histogram, string? rangeSource = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(tensorName);
        ArgumentNullException.ThrowIfNull(rangeMin);
        ArgumentNullException.ThrowIfNull(rangeMax);
        ArgumentNullException.ThrowIfNull(scales);
        ArgumentNullException.ThrowIfNull(zeroPoints);
        ArgumentNullException.ThrowIfNull(histogram);
        if (!Enum.IsDefined(kind))
            throw new ArgumentException($"Unknown tensor kind {(int)kind}.", nameof(kind));
        if (!Enum.IsDefined(method))
            throw new ArgumentException($"Unknown calibration method {(int)method}.", nameof(method));
        var (qmin, qmax) = QuantizationParameters.GetTypeRange(bits, isSigned);
        if (axis is < 0)
            throw new ArgumentOutOfRangeException(nameof(axis), axis, "The channel axis must be non-negative.");
        int n = rangeMin.Count;
        if (n == 0 || rangeMax.Count != n || scales.Count != n || zeroPoints.Count != n)
            throw new ArgumentException($"Tensor '{tensorName}': min ({rangeMin.Count}), max ({rangeMax.Count}), scale ({scales.Count}) and zero point ({zeroPoints.Count}) lists must have the same non-zero length.");
        if (axis is null && n != 1)
            throw new ArgumentException($"Tensor '{tensorName}' is per tensor but has {n} ranges.");
        for (int i = 0; i < n; i++)
        {
            if (!float.IsFinite(rangeMin[i]) || !float.IsFinite(rangeMax[i]) || rangeMin[i] > rangeMax[i])
                throw new ArgumentException($"Tensor '{tensorName}': channel {i} has an invalid range [{rangeMin[i]}, {rangeMax[i]}].");
            if (!(scales[i] > 0) || !float.IsFinite(scales[i]))
                throw new ArgumentException($"Tensor '{tensorName}': channel {i} has an invalid scale {scales[i]}.");
            if (zeroPoints[i] < qmin || zeroPoints[i] > qmax)
                throw new ArgumentException($"Tensor '{tensorName}': channel {i} zero point {zeroPoints[i]} is outside [{qmin}, {qmax}].");
        }

        TensorName = tensorName;
        Kind = kind;
        Method = method;
        Bits = bits;
        IsSigned = isSigned;
        IsSymmetric = isSymmetric;
        Axis = axis;
        _rangeMin = [.. rangeMin];
        _rangeMax = [.. rangeMax];
        _scales = [.. scales];
        _zeroPoints = [.. zeroPoints];
        Histogram = histogram;
        RangeSource = rangeSource;
    }

    /// <summary>
    /// Null when this tensor was observed itself. Otherwise the tensor whose range, scale and zero point it shares:
    /// the output of an op that passes quantization through unchanged (MaxPool, Flatten, Reshape, Transpose,
    /// Squeeze, Unsqueeze), which the quantized graph must give its input's parameters anyway.
    /// </summary>
    public string? RangeSource { get; }

    /// <summary>This entry under another tensor's name, sharing this one's range (<see cref="RangeSource"/>).</summary>
    internal CalibrationTableEntry SharedAs(string tensorName)
        => new(tensorName, Kind, Method, Bits, IsSigned, IsSymmetric, Axis, _rangeMin, _rangeMax, _scales, _zeroPoints, Histogram,
            RangeSource ?? TensorName);

    /// <summary>The ONNX tensor name (the table's key).</summary>
    public string TensorName { get; }

    /// <summary>Activation or weight.</summary>
    public TensorKind Kind { get; }

    /// <summary>The calibration method that chose the range.</summary>
    public CalibrationMethod Method { get; }

    /// <summary>Quantized width in bits.</summary>
    public int Bits { get; }

    /// <summary>Signed or unsigned quantized type.</summary>
    public bool IsSigned { get; }

    /// <summary>Symmetric quantization.</summary>
    public bool IsSymmetric { get; }

    /// <summary>The per-channel axis of the tensor, or null when per tensor.</summary>
    public int? Axis { get; }

    /// <summary>Calibrated range minimum, per channel (one value when per tensor).</summary>
    public IReadOnlyList<float> RangeMin => _rangeMin;

    /// <summary>Calibrated range maximum, per channel (one value when per tensor).</summary>
    public IReadOnlyList<float> RangeMax => _rangeMax;

    /// <summary>QuantizeLinear scale, per channel (one value when per tensor).</summary>
    public IReadOnlyList<float> Scales => _scales;

    /// <summary>QuantizeLinear zero point, per channel (one value when per tensor).</summary>
    public IReadOnlyList<int> ZeroPoints => _zeroPoints;

    /// <summary>Summary of the observed values.</summary>
    public HistogramSummary Histogram { get; }

    /// <summary>NaN and infinite values observed (also in <see cref="Histogram"/>).</summary>
    public long NonFiniteCount => Histogram.NonFiniteCount;

    /// <summary>The scale and zero point of channel <paramref name="channel"/> (0 when per tensor).</summary>
    public QuantizationParameters GetParameters(int channel = 0) => new(_scales[channel], _zeroPoints[channel]);
}

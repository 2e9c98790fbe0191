namespace Microsoft.ML.Quantization.Calibration;

/// <summary>How one tensor is calibrated: the method, the target integer type and the method's settings.</summary>
public sealed class CalibrationOptions
{
    /// <summary>How the clipping range is chosen. Default <see cref="CalibrationMethod.MinMax"/>.</summary>
    public CalibrationMethod Method { get; set; } = CalibrationMethod.MinMax;

    /// <summary>Width of the quantized integer type, 2 to 16 (Entropy: 2 to 8). Default 8.</summary>
    public int Bits { get; set; } = 8;

    /// <summary>Signed (int8-like) or unsigned (uint8-like) quantized type. Default false (uint8).</summary>
    public bool IsSigned { get; set; }

    /// <summary>
    /// Symmetric ranges [-a, a]; with a signed type the restricted range [-(2^(b-1)-1), 2^(b-1)-1] and zero point 0.
    /// Default false (asymmetric, with a zero point).
    /// </summary>
    public bool IsSymmetric { get; set; }

    /// <summary>For <see cref="CalibrationMethod.Percentile"/>: the percentile kept on each side, in (0, 100]. Default 99.99.</summary>
    public double Percentile { get; set; } = 99.99;

    /// <summary>For <see cref="CalibrationMethod.MovingAverageMinMax"/>: the averaging constant in (0, 1]. Default 0.01.</summary>
    public double MovingAverageConstant { get; set; } = 0.01;

    /// <summary>Options for 8-bit symmetric signed per-channel weights (the TFLite/ONNX Runtime convention).</summary>
    public static CalibrationOptions ForWeights(CalibrationMethod method = CalibrationMethod.MinMax)
        => new() { Method = method, Bits = 8, IsSigned = true, IsSymmetric = true };

    /// <summary>Checks the settings; throws <see cref="ArgumentException"/> naming the bad one.</summary>
    internal void Validate()
    {
        if (!Enum.IsDefined(Method))
            throw new ArgumentException($"Unknown calibration method {(int)Method}.", nameof(Method));
        if (Bits is < 2 or > 16)
            throw new ArgumentException($"Bits must be between 2 and 16; got {Bits}.", nameof(Bits));
        if (Method == CalibrationMethod.Entropy && Bits > 8)
            throw new ArgumentException(
                $"Entropy calibration supports 2 to 8 bits (its 2048-bin histogram cannot resolve more levels); got {Bits}. Use Percentile, Mse or MinMax for wider types.",
                nameof(Bits));
        if (!(Percentile > 0 && Percentile <= 100))
            throw new ArgumentException($"Percentile must be in (0, 100]; got {Percentile}.", nameof(Percentile));
        if (!(MovingAverageConstant > 0 && MovingAverageConstant <= 1))
            throw new ArgumentException($"MovingAverageConstant must be in (0, 1]; got {MovingAverageConstant}.", nameof(MovingAverageConstant));
    }

    internal CalibrationOptions Clone() => (CalibrationOptions)MemberwiseClone();

    // Merged observers must agree on everything that changes the result.
    internal bool SameCalibration(CalibrationOptions other)
        => Method == other.Method && Bits == other.Bits && IsSigned == other.IsSigned && IsSymmetric == other.IsSymmetric
           && Percentile == other.Percentile && MovingAverageConstant == other.MovingAverageConstant;
}

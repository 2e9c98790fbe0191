namespace Microsoft.ML.Quantization.Calibration;

/// <summary>How a tensor's clipping range is chosen from the values observed during calibration.</summary>
public enum CalibrationMethod
{
    /// <summary>The exact minimum and maximum seen. Never clips; sensitive to outliers.</summary>
    MinMax = 0,

    /// <summary>
    /// An exponential moving average of each batch's minimum and maximum. Depends on batch order, so it cannot be
    /// sharded: merging two such observers is an error.
    /// </summary>
    MovingAverageMinMax = 1,

    /// <summary>The range that keeps a configurable percentile (default 99.99) of the values on each side.</summary>
    Percentile = 2,

    /// <summary>TensorRT's entropy calibration: the |x| threshold minimising the KL divergence. 2 to 8 bits only.</summary>
    Entropy = 3,

    /// <summary>The clipping range minimising the mean squared quantization error.</summary>
    Mse = 4,

    /// <summary>
    /// Per tensor, whichever of MinMax, Percentile and Entropy (Entropy up to 8 bits) reconstructs the tensor's own
    /// values best: the least squared quantization error on its histogram (ties keep MinMax).
    /// </summary>
    Auto = 5,
}

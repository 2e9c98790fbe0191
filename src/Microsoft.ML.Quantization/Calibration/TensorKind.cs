namespace Microsoft.ML.Quantization.Calibration;

/// <summary>Whether a calibrated tensor is an activation (observed per batch) or a weight (an initializer).</summary>
public enum TensorKind
{
    /// <summary>A value computed by the graph, observed batch by batch; calibrated per tensor.</summary>
    Activation = 0,

    /// <summary>A constant initializer; usually calibrated per output channel.</summary>
    Weight = 1,
}

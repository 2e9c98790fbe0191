namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// The integer widths of one quantized node: its weights and the activations it reads and writes. Widths ONNX has a
/// type for (4, 8, 16) use it; 2, 3, 5, 6 and 7 bits are stored in the next wider type: weights as values already in
/// range, activations as QuantizeLinear -> Clip -> DequantizeLinear (which ONNX Runtime runs in float).
/// </summary>
/// <param name="WeightBits">Weight width, 2 to 8 (per output channel, symmetric, signed).</param>
/// <param name="ActivationBits">Activation width, 2 to 16 (per tensor).</param>
public sealed record QuantizationPrecision(int WeightBits, int ActivationBits)
{
    /// <summary>8-bit weights and activations (the default).</summary>
    public static QuantizationPrecision Int8 { get; } = new(8, 8);

    /// <summary>4-bit weights, 8-bit activations.</summary>
    public static QuantizationPrecision W4A8 { get; } = new(4, 8);

    /// <summary>4-bit weights and activations.</summary>
    public static QuantizationPrecision W4A4 { get; } = new(4, 4);

    internal void Validate(string where)
    {
        if (WeightBits is < 2 or > 8)
            throw new ArgumentException($"{where}: WeightBits must be between 2 and 8; got {WeightBits}.");
        if (ActivationBits is < 2 or > 16)
            throw new ArgumentException($"{where}: ActivationBits must be between 2 and 16; got {ActivationBits}.");
    }

    /// <inheritdoc/>
    public override string ToString() => $"W{WeightBits}A{ActivationBits}";
}

/// <summary>What the quantizer did with one node.</summary>
/// <param name="Name">The node name.</param>
/// <param name="OpType">Its op type.</param>
/// <param name="Precision">Its precision, or null when it stays float.</param>
/// <param name="Reason">Why it stays float (null when quantized).</param>
public sealed record QuantizedNodeInfo(string Name, string OpType, QuantizationPrecision? Precision, string? Reason);

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// The integer widths of one quantized node: its weights and the activations it reads and writes. Weights of 4 and 8
/// bits use int4/int8; 2, 3, 5, 6 and 7-bit weights are stored in int8 with values already in range. Activations
/// of 8 and 16 bits use (u)int8/(u)int16; narrower ones (2 to 7, 4 included) are QuantizeLinear -> Clip ->
/// DequantizeLinear on (u)int8, clipped to their own range (ONNX Runtime runs those nodes in float).
/// </summary>
/// <param name="WeightBits">Weight width, 2 to 8 (per output channel, symmetric, signed).</param>
/// <param name="ActivationBits">
/// Width of the activations the node writes, 2 to 16 (per tensor). Tensors no quantized node writes (graph inputs,
/// outputs of float nodes) take the widest width among the quantized nodes reading them.
/// </param>
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

using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// Fake quantization, the functional layer: <c>dequantize(quantize(x))</c> in the forward pass with ONNX's
/// QuantizeLinear numerics (round half to even, saturation), and the straight-through estimator in the backward pass.
/// Built from primitives (TorchSharp's fused fake_quantize ops are obsolete-as-error): the rounding is detached, so
/// the gradient is 1 inside the clamp range and 0 outside, and a learnable scale gets LSQ's
/// gradient.
/// </summary>
public static class FakeQuantize
{
    /// <summary>Fake-quantizes <paramref name="x"/> per tensor (scalar scale and zero point) or per channel along <paramref name="axis"/>.</summary>
    /// <param name="x">The tensor.</param>
    /// <param name="scale">Scale: a scalar tensor, or one value per channel; may require grad (LSQ).</param>
    /// <param name="zeroPoint">Zero point (float tensor holding integers), same shape as <paramref name="scale"/>.</param>
    /// <param name="quantMin">Lowest quantized level (e.g. 0 for uint8, -127 for symmetric int8).</param>
    /// <param name="quantMax">Highest quantized level.</param>
    /// <param name="axis">Channel axis for per-channel scale, or null.</param>
    /// <param name="gradientScale">LSQ's gradient scale for <paramref name="scale"/> (1 / sqrt(numel * quantMax)); 1 leaves it unscaled.</param>
    public static Tensor Apply(Tensor x, Tensor scale, Tensor zeroPoint, long quantMin, long quantMax, int? axis = null, double gradientScale = 1.0)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(scale);
        ArgumentNullException.ThrowIfNull(zeroPoint);
        if (quantMin >= quantMax)
            throw new ArgumentException($"quantMin {quantMin} must be below quantMax {quantMax}.");
        using var scope = torch.NewDisposeScope();
        Tensor s = scale, z = zeroPoint;
        if (gradientScale != 1.0 && scale.requires_grad)
            s = GradScale(scale, gradientScale);
        if (axis is int a)
        {
            long[] shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
            shape[a] = -1;
            s = s.reshape(shape);
            z = z.reshape(shape);
        }
        if (!s.requires_grad && !z.requires_grad)
            return FixedRange(x, s, z, quantMin, quantMax).MoveToOuterDisposeScope();
        Tensor scaled = x / s;
        // round() is round-half-to-even in libtorch, as ONNX QuantizeLinear; detach gives the straight-through estimator.
        Tensor rounded = scaled + (scaled.round() - scaled).detach();
        Tensor q = (rounded + z).clamp(quantMin, quantMax);
        return ((q - z) * s).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The same values for a fixed scale and zero point, with a cheaper graph: the quantized values are computed in
    /// place outside autograd, and the gradient comes from clamping x to the representable real range (1 inside, 0
    /// outside), so the backward pass is one masked copy instead of a chain of element-wise ops.
    /// </summary>
    private static Tensor FixedRange(Tensor x, Tensor s, Tensor z, long quantMin, long quantMax)
    {
        Tensor quantized;
        bool zeroAtZero = z.numel() == 1 && z.item<float>() == 0;   // ReLU outputs: two passes fewer
        using (torch.no_grad())
        {
            quantized = x / s;
            if (zeroAtZero)
                quantized.round_().clamp_(quantMin, quantMax).mul_(s);
            else
                quantized.round_().add_(z).clamp_(quantMin, quantMax).sub_(z).mul_(s);
        }
        Tensor lo = (quantMin - z) * s, hi = (quantMax - z) * s;
        Tensor clamped = x.clamp(lo, hi);
        // clamped + (quantized - clamped), in place: the values are quantized's (exactly: the two differ by at most
        // half a step, so the subtraction is exact), the gradient is clamp's. Clamp's backward reads x, not its output.
        using (torch.no_grad())
            quantized.sub_(clamped);
        return clamped.add_(quantized);
    }

    /// <summary>y = x in the forward pass; the gradient is multiplied by <paramref name="factor"/>.</summary>
    internal static Tensor GradScale(Tensor x, double factor)
        => (x - x.detach()) * factor + x.detach();
}

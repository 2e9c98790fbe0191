using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// Fake quantization, the functional layer: <c>dequantize(quantize(x))</c> in the forward pass with ONNX's
/// QuantizeLinear numerics (x / s in float32, round half to even, saturation), and the straight-through estimator in
/// the backward pass: the gradient is 1 where x is inside the range and 0 outside, and a learnable scale gets LSQ's
/// gradient. Each call is one fused autograd op (TorchSharp's own fake_quantize ops are obsolete-as-error): its
/// forward computes the output and what the backward needs in a few in-place passes outside autograd, and its
/// backward is one masked copy (plus one product and sum for a learned scale), instead of a graph of element-wise ops.
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
        if (axis is int a)
        {
            long[] shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
            shape[a] = -1;
            s = s.reshape(shape);
            z = z.reshape(shape);
        }
        bool learnedRange = s.requires_grad || z.requires_grad;
        Tensor result = !torch.is_grad_enabled() || !(x.requires_grad || learnedRange)
            ? ForwardOnly(x, s, z, quantMin, quantMax)
            : learnedRange
                ? LearnedRangeFakeQuantize.apply(x, s, z, quantMin, quantMax, gradientScale)
                : FixedRangeFakeQuantize.apply(x, s, z, quantMin, quantMax);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>No gradient wanted: the values only, in place on one buffer.</summary>
    private static Tensor ForwardOnly(Tensor x, Tensor s, Tensor z, long quantMin, long quantMax)
    {
        using (torch.no_grad())
            return Levels(x, s, z, quantMin, quantMax).mul_(s);
    }

    /// <summary>clamp(round(x / s) + z, qmin, qmax) - z, the integer levels relative to the zero point, in one new buffer.</summary>
    internal static Tensor Levels(Tensor x, Tensor s, Tensor z, long quantMin, long quantMax)
    {
        Tensor levels = x / s;
        levels.round_();   // round half to even, as QuantizeLinear
        return IsZero(z) ? levels.clamp_(quantMin, quantMax) : levels.add_(z).clamp_(quantMin, quantMax).sub_(z);
    }

    /// <summary>A scalar zero point of 0 (symmetric or ReLU ranges): two passes fewer.</summary>
    internal static bool IsZero(Tensor z) => z.numel() == 1 && z.item<float>() == 0;

    /// <summary>Sums a broadcast gradient back to the shape of the tensor it was broadcast from.</summary>
    internal static Tensor SumTo(Tensor gradient, long[] shape)
    {
        if (shape.Aggregate(1L, (p, d) => p * d) == 1)
            return gradient.sum().reshape(shape);
        int lead = (int)gradient.dim() - shape.Length;
        long[] dims = Enumerable.Range(0, (int)gradient.dim())
            .Where(d => d < lead || (shape[d - lead] == 1 && gradient.shape[d] != 1)).Select(d => (long)d).ToArray();
        return (dims.Length == 0 ? gradient : gradient.sum(dims, keepdim: true)).reshape(shape);
    }
}

/// <summary>
/// Fake quantization with a fixed scale and zero point as one autograd op. Forward: the levels times the scale, and
/// a mask of the elements outside the representable real range [(qmin - z) s, (qmax - z) s] (NaN included). Backward:
/// the gradient with the masked elements zeroed (clamp's straight-through gradient).
/// </summary>
internal sealed class FixedRangeFakeQuantize : torch.autograd.SingleTensorFunction<FixedRangeFakeQuantize>
{
    public override string Name => nameof(FixedRangeFakeQuantize);

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        Tensor x = (Tensor)vars[0], s = (Tensor)vars[1], z = (Tensor)vars[2];
        long quantMin = (long)vars[3], quantMax = (long)vars[4];
        using var scope = torch.NewDisposeScope();
        Tensor output = FakeQuantize.Levels(x, s, z, quantMin, quantMax).mul_(s);
        Tensor low = (quantMin - z) * s, high = (quantMax - z) * s;
        Tensor outside = x.clamp(low, high).ne(x);
        ctx.save_for_backward([outside.MoveToOuterDisposeScope()]);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        Tensor outside = ctx.get_saved_variables()[0];
        return [grad_output.masked_fill(outside, 0), null!, null!, null!, null!];
    }
}

/// <summary>
/// Fake quantization with a learnable scale (and zero point) as one autograd op, LSQ's gradients. Forward saves the
/// mask of saturated elements (round(x / s) + z outside [qmin, qmax]) and each element's d output / d s: the clamped
/// level outside, round(x / s) - x / s inside. Backward: x gets the gradient with the saturated elements zeroed,
/// s the sum of gradient times d output / d s (scaled by LSQ's factor), z minus s times the saturated gradient.
/// </summary>
internal sealed class LearnedRangeFakeQuantize : torch.autograd.SingleTensorFunction<LearnedRangeFakeQuantize>
{
    public override string Name => nameof(LearnedRangeFakeQuantize);

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        Tensor x = (Tensor)vars[0], s = (Tensor)vars[1], z = (Tensor)vars[2];
        long quantMin = (long)vars[3], quantMax = (long)vars[4];
        using var scope = torch.NewDisposeScope();
        Tensor scaled = x / s;
        Tensor rounded = scaled.round();
        // clamp(round + z, qmin, qmax) - z, exactly, as a clamp of the integer levels to [qmin - z, qmax - z].
        Tensor levels = FakeQuantize.IsZero(z) ? rounded.clamp(quantMin, quantMax) : rounded.clamp(quantMin - z, quantMax - z);
        Tensor saturated = rounded.ne(levels);
        Tensor output = levels * s;
        Tensor scaleGradient = torch.where(saturated, levels, rounded.sub_(scaled));
        ctx.save_for_backward([saturated.MoveToOuterDisposeScope(), scaleGradient.MoveToOuterDisposeScope(), s, z]);
        ctx.save_data("gradients", (x.requires_grad, s.requires_grad, z.requires_grad));
        ctx.save_data("gradientScale", (double)vars[5]);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        Tensor saturated = saved[0], scaleGradient = saved[1], s = saved[2], z = saved[3];
        var (needX, needScale, needZeroPoint) = ((bool, bool, bool))ctx.get_data("gradients");
        Tensor? dx = needX ? grad_output.masked_fill(saturated, 0) : null;
        Tensor? ds = needScale ? FakeQuantize.SumTo(grad_output * scaleGradient, s.shape).mul_((double)ctx.get_data("gradientScale")) : null;
        Tensor? dz = needZeroPoint ? FakeQuantize.SumTo(grad_output.masked_fill(saturated.logical_not(), 0), z.shape).mul_(s).neg_() : null;
        return [dx!, ds!, dz!, null!, null!, null!];
    }
}

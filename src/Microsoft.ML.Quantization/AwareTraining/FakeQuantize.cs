using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// Fake quantization, the functional layer: <c>dequantize(quantize(x))</c> in the forward pass with ONNX's
/// QuantizeLinear numerics (x / s in float32, round half to even, saturation), and the straight-through estimator in
/// the backward pass: the gradient is 1 where x is inside the range and 0 outside, and a learnable scale gets LSQ's
/// gradient. Each call is one fused autograd op (TorchSharp's own fake_quantize ops are obsolete-as-error): its
/// forward computes the output and what the backward needs (a 0/1 mask, and for a learned scale d output / d s) in a
/// few passes outside autograd, and its backward is one product (plus one product and sum for a learned scale),
/// instead of a graph of element-wise ops whose clamp backward runs libtorch's slow bool-mask kernels.
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
        {
            Tensor levels = x / s;
            levels.round_();   // round half to even, as QuantizeLinear
            return ClampLevels(levels, z, quantMin, quantMax, inPlace: true).mul_(s);
        }
    }

    /// <summary>
    /// clamp(levels + z, qmin, qmax) - z for integer-valued levels: one clamp to [qmin - z, qmax - z] (exact for a
    /// scalar zero point within float's integers), or add, clamp and subtract for a per-channel one.
    /// </summary>
    internal static Tensor ClampLevels(Tensor levels, Tensor z, long quantMin, long quantMax, bool inPlace)
    {
        if (ScalarZeroPoint(z, quantMin, quantMax) is float zero)
        {
            float low = quantMin - zero, high = quantMax - zero;   // float32, as the tensor arithmetic would round them
            return inPlace ? levels.clamp_(low, high) : levels.clamp(low, high);
        }
        return (inPlace ? levels : levels.clone()).add_(z).clamp_(quantMin, quantMax).sub_(z);
    }

    /// <summary>
    /// The zero point as one float when one value serves every element (a scalar, or all zeros per channel) and the
    /// levels stay exact integers in float32; else null.
    /// </summary>
    internal static float? ScalarZeroPoint(Tensor z, long quantMin, long quantMax)
    {
        const long exactIntegers = 1L << 24;
        if (z.numel() == 1)
        {
            float value = z.item<float>();
            return value == 0 || (Math.Abs(quantMin) < exactIntegers && Math.Abs(quantMax) < exactIntegers) ? value : null;
        }
        return z.count_nonzero().item<long>() == 0 ? 0f : null;
    }

    /// <summary>The fused ops' common arguments: x, scale, zero point, qmin, qmax.</summary>
    internal static (Tensor X, Tensor Scale, Tensor ZeroPoint, long QuantMin, long QuantMax) Arguments(object[] vars)
        => ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (long)vars[3], (long)vars[4]);

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

// The masks below are float tensors of 0 and 1 made by in-place comparisons and applied by multiplication: libtorch's
// CPU where / masked_fill / clamp-backward kernels over bool masks cost about 20 times an element-wise product.

/// <summary>
/// Fake quantization with a fixed scale and zero point as one autograd op. Forward: the levels times the scale, and
/// a mask of the elements inside the representable real range [(qmin - z) s, (qmax - z) s] (NaN is outside).
/// Backward: the gradient times the mask (clamp's straight-through gradient).
/// </summary>
internal sealed class FixedRangeFakeQuantize : torch.autograd.SingleTensorFunction<FixedRangeFakeQuantize>
{
    public override string Name => nameof(FixedRangeFakeQuantize);

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, s, z, quantMin, quantMax) = FakeQuantize.Arguments(vars);
        using var scope = torch.NewDisposeScope();
        Tensor output = x / s;
        output.round_();   // round half to even, as QuantizeLinear
        FakeQuantize.ClampLevels(output, z, quantMin, quantMax, inPlace: true).mul_(s);
        Tensor inside;
        if (s.numel() == 1 && FakeQuantize.ScalarZeroPoint(z, quantMin, quantMax) is float zero)
        {
            float scale = s.item<float>();
            float low = (quantMin - zero) * scale, high = (quantMax - zero) * scale;   // float32, as (qmin - z) * s
            inside = x.clamp(low, high).eq_(x);
        }
        else
            inside = x.clamp((quantMin - z) * s, (quantMax - z) * s).eq_(x);
        ctx.save_for_backward([inside.MoveToOuterDisposeScope()]);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        Tensor inside = ctx.get_saved_variables()[0];
        return [grad_output * inside, null!, null!, null!, null!];
    }
}

/// <summary>
/// Fake quantization with a learnable scale (and zero point) as one autograd op, LSQ's gradients. Forward saves the
/// mask of elements inside the range (round(x / s) + z within [qmin, qmax]) and each element's d output / d s: the
/// clamped level outside, round(x / s) - x / s inside. Backward: x gets the gradient times the mask, s the sum of
/// gradient times d output / d s (scaled by LSQ's factor), z minus s times the sum of the saturated gradient.
/// </summary>
internal sealed class LearnedRangeFakeQuantize : torch.autograd.SingleTensorFunction<LearnedRangeFakeQuantize>
{
    public override string Name => nameof(LearnedRangeFakeQuantize);

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, s, z, quantMin, quantMax) = FakeQuantize.Arguments(vars);
        using var scope = torch.NewDisposeScope();
        Tensor scaled = x / s;
        Tensor rounded = scaled.round();
        Tensor levels = FakeQuantize.ClampLevels(rounded, z, quantMin, quantMax, inPlace: false);
        Tensor inside = rounded.eq_(levels);
        // d output / d s = levels - inside * x / s in one pass (x / s bounded first, in place, so that Inf * 0 stays 0).
        double bound = Math.Max(Math.Abs((double)quantMin), Math.Abs((double)quantMax)) + z.abs().max().item<float>() + 1;
        Tensor scaleGradient = levels.addcmul(scaled.clamp_(-bound, bound), inside, -1);
        Tensor output = levels.mul_(s);
        // Only tensors made here are saved (a caller's tensor changed in place before backward would fail autograd's
        // version check inside the callback); the scale's value only when the zero point learns.
        Tensor? scaleValue = z.requires_grad ? s.detach().clone().MoveToOuterDisposeScope() : null;
        ctx.save_for_backward([inside.MoveToOuterDisposeScope(), scaleGradient.MoveToOuterDisposeScope(), scaleValue!]);
        ctx.save_data("gradients", (x.requires_grad, s.requires_grad, z.requires_grad));
        ctx.save_data("gradientScale", (double)vars[5]);
        ctx.save_data("scaleShape", s.shape);
        ctx.save_data("zeroPointShape", z.shape);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        Tensor inside = saved[0], scaleGradient = saved[1];
        var (needX, needScale, needZeroPoint) = ((bool, bool, bool))ctx.get_data("gradients");
        // New tensors, never the saved ones in place: a second backward (retain_graph) must find them unchanged, and an
        // exception inside this callback would cross native frames.
        Tensor? dx = needX ? grad_output * inside : null;
        Tensor? ds = needScale ? ScaleGradient(grad_output, scaleGradient, (long[])ctx.get_data("scaleShape")).mul_((double)ctx.get_data("gradientScale")) : null;
        Tensor? dz = needZeroPoint ? FakeQuantize.SumTo(grad_output - grad_output * inside, (long[])ctx.get_data("zeroPointShape")).mul_(saved[2]).neg_() : null;
        return [dx!, ds!, dz!, null!, null!, null!];
    }

    /// <summary>sum(gradient * d output / d s) to the scale's shape: one dot product, without the product's buffer, for a per-tensor scale.</summary>
    private static Tensor ScaleGradient(Tensor gradient, Tensor scaleGradient, long[] shape)
        => shape.Aggregate(1L, (p, d) => p * d) == 1 && gradient.is_contiguous()
            ? gradient.reshape(-1).dot(scaleGradient.reshape(-1)).reshape(shape)
            : FakeQuantize.SumTo(gradient * scaleGradient, shape);
}

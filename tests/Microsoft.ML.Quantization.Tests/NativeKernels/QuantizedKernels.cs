using Microsoft.ML.Quantization.Interop;
using Microsoft.ML.Quantization.NativeEngine;

namespace Microsoft.ML.Quantization.Tests.NativeKernels;

/// <summary>
/// The native INT8 kernels (see docs/native-kernels.md): spans in, spans out, the caller owns all memory.
/// Lengths are checked here (<see cref="ArgumentException"/>); the native library validates the rest and its
/// message arrives in a <see cref="QuantizationNativeException"/>. <c>context</c> = <c>null</c> runs on the CPU.
/// </summary>
internal static unsafe class QuantizedKernels
{
    private static readonly ContextHandle s_noContext = new();

    internal static ContextHandle Ctx(NativeContext? context) => context?.Handle ?? s_noContext;

    internal static void RequireLength(long actual, long required, string name)
    {
        if (actual < required)
            throw new ArgumentException($"{name} holds {actual} elements but {required} are required", name);
    }

    private static int Len(int count, string name) =>
        count > 0 ? count : throw new ArgumentException($"{name} must not be empty", name);

    /// <summary>QuantizeLinear per tensor to uint8: y = saturate(round_half_even(x / scale) + zeroPoint).</summary>
    public static void QuantizeLinear(ReadOnlySpan<float> x, float scale, byte zeroPoint, Span<byte> y, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        RequireLength(y.Length, x.Length, nameof(y));
        int zp = zeroPoint;
        fixed (float* px = x)
        fixed (byte* py = y)
            NativeApi.Check(NativeMethods.qatml_quantize_linear(Ctx(context), px, 1, 1, Len(x.Length, nameof(x)), &scale, &zp,
                (int)NativeMethods.ElementType.UInt8, py));
    }

    /// <summary>QuantizeLinear per channel to int8: x is [outer, scales.Length, inner].</summary>
    public static void QuantizeLinearPerChannel(ReadOnlySpan<float> x, int outer, ReadOnlySpan<float> scales,
        ReadOnlySpan<int> zeroPoints, int inner, Span<sbyte> y, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        long n = (long)outer * scales.Length * inner;
        RequireLength(x.Length, n, nameof(x));
        RequireLength(y.Length, n, nameof(y));
        if (!zeroPoints.IsEmpty) RequireLength(zeroPoints.Length, scales.Length, nameof(zeroPoints));
        fixed (float* px = x)
        fixed (float* ps = scales)
        fixed (int* pz = zeroPoints)
        fixed (sbyte* py = y)
            NativeApi.Check(NativeMethods.qatml_quantize_linear(Ctx(context), px, outer, scales.Length, inner, ps,
                zeroPoints.IsEmpty ? null : pz, (int)NativeMethods.ElementType.Int8, py));
    }

    /// <summary>DequantizeLinear per tensor from uint8: y = (x - zeroPoint) * scale.</summary>
    public static void DequantizeLinear(ReadOnlySpan<byte> x, float scale, byte zeroPoint, Span<float> y, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        RequireLength(y.Length, x.Length, nameof(y));
        int zp = zeroPoint;
        fixed (byte* px = x)
        fixed (float* py = y)
            NativeApi.Check(NativeMethods.qatml_dequantize_linear(Ctx(context), px, (int)NativeMethods.ElementType.UInt8, 1, 1,
                Len(x.Length, nameof(x)), &scale, &zp, py));
    }

    /// <summary>Requantizes int32 accumulators [outer, multipliers.Length, inner] to uint8.</summary>
    public static void Requantize(ReadOnlySpan<int> x, int outer, int inner, ReadOnlySpan<int> bias, ReadOnlySpan<float> multipliers,
        byte outZeroPoint, Span<byte> y, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        long n = (long)outer * multipliers.Length * inner;
        RequireLength(x.Length, n, nameof(x));
        RequireLength(y.Length, n, nameof(y));
        if (!bias.IsEmpty) RequireLength(bias.Length, multipliers.Length, nameof(bias));
        fixed (int* px = x)
        fixed (int* pb = bias)
        fixed (float* pm = multipliers)
        fixed (byte* py = y)
            NativeApi.Check(NativeMethods.qatml_requantize(Ctx(context), px, outer, multipliers.Length, inner, bias.IsEmpty ? null : pb,
                pm, outZeroPoint, (int)NativeMethods.ElementType.UInt8, py));
    }

    /// <summary>Packs signed int4 values ([-8, 7]) two per byte, first element in the low nibble.</summary>
    public static void PackInt4(ReadOnlySpan<sbyte> values, Span<byte> packed)
    {
        NativeApi.EnsureLoaded();
        RequireLength(packed.Length, (values.Length + 1L) / 2, nameof(packed));
        fixed (sbyte* pv = values)
        fixed (byte* pp = packed)
            NativeApi.Check(NativeMethods.qatml_int4_pack(pv, Len(values.Length, nameof(values)), 1, pp));
    }

    /// <summary>
    /// MatMulInteger: c[m, N] = sum_k (a[m, k] - aZeroPoint) * (b[k, n] - b_zp[n]) + bias[n], as int32.
    /// </summary>
    public static void Gemm(ReadOnlySpan<byte> a, int m, byte aZeroPoint, PackedInt8Weights b, Span<int> c,
        ReadOnlySpan<int> bias = default, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        CheckGemm(a.Length, m, b, c.Length, bias.Length, multiplierCount: -1);
        var ep = new NativeMethods.Epilogue { OutType = (int)NativeMethods.ElementType.Int32 };
        fixed (byte* pa = a)
        fixed (int* pc = c)
        fixed (int* pb = bias)
        {
            ep.Bias = bias.IsEmpty ? null : pb;
            NativeApi.Check(NativeMethods.qatml_gemm(Ctx(context), m, pa, (int)NativeMethods.ElementType.UInt8, b.K, aZeroPoint, b.Handle,
                &ep, pc, b.N));
        }
    }

    /// <summary>
    /// QLinearMatMul with the fused epilogue: c = saturate(round_half_even(acc * multipliers[n]) + outZeroPoint), clamped
    /// below at the zero point when <paramref name="relu"/>. multipliers: 1 (per tensor) or N values of s_a*s_b[n]/s_c.
    /// </summary>
    public static void Gemm(ReadOnlySpan<byte> a, int m, byte aZeroPoint, PackedInt8Weights b, ReadOnlySpan<float> multipliers,
        byte outZeroPoint, Span<byte> c, ReadOnlySpan<int> bias = default, bool relu = false, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        CheckGemm(a.Length, m, b, c.Length, bias.Length, multipliers.Length);
        NativeMethods.Epilogue ep = UInt8Epilogue(multipliers.Length, outZeroPoint, relu);
        fixed (byte* pa = a)
        fixed (byte* pc = c)
        fixed (int* pb = bias)
        fixed (float* pm = multipliers)
        {
            ep.Bias = bias.IsEmpty ? null : pb;
            ep.Multipliers = pm;
            NativeApi.Check(NativeMethods.qatml_gemm(Ctx(context), m, pa, (int)NativeMethods.ElementType.UInt8, b.K, aZeroPoint, b.Handle,
                &ep, pc, b.N));
        }
    }

    // Requantization to uint8; ReLU clamps at the output zero point (real 0).
    private static NativeMethods.Epilogue UInt8Epilogue(int multiplierCount, byte outZeroPoint, bool relu) => new()
    {
        OutType = (int)NativeMethods.ElementType.UInt8,
        MultiplierCount = multiplierCount,
        OutZeroPoint = outZeroPoint,
        HasClamp = relu ? 1 : 0,
        ClampMin = outZeroPoint,
        ClampMax = byte.MaxValue,
    };

    private static void CheckGemm(int aLength, int m, PackedInt8Weights b, int cLength, int biasLength, int multiplierCount)
    {
        ArgumentNullException.ThrowIfNull(b);
        if (b.IsConvolution) throw new ArgumentException("the packed weights are convolution weights", nameof(b));
        if (m <= 0) throw new ArgumentOutOfRangeException(nameof(m), m, "M must be positive");
        RequireLength(aLength, m * b.K, "a");
        RequireLength(cLength, m * b.N, "c");
        if (biasLength != 0) RequireLength(biasLength, b.N, "bias");
        if (multiplierCount == 0) throw new ArgumentException("multipliers must hold 1 or N values", "multipliers");
    }

    /// <summary>Output height and width of a convolution or pooling window over <paramref name="geometry"/>.</summary>
    public static (int Height, int Width) OutputSize(in Conv2dGeometry geometry, int kernelH, int kernelW)
    {
        NativeApi.EnsureLoaded();
        var p = geometry.ToNative();
        NativeApi.Check(NativeMethods.qatml_conv2d_output_size(&p, kernelH, kernelW, out long h, out long w));
        return ((int)h, (int)w);
    }

    /// <summary>
    /// QLinearConv over NCHW uint8 input: y[N, M, OH, OW] = saturate(round_half_even(acc * multipliers[m]) + outZeroPoint),
    /// acc = sum (x - xZeroPoint) * (w - w_zp[m]) + bias[m]; padding reads the input zero point.
    /// </summary>
    public static void Conv2d(ReadOnlySpan<byte> x, in Conv2dGeometry geometry, byte xZeroPoint, PackedInt8Weights w,
        ReadOnlySpan<float> multipliers, byte outZeroPoint, Span<byte> y, ReadOnlySpan<int> bias = default, bool relu = false,
        NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        ArgumentNullException.ThrowIfNull(w);
        if (!w.IsConvolution) throw new ArgumentException("the packed weights are GEMM weights", nameof(w));
        var p = geometry.ToNative();
        RequireLength(x.Length, p.Batch * p.Channels * p.Height * p.Width, nameof(x));
        var (oh, ow) = OutputSize(geometry, w.KernelH, w.KernelW);
        RequireLength(y.Length, p.Batch * w.N * oh * ow, nameof(y));
        if (!bias.IsEmpty) RequireLength(bias.Length, w.N, nameof(bias));
        if (multipliers.IsEmpty) throw new ArgumentException("multipliers must hold 1 or M values", nameof(multipliers));
        NativeMethods.Epilogue ep = UInt8Epilogue(multipliers.Length, outZeroPoint, relu);
        fixed (byte* px = x)
        fixed (byte* py = y)
        fixed (int* pb = bias)
        fixed (float* pm = multipliers)
        {
            ep.Bias = bias.IsEmpty ? null : pb;
            ep.Multipliers = pm;
            NativeApi.Check(NativeMethods.qatml_conv2d(Ctx(context), &p, px, (int)NativeMethods.ElementType.UInt8, xZeroPoint, w.Handle,
                &ep, py));
        }
    }

    /// <summary>QLinearAdd of two uint8 tensors of one length.</summary>
    public static void Add(ReadOnlySpan<byte> a, float aScale, byte aZeroPoint, ReadOnlySpan<byte> b, float bScale, byte bZeroPoint,
        float yScale, byte yZeroPoint, Span<byte> y, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        if (a.Length != b.Length) throw new ArgumentException("a and b must have the same length", nameof(b));
        RequireLength(y.Length, a.Length, nameof(y));
        fixed (byte* pa = a)
        fixed (byte* pb = b)
        fixed (byte* py = y)
            NativeApi.Check(NativeMethods.qatml_add(Ctx(context), pa, aScale, aZeroPoint, pb, bScale, bZeroPoint,
                (int)NativeMethods.ElementType.UInt8, Len(a.Length, nameof(a)), yScale, yZeroPoint, py));
    }

    /// <summary>MaxPool over NCHW uint8.</summary>
    public static void MaxPool(ReadOnlySpan<byte> x, in Conv2dGeometry geometry, int kernelH, int kernelW, Span<byte> y,
        NativeContext? context = null)
    {
        var (oh, ow) = OutputSize(geometry, kernelH, kernelW);
        var p = geometry.ToNative();
        RequireLength(x.Length, p.Batch * p.Channels * p.Height * p.Width, nameof(x));
        RequireLength(y.Length, p.Batch * p.Channels * (long)oh * ow, nameof(y));
        fixed (byte* px = x)
        fixed (byte* py = y)
            NativeApi.Check(NativeMethods.qatml_pool2d(Ctx(context), 1, &p, kernelH, kernelW, 0, px, (int)NativeMethods.ElementType.UInt8,
                1f, 0, 1f, 0, py));
    }

    /// <summary>QLinearGlobalAveragePool over NCHW uint8: y[n, c].</summary>
    public static void GlobalAveragePool(ReadOnlySpan<byte> x, int batch, int channels, int spatial, float xScale, byte xZeroPoint,
        float yScale, byte yZeroPoint, Span<byte> y, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        RequireLength(x.Length, (long)batch * channels * spatial, nameof(x));
        RequireLength(y.Length, (long)batch * channels, nameof(y));
        fixed (byte* px = x)
        fixed (byte* py = y)
            NativeApi.Check(NativeMethods.qatml_global_average_pool(Ctx(context), px, (int)NativeMethods.ElementType.UInt8, batch, channels,
                spatial, xScale, xZeroPoint, yScale, yZeroPoint, py));
    }
}

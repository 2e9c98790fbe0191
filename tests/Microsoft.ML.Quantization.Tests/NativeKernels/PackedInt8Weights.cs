using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Interop;
using Microsoft.ML.Quantization.NativeEngine;

namespace Microsoft.ML.Quantization.Tests.NativeKernels;

/// <summary>
/// Int8 (or int4) weights packed once by the native library for its GEMM or convolution kernels, in the
/// layout of the ISA active when they were packed. Immutable; may be shared by concurrent calls.
/// </summary>
internal sealed class PackedInt8Weights : IDisposable
{
    private readonly PackedWeightsHandle _handle;

    private PackedInt8Weights(PackedWeightsHandle handle, bool isConvolution, int kernelH, int kernelW)
    {
        _handle = handle;
        IsConvolution = isConvolution;
        KernelH = kernelH;
        KernelW = kernelW;
        NativeApi.Check(NativeMethods.qatml_packed_weights_info(_handle, out int isa, out long k, out long n, out long bytes));
        Isa = (CpuIsa)isa;
        K = k;
        N = n;
        Bytes = bytes;
    }

    /// <summary>The ISA whose layout the weights use.</summary>
    public CpuIsa Isa { get; }

    /// <summary>Reduction length (GEMM K; convolution C/groups * kH * kW).</summary>
    public long K { get; }

    /// <summary>Output channels (GEMM N; convolution M).</summary>
    public long N { get; }

    /// <summary>Native memory the packed weights occupy.</summary>
    public long Bytes { get; }

    /// <summary>Convolution kernel height (0 for GEMM weights).</summary>
    public int KernelH { get; }

    /// <summary>Convolution kernel width (0 for GEMM weights).</summary>
    public int KernelW { get; }

    /// <summary>Whether these are convolution weights (else GEMM B).</summary>
    public bool IsConvolution { get; }

    internal PackedWeightsHandle Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
            return _handle;
        }
    }

    /// <summary>Packs GEMM weights B, int8, row-major [K, N] (or [N, K] when <paramref name="transposed"/>).</summary>
    /// <param name="b">The weights.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="n">Output columns.</param>
    /// <param name="transposed">B is [N, K] (ONNX Gemm transB = 1).</param>
    /// <param name="zeroPoints">Empty (symmetric) or N per-column zero points (MatMulInteger's b_zero_point).</param>
    /// <param name="context">Device context; <c>null</c> = CPU.</param>
    public static unsafe PackedInt8Weights ForGemm(ReadOnlySpan<sbyte> b, int k, int n, bool transposed = false,
        ReadOnlySpan<int> zeroPoints = default, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        QuantizedKernels.RequireLength(b.Length, (long)k * n, nameof(b));
        if (!zeroPoints.IsEmpty)
            QuantizedKernels.RequireLength(zeroPoints.Length, n, nameof(zeroPoints));
        PackedWeightsHandle handle;
        NativeStatus status;
        fixed (sbyte* pb = b)
        fixed (int* pz = zeroPoints)
            status = NativeMethods.qatml_gemm_pack_b(QuantizedKernels.Ctx(context), pb, (int)NativeMethods.ElementType.Int8, k, n,
                transposed ? 1 : 0, zeroPoints.IsEmpty ? null : pz, out handle);
        return Wrap(handle, status, isConvolution: false, 0, 0);
    }

    /// <summary>Packs convolution weights, int8 [M, C/groups, kH, kW] (ONNX layout).</summary>
    /// <param name="w">The weights.</param>
    /// <param name="outChannels">M.</param>
    /// <param name="inChannelsPerGroup">C / groups.</param>
    /// <param name="kernelH">Kernel height.</param>
    /// <param name="kernelW">Kernel width.</param>
    /// <param name="groups">Groups (C for depthwise).</param>
    /// <param name="zeroPoints">Empty (symmetric) or M per-output-channel zero points (ConvInteger's w_zero_point).</param>
    /// <param name="context">Device context; <c>null</c> = CPU.</param>
    public static unsafe PackedInt8Weights ForConvolution(ReadOnlySpan<sbyte> w, int outChannels, int inChannelsPerGroup,
        int kernelH, int kernelW, int groups = 1, ReadOnlySpan<int> zeroPoints = default, NativeContext? context = null)
    {
        NativeApi.EnsureLoaded();
        QuantizedKernels.RequireLength(w.Length, (long)outChannels * inChannelsPerGroup * kernelH * kernelW, nameof(w));
        if (!zeroPoints.IsEmpty)
            QuantizedKernels.RequireLength(zeroPoints.Length, outChannels, nameof(zeroPoints));
        PackedWeightsHandle handle;
        NativeStatus status;
        fixed (sbyte* pw = w)
        fixed (int* pz = zeroPoints)
            status = NativeMethods.qatml_conv_pack_weights(QuantizedKernels.Ctx(context), pw, (int)NativeMethods.ElementType.Int8,
                outChannels, inChannelsPerGroup, kernelH, kernelW, groups, zeroPoints.IsEmpty ? null : pz, out handle);
        return Wrap(handle, status, isConvolution: true, kernelH, kernelW);
    }

    private static PackedInt8Weights Wrap(PackedWeightsHandle handle, NativeStatus status, bool isConvolution, int kernelH, int kernelW)
    {
        if (status != NativeStatus.Ok)
        {
            handle.Dispose();
            NativeApi.Check(status);
        }
        return new PackedInt8Weights(handle, isConvolution, kernelH, kernelW);
    }

    /// <summary>Releases the native memory.</summary>
    public void Dispose() => _handle.Dispose();
}

using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>P/Invoke declarations of the kernel ABI (src/Native/include/qatml/qatml_kernels.h), one to one.</summary>
internal static unsafe partial class NativeMethods
{
    /// <summary>qatml_dtype.</summary>
    internal enum ElementType
    {
        UInt8 = 1,
        Int8 = 2,
        Int32 = 3,
        Float32 = 4,
        UInt4 = 5,
        Int4 = 6,
    }

    /// <summary>qatml_epilogue (pointers are the caller's pinned memory).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Epilogue
    {
        public int OutType;
        public int* Bias;
        public float* Multipliers;
        public long MultiplierCount;
        public int OutZeroPoint;
        public int HasClamp;
        public int ClampMin;
        public int ClampMax;
    }

    /// <summary>qatml_conv2d_params.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Conv2dParams
    {
        public long Batch, Channels, Height, Width;
        public long StrideH, StrideW;
        public long PadTop, PadLeft, PadBottom, PadRight;
        public long DilationH, DilationW;
    }

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_quantize_linear(ContextHandle ctx, float* x, long outer, long channels, long inner,
        float* scales, int* zeroPoints, int outType, void* y);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_dequantize_linear(ContextHandle ctx, void* x, int inType, long outer, long channels,
        long inner, float* scales, int* zeroPoints, float* y);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_requantize(ContextHandle ctx, int* x, long outer, long channels, long inner,
        int* bias, float* multipliers, int outZeroPoint, int outType, void* y);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_int4_pack(sbyte* src, long count, int isSigned, byte* dst);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_int4_unpack(byte* src, long count, int isSigned, sbyte* dst);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_gemm_pack_b(ContextHandle ctx, void* b, int bType, long k, long n, int transB,
        int* bZeroPoints, out PackedWeightsHandle packed);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_gemm(ContextHandle ctx, long m, void* a, int aType, long lda, int aZeroPoint,
        PackedWeightsHandle b, Epilogue* epilogue, void* c, long ldc);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_conv_pack_weights(ContextHandle ctx, void* w, int wType, long outChannels,
        long inChannelsPerGroup, long kernelH, long kernelW, long groups, int* wZeroPoints, out PackedWeightsHandle packed);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_conv2d_output_size(Conv2dParams* p, long kernelH, long kernelW, out long outH,
        out long outW);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_conv2d(ContextHandle ctx, Conv2dParams* p, void* x, int xType, int xZeroPoint,
        PackedWeightsHandle w, Epilogue* epilogue, void* y);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_packed_weights_destroy(IntPtr packed);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_packed_weights_info(PackedWeightsHandle packed, out int isa, out long k, out long n,
        out long bytes);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_pool2d(ContextHandle ctx, int kind, Conv2dParams* p, long kernelH, long kernelW,
        int countIncludePad, void* x, int type, float xScale, int xZeroPoint, float yScale, int yZeroPoint, void* y);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_global_average_pool(ContextHandle ctx, void* x, int type, long batch, long channels,
        long spatial, float xScale, int xZeroPoint, float yScale, int yZeroPoint, void* y);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_add(ContextHandle ctx, void* a, float aScale, int aZeroPoint, void* b, float bScale,
        int bZeroPoint, int type, long count, float yScale, int yZeroPoint, void* y);
}

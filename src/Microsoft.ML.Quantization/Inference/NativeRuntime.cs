using System.Runtime.InteropServices;
using Microsoft.ML.Quantization.Interop;

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Facts about the loaded native library (libqatml_native) and control over the CPU kernels' dispatch.
/// </summary>
/// <remarks>
/// The kernels dispatch to the highest ISA the CPU has, lowered by a cap: <see cref="SetMaxIsa"/> in
/// this process, else the environment variable <c>QATML_MAX_ISA</c> (scalar, avx2, avx_vnni,
/// avx512_vnni), read by the native library on each query. A cap never raises the ISA.
/// </remarks>
public static class NativeRuntime
{
    /// <summary>The native library's version ("major.minor.patch").</summary>
    public static string LibraryVersion
    {
        get
        {
            NativeApi.EnsureLoaded();
            return Marshal.PtrToStringUTF8(NativeMethods.qatml_version_string()) ?? "";
        }
    }

    /// <summary>The ABI version of the loaded library (checked against the managed side's at load).</summary>
    internal static int AbiVersion
    {
        get
        {
            NativeApi.EnsureLoaded();
            return NativeMethods.qatml_abi_version();
        }
    }

    /// <summary>CPU features present and enabled by the OS.</summary>
    public static CpuFeatures Features
    {
        get
        {
            NativeApi.EnsureLoaded();
            NativeApi.Check(NativeMethods.qatml_cpu_features(out uint features));
            return (CpuFeatures)features;
        }
    }

    /// <summary>The highest ISA this CPU supports, ignoring any cap.</summary>
    public static CpuIsa DetectedIsa
    {
        get
        {
            NativeApi.EnsureLoaded();
            NativeApi.Check(NativeMethods.qatml_cpu_detected_isa(out int isa));
            return (CpuIsa)isa;
        }
    }

    /// <summary>The ISA the kernels dispatch to now (detected ISA lowered by the cap).</summary>
    /// <exception cref="QuantizationNativeException">QATML_MAX_ISA holds an unknown value.</exception>
    public static CpuIsa ActiveIsa
    {
        get
        {
            NativeApi.EnsureLoaded();
            NativeApi.Check(NativeMethods.qatml_cpu_active_isa(out int isa));
            return (CpuIsa)isa;
        }
    }

    /// <summary>Caps the ISA for this process (tests, odd hardware); <c>null</c> removes the cap so QATML_MAX_ISA applies again.</summary>
    public static void SetMaxIsa(CpuIsa? maxIsa)
    {
        NativeApi.EnsureLoaded();
        NativeApi.Check(NativeMethods.qatml_cpu_set_max_isa(maxIsa.HasValue ? (int)maxIsa.Value : -1));
    }

    // CUDA discovery stays internal until the CUDA path is verified on a GPU (docs/cuda.md); ComputeDevice.Cuda is the public
    // option, and it falls back to the CPU with a warning.

    /// <summary>Whether this build of the native library contains CUDA kernels.</summary>
    internal static bool CudaCompiled
    {
        get
        {
            NativeApi.EnsureLoaded();
            return NativeMethods.qatml_cuda_compiled() != 0;
        }
    }

    /// <summary>Number of CUDA devices the native library can use (0 without CUDA support or a GPU).</summary>
    internal static int CudaDeviceCount
    {
        get
        {
            NativeApi.EnsureLoaded();
            NativeApi.Check(NativeMethods.qatml_cuda_device_count(out int count));
            return count;
        }
    }
}

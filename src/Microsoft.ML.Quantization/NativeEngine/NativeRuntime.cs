using System.Runtime.InteropServices;
using Microsoft.ML.Quantization.Interop;

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Facts about the loaded native library (libqatml_native) and control over the CPU kernels' dispatch.
/// </summary>
/// <remarks>
/// Each kernel path (<see cref="CpuIsa"/>) executes a set of CPU features (<see cref="RequiredFeatures"/>)
/// and runs only on a CPU that has all of them; the paths are not a total order of CPUs (Zen 4 has
/// AVX-512 VNNI without AVX-VNNI). The kernels dispatch to the best path the CPU supports at or below a
/// cap: <see cref="SetMaxIsa"/> in this process, else the environment variable <c>QATML_MAX_ISA</c>
/// (scalar, avx2, avx_vnni, avx512_vnni), read by the native library on each query. A cap never
/// selects a path the CPU lacks: <see cref="CpuIsa.AvxVnni"/> on a Zen 4 gives <see cref="CpuIsa.Avx2"/>.
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

    /// <summary>The CPU features kernel path <paramref name="isa"/> executes; it runs only where <see cref="Features"/> has all of them.</summary>
    /// <exception cref="QuantizationNativeException"><paramref name="isa"/> is not a defined path.</exception>
    public static CpuFeatures RequiredFeatures(CpuIsa isa)
    {
        NativeApi.EnsureLoaded();
        NativeApi.Check(NativeMethods.qatml_isa_required_features((int)isa, out uint features));
        return (CpuFeatures)features;
    }

    /// <summary>Whether this CPU (and OS) can run kernel path <paramref name="isa"/>.</summary>
    public static bool IsSupported(CpuIsa isa)
    {
        CpuFeatures required = RequiredFeatures(isa);
        return (Features & required) == required;
    }

    /// <summary>
    /// For tests only: the native library acts as if the CPU had only the features in <paramref name="keep"/>
    /// (a Zen 4 on a Zen 5: everything but <see cref="CpuFeatures.AvxVnni"/>); <c>null</c> removes the mask.
    /// The environment variable <c>QATML_CPU_FEATURE_MASK</c> applies on top. Weights packed before keep their path.
    /// </summary>
    internal static void SetFeatureMask(CpuFeatures? keep)
    {
        NativeApi.EnsureLoaded();
        NativeApi.Check(NativeMethods.qatml_cpu_set_feature_mask(keep.HasValue ? (uint)keep.Value : uint.MaxValue));
    }

    /// <summary>The feature mask in effect (QATML_CPU_FEATURE_MASK and <see cref="SetFeatureMask"/>); all bits when none.</summary>
    internal static CpuFeatures FeatureMask
    {
        get
        {
            NativeApi.EnsureLoaded();
            NativeApi.Check(NativeMethods.qatml_cpu_get_feature_mask(out uint mask));
            return (CpuFeatures)mask;
        }
    }

    /// <summary>The best kernel path this CPU supports, ignoring any cap.</summary>
    public static CpuIsa DetectedIsa
    {
        get
        {
            NativeApi.EnsureLoaded();
            NativeApi.Check(NativeMethods.qatml_cpu_detected_isa(out int isa));
            return (CpuIsa)isa;
        }
    }

    /// <summary>The path the kernels dispatch to now: the best one the CPU supports at or below the cap.</summary>
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

    /// <summary>Caps the kernel path for this process (tests, odd hardware); <c>null</c> removes the cap so QATML_MAX_ISA applies again.</summary>
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

using System.Runtime.InteropServices;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Interop;
using Microsoft.ML.Quantization.NativeEngine;

namespace Microsoft.ML.Quantization.Tests;

// The ISA cap is process-wide state: these tests run in one collection, never beside each other.
[Collection(nameof(NativeIsaState))]
public sealed partial class NativeInteropTests
{
    [Fact]
    public void LoadsTheNativeLibraryAndReportsItsVersion()
    {
        Assert.Equal(NativeMethods.ExpectedAbiVersion, NativeRuntime.AbiVersion);
        Assert.Matches(@"^\d+\.\d+\.\d+$", NativeRuntime.LibraryVersion);
    }

    [Fact]
    public void DetectedIsaIsTheBestPathTheFeaturesSupport()
    {
        CpuIsa detected = NativeRuntime.DetectedIsa;
        CpuFeatures features = NativeRuntime.Features;
        Assert.True(NativeRuntime.IsSupported(detected));
        Assert.Equal(NativeRuntime.RequiredFeatures(detected), features & NativeRuntime.RequiredFeatures(detected));
        for (CpuIsa better = detected + 1; better <= CpuIsa.Avx512Vnni; better++)
            Assert.False(NativeRuntime.IsSupported(better));
        Assert.Equal(CpuFeatures.Avx2 | CpuFeatures.Fma | CpuFeatures.AvxVnni, NativeRuntime.RequiredFeatures(CpuIsa.AvxVnni));
        Assert.Equal(CpuFeatures.None, NativeRuntime.RequiredFeatures(CpuIsa.AvxVnni) & CpuFeatures.Avx512F);
        Assert.Equal(CpuFeatures.None, NativeRuntime.RequiredFeatures(CpuIsa.Avx512Vnni) & CpuFeatures.AvxVnni);
        // .NET's own detection must agree with the native one on what both can see (and no test mask removes).
        CpuFeatures mask = NativeRuntime.FeatureMask;
        if (mask.HasFlag(CpuFeatures.Avx2))
            Assert.Equal(System.Runtime.Intrinsics.X86.Avx2.IsSupported, features.HasFlag(CpuFeatures.Avx2));
        if (mask.HasFlag(CpuFeatures.Avx512F))
            Assert.Equal(System.Runtime.Intrinsics.X86.Avx512F.IsSupported, features.HasFlag(CpuFeatures.Avx512F));
        if (mask.HasFlag(CpuFeatures.AvxVnni))
            Assert.Equal(System.Runtime.Intrinsics.X86.AvxVnni.IsSupported, features.HasFlag(CpuFeatures.AvxVnni));
    }

    [Fact]
    public void ProgrammaticCapChangesTheActiveIsa()
    {
        CpuIsa detected = NativeRuntime.DetectedIsa;
        try
        {
            NativeRuntime.SetMaxIsa(CpuIsa.Scalar);
            Assert.Equal(CpuIsa.Scalar, NativeRuntime.ActiveIsa);
            NativeRuntime.SetMaxIsa(CpuIsa.Avx2);
            Assert.Equal(NativeRuntime.IsSupported(CpuIsa.Avx2) ? CpuIsa.Avx2 : CpuIsa.Scalar, NativeRuntime.ActiveIsa);
            NativeRuntime.SetMaxIsa(null);
            Assert.Equal(detected, NativeRuntime.ActiveIsa);
        }
        finally
        {
            NativeRuntime.SetMaxIsa(null);
        }
    }

    [Fact]
    public void EnvironmentVariableCapChangesTheActiveIsa()
    {
        // .NET keeps its own copy of the environment; the native library reads the C one, so set that.
        CpuIsa detected = NativeRuntime.DetectedIsa;
        try
        {
            Assert.Equal(0, LibC.setenv("QATML_MAX_ISA", "scalar", 1));
            Assert.Equal(CpuIsa.Scalar, NativeRuntime.ActiveIsa);
            Assert.Equal(0, LibC.setenv("QATML_MAX_ISA", "avx2", 1));
            Assert.Equal(NativeRuntime.IsSupported(CpuIsa.Avx2) ? CpuIsa.Avx2 : CpuIsa.Scalar, NativeRuntime.ActiveIsa);

            Assert.Equal(0, LibC.setenv("QATML_MAX_ISA", "mmx", 1));
            var error = Assert.Throws<QuantizationNativeException>(() => NativeRuntime.ActiveIsa);
            Assert.Equal(NativeStatus.InvalidArgument, error.Status);
            Assert.Contains("QATML_MAX_ISA='mmx'", error.Message);
        }
        finally
        {
            LibC.unsetenv("QATML_MAX_ISA");
        }
        Assert.Equal(detected, NativeRuntime.ActiveIsa);
    }

    [Fact]
    public void InvalidCapValueIsAManagedExceptionWithTheNativeMessage()
    {
        var error = Assert.Throws<QuantizationNativeException>(() => NativeRuntime.SetMaxIsa((CpuIsa)9));
        Assert.Equal(NativeStatus.InvalidArgument, error.Status);
        Assert.Contains("isa 9", error.Message);
    }

    [Fact]
    public void CpuContextRoundTripsItsSettings()
    {
        using var context = new NativeContext(ComputeDevice.Cpu, numThreads: 2);
        Assert.Equal(ComputeDevice.Cpu, context.Device);
        Assert.Equal(2, context.NumThreads);
    }

    [Fact]
    public void MissingGpuIsAClearErrorNotACrash()
    {
        int gpus = NativeRuntime.CudaDeviceCount;
        var error = Assert.Throws<QuantizationNativeException>(() => new NativeContext(ComputeDevice.Cuda(gpus)));
        Assert.Equal(NativeStatus.DeviceUnavailable, error.Status);
        Assert.Contains("CUDA device", error.Message);
    }

    [Fact]
    public void BadArgumentIsAManagedException()
    {
        var error = Assert.Throws<QuantizationNativeException>(() => new NativeContext(ComputeDevice.Cpu, numThreads: -3));
        Assert.Equal(NativeStatus.InvalidArgument, error.Status);
        Assert.Contains("num_threads -3", error.Message);
    }

    [Fact]
    public void UseAfterDisposeIsCaughtBeforeTheNativeCall()
    {
        var context = new NativeContext(ComputeDevice.Cpu);
        context.Dispose();
        Assert.Throws<ObjectDisposedException>(() => context.NumThreads);
    }

    [Fact]
    public void ForgedOrStaleHandlesAreRejectedByTheNativeSide()
    {
        // A pointer the library never handed out, and one it has already released.
        IntPtr forged = Marshal.AllocHGlobal(64);
        try
        {
            NativeStatus status = NativeMethods.qatml_context_get_num_threads_raw(forged, out _);
            Assert.Equal(NativeStatus.InvalidHandle, status);
            var error = Assert.Throws<QuantizationNativeException>(() => NativeApi.Check(status));
            Assert.Contains("not a live handle", error.Message);
        }
        finally
        {
            Marshal.FreeHGlobal(forged);
        }

        var context = new NativeContext(ComputeDevice.Cpu);
        IntPtr raw = context.Handle.DangerousGetHandle();
        context.Dispose();
        Assert.Equal(NativeStatus.InvalidHandle, NativeMethods.qatml_context_get_num_threads_raw(raw, out _));
        Assert.Equal(NativeStatus.InvalidHandle, NativeMethods.qatml_context_destroy(raw));
    }

    private static partial class LibC
    {
        [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
        internal static partial int setenv(string name, string value, int overwrite);

        [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
        internal static partial int unsetenv(string name);
    }
}

[CollectionDefinition(nameof(NativeIsaState), DisableParallelization = true)]
public sealed class NativeIsaState;

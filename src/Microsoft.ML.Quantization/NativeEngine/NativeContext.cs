using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Interop;

namespace Microsoft.ML.Quantization.NativeEngine;

/// <summary>A native execution context: the device and thread count that native work is bound to.</summary>
internal sealed class NativeContext : IDisposable
{
    private readonly ContextHandle _handle;

    /// <param name="device">Where work runs.</param>
    /// <param name="numThreads">Threads for CPU kernels; 0 = the library default.</param>
    /// <exception cref="QuantizationNativeException">The device does not exist here, or an argument is out of range.</exception>
    public NativeContext(ComputeDevice device, int numThreads = 0)
    {
        NativeApi.EnsureLoaded();
        var d = new NativeMethods.Device { Kind = (int)device.Kind, Index = device.Index };
        NativeStatus status = NativeMethods.qatml_context_create(in d, numThreads, out _handle);
        if (status != NativeStatus.Ok)
        {
            _handle.Dispose();
            NativeApi.Check(status);
        }
    }

    internal ContextHandle Handle => _handle;

    public ComputeDevice Device
    {
        get
        {
            NativeApi.Check(NativeMethods.qatml_context_get_device(_handle, out NativeMethods.Device d));
            return new ComputeDevice((ComputeDeviceKind)d.Kind, d.Index);
        }
    }

    public int NumThreads
    {
        get
        {
            NativeApi.Check(NativeMethods.qatml_context_get_num_threads(_handle, out int n));
            return n;
        }
    }

    public void Dispose() => _handle.Dispose();
}

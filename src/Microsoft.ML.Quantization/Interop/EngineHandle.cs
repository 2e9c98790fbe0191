using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>Owns a native loaded engine plan (qatml_engine); released exactly once, even without Dispose.</summary>
internal sealed class EngineHandle : SafeHandle
{
    public EngineHandle() : base(IntPtr.Zero, ownsHandle: true) { }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => NativeMethods.qatml_engine_destroy(handle) == NativeStatus.Ok;
}

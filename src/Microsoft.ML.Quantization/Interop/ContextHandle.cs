using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>Owns a native qatml_context; released exactly once, even when the user forgets Dispose.</summary>
internal sealed class ContextHandle : SafeHandle
{
    public ContextHandle() : base(IntPtr.Zero, ownsHandle: true) { }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => NativeMethods.qatml_context_destroy(handle) == NativeStatus.Ok;
}

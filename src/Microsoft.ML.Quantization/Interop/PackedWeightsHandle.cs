using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>Owns native packed int8 weights (qatml_packed_weights); released exactly once, even without Dispose.</summary>
internal sealed class PackedWeightsHandle : SafeHandle
{
    public PackedWeightsHandle() : base(IntPtr.Zero, ownsHandle: true) { }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => NativeMethods.qatml_packed_weights_destroy(handle) == NativeStatus.Ok;
}

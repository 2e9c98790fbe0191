namespace Microsoft.ML.Quantization;

/// <summary>Status codes of the native C ABI (qatml_status in src/Native/include/qatml/qatml.h).</summary>
public enum NativeStatus
{
    /// <summary>Success.</summary>
    Ok = 0,
    /// <summary>A NULL pointer, a size out of range, an overflow or a bad enum value.</summary>
    InvalidArgument = 1,
    /// <summary>A handle that is NULL, already destroyed, or of another kind.</summary>
    InvalidHandle = 2,
    /// <summary>The native allocator failed.</summary>
    OutOfMemory = 3,
    /// <summary>A valid request this build or this CPU cannot serve.</summary>
    Unsupported = 4,
    /// <summary>The requested device does not exist on this machine or in this build.</summary>
    DeviceUnavailable = 5,
    /// <summary>A bug in the native library; the message says where.</summary>
    Internal = 6,
}

/// <summary>A native call failed; <see cref="Exception.Message"/> carries the native library's own message.</summary>
public sealed class QuantizationNativeException : Exception
{
    internal QuantizationNativeException(NativeStatus status, string message)
        : base($"{message} [qatml_native status {status}]")
    {
        Status = status;
    }

    /// <summary>The native status code.</summary>
    public NativeStatus Status { get; }
}

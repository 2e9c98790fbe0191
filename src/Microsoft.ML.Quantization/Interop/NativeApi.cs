using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>Turns native statuses into exceptions and checks once that the loaded library speaks our ABI.</summary>
internal static class NativeApi
{
    private static readonly Lazy<bool> s_compatible = new(CheckAbi, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Loads the native library (first call) and verifies its ABI version.</summary>
    internal static void EnsureLoaded() => _ = s_compatible.Value;

    /// <summary>Like <see cref="EnsureLoaded"/>, but a library missing for this platform is a result, not an exception.</summary>
    internal static bool TryEnsureLoaded([NotNullWhen(false)] out string? missing)
    {
        try
        {
            EnsureLoaded();
            missing = null;
            return true;
        }
        catch (DllNotFoundException e)
        {
            missing = e.Message;
            return false;
        }
    }

    /// <summary>Throws <see cref="QuantizationNativeException"/> with the native message for any non-OK status.</summary>
    internal static void Check(NativeStatus status)
    {
        if (status != NativeStatus.Ok)
            throw new QuantizationNativeException(status, LastError());
    }

    internal static string LastError() => Marshal.PtrToStringUTF8(NativeMethods.qatml_last_error()) ?? "";

    private static bool CheckAbi()
    {
        int abi = NativeMethods.qatml_abi_version();
        if (abi != NativeMethods.ExpectedAbiVersion)
            throw new QuantizationNativeException(NativeStatus.Unsupported,
                $"qatml_native reports ABI version {abi}, but Microsoft.ML.Quantization was built for version {NativeMethods.ExpectedAbiVersion}; rebuild the solution so both match");
        return true;
    }
}

using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// Loads TorchSharp's native side once and, when it fails, says why in words a user can act on.
/// TorchSharp's own message ("Failed to load native component") hides the loader's reason; the
/// common one here is a libstdc++ without GLIBCXX_3.4.32 (Debian 12, Ubuntu 22.04).
/// </summary>
internal static class TorchSharpRuntime
{
    private static readonly Lazy<Exception?> s_failure = new(TryInitialize, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Throws <see cref="InvalidOperationException"/> with the loader's reason if libtorch cannot be used.</summary>
    internal static void EnsureLoaded()
    {
        if (s_failure.Value is { } failure)
            throw failure;
    }

    private static readonly Lazy<nint> s_mallocTrim = new(() =>
        OperatingSystem.IsLinux() && NativeLibrary.TryLoad("libc.so.6", out nint libc) && NativeLibrary.TryGetExport(libc, "malloc_trim", out nint trim) ? trim : 0);

    /// <summary>
    /// Hands the C heap's free pages back to the OS (glibc's malloc_trim; nothing elsewhere). libtorch's tensors of
    /// megabytes freed and reallocated every step come from glibc's heaps once its adaptive mmap threshold has risen
    /// past their size, and those heaps keep the freed pages: a loop over 2.4M-weight tensors grew by about 30 MB a step.
    /// </summary>
    internal static unsafe void ReleaseFreedMemory()
    {
        nint trim = s_mallocTrim.Value;
        if (trim != 0)
            ((delegate* unmanaged<nuint, int>)trim)(0);
    }

    private static Exception? TryInitialize()
    {
        try
        {
            TorchSharp.torch.InitializeDeviceType(TorchSharp.DeviceType.CPU);
            return null;
        }
        catch (Exception e)
        {
            string reason = LoaderReason() ?? e.Message;
            string advice = reason.Contains("GLIBCXX", StringComparison.Ordinal)
                ? " This host's libstdc++ is older than the one TorchSharp was built against; build the app with QatMl's "
                  + "build/TorchSharpCompat.targets (it patches the copy in the output folder) or see DEVELOPERS.md."
                : " Reference a libtorch package in the app (TorchSharp-cpu, or a CUDA build).";
            return new InvalidOperationException($"TorchSharp's native library could not be loaded: {reason}.{advice}", e);
        }
    }

    // Asks the OS loader directly for the wrapper TorchSharp failed to load, to get its own message.
    private static string? LoaderReason()
    {
        string file = OperatingSystem.IsWindows() ? "LibTorchSharp.dll"
            : OperatingSystem.IsMacOS() ? "libLibTorchSharp.dylib" : "libLibTorchSharp.so";
        string rid = (OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux")
            + "-" + RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        foreach (string candidate in new[]
        {
            Path.Combine(AppContext.BaseDirectory, "runtimes", rid, "native", file),
            Path.Combine(AppContext.BaseDirectory, file),
        })
        {
            if (!File.Exists(candidate))
                continue;
            try
            {
                NativeLibrary.Free(NativeLibrary.Load(candidate));
            }
            catch (DllNotFoundException e)
            {
                return e.Message;
            }
        }
        return null;
    }
}

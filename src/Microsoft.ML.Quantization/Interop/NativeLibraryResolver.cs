using System.Reflection;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>
/// The one place that finds libqatml_native: an explicit path in QATML_NATIVE_PATH, then the
/// runtimes/&lt;rid&gt;/native folder beside the app and beside this assembly (where the build and NuGet
/// put it), then the OS search path. A miss names every place that was tried.
/// </summary>
internal static class NativeLibraryResolver
{
    internal const string LibraryName = "qatml_native";
    private static int s_registered;

    internal static void Register()
    {
        if (Interlocked.Exchange(ref s_registered, 1) == 0)
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName != LibraryName)
            return IntPtr.Zero;

        var tried = new List<string>();
        string? explicitPath = Environment.GetEnvironmentVariable("QATML_NATIVE_PATH");
        if (!string.IsNullOrEmpty(explicitPath))
        {
            if (NativeLibrary.TryLoad(explicitPath, out IntPtr handle))
                return handle;
            throw new DllNotFoundException($"QATML_NATIVE_PATH='{explicitPath}' does not name a loadable qatml_native library.");
        }

        string fileName = OperatingSystem.IsWindows() ? "qatml_native.dll"
            : OperatingSystem.IsMacOS() ? "libqatml_native.dylib" : "libqatml_native.so";
        string rid = RuntimeInformation.RuntimeIdentifier;
        string portableRid = (OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux")
            + "-" + RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        var folders = new[] { AppContext.BaseDirectory, Path.GetDirectoryName(assembly.Location) ?? "" }
            .Where(f => f.Length > 0).Distinct();
        foreach (string folder in folders)
        {
            foreach (string candidate in new[]
            {
                Path.Combine(folder, "runtimes", portableRid, "native", fileName),
                Path.Combine(folder, "runtimes", rid, "native", fileName),
                Path.Combine(folder, fileName),
            }.Distinct())
            {
                tried.Add(candidate);
                if (File.Exists(candidate) && NativeLibrary.TryLoad(candidate, out IntPtr handle))
                    return handle;
            }
        }
        if (NativeLibrary.TryLoad(libraryName, assembly, searchPath, out IntPtr fromSearch))
            return fromSearch;
        throw new DllNotFoundException(
            $"QatMl's native library ({fileName}) was not found for {rid}; the package ships it for linux-x64. Tried: {string.Join(", ", tried)}, " +
            "then the OS search path. Use Backend = OnnxRuntime, or build src/Native from source and set QATML_NATIVE_PATH to the library.");
    }
}

using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>P/Invoke declarations of the C ABI (src/Native/include/qatml/qatml.h), one to one.</summary>
internal static partial class NativeMethods
{
    /// <summary>The ABI version these declarations match (QATML_ABI_VERSION).</summary>
    internal const int ExpectedAbiVersion = 3;

    static NativeMethods() => NativeLibraryResolver.Register();

    [StructLayout(LayoutKind.Sequential)]
    internal struct Device
    {
        public int Kind;
        public int Index;
    }

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial int qatml_abi_version();

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial IntPtr qatml_version_string();

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial IntPtr qatml_last_error();

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_cpu_features(out uint features);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_cpu_detected_isa(out int isa);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_cpu_active_isa(out int isa);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_cpu_set_max_isa(int isa);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_isa_required_features(int isa, out uint features);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_cpu_set_feature_mask(uint mask);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_cpu_get_feature_mask(out uint mask);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial int qatml_cuda_compiled();

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_cuda_device_count(out int count);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_context_create(in Device device, int numThreads, out ContextHandle context);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_context_destroy(IntPtr context);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_context_get_device(ContextHandle context, out Device device);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_context_get_num_threads(ContextHandle context, out int numThreads);

    /// <summary>Raw-pointer form, for validating what the native side does with a handle it does not know.</summary>
    [LibraryImport(NativeLibraryResolver.LibraryName, EntryPoint = "qatml_context_get_num_threads")]
    internal static partial NativeStatus qatml_context_get_num_threads_raw(IntPtr context, out int numThreads);
}

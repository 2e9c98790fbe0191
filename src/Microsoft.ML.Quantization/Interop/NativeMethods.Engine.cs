using System.Runtime.InteropServices;

namespace Microsoft.ML.Quantization.Interop;

/// <summary>P/Invoke declarations of the engine ABI (src/Native/include/qatml/qatml_engine.h), one to one.</summary>
internal static unsafe partial class NativeMethods
{
    /// <summary>qatml_engine_info.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct EngineInfo
    {
        public int InputCount, OutputCount, OpCount, TensorCount;
        public long WeightBytes;
        public long ArenaBytesPerRow;
        public long NaiveBytesPerRow;
    }

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_engine_create(ContextHandle ctx, byte* plan, long planBytes, out EngineHandle engine);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_engine_destroy(IntPtr engine);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_engine_get_info(EngineHandle engine, out EngineInfo info);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_engine_io_row_size(EngineHandle engine, int isOutput, int index, out long elements);

    /// <summary>The qatml_dtype of an input or output (FLOAT32 = 4, INT32 = 3, INT64 = 7).</summary>
    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_engine_io_type(EngineHandle engine, int isOutput, int index, out int dtype);

    [LibraryImport(NativeLibraryResolver.LibraryName)]
    internal static partial NativeStatus qatml_engine_run(EngineHandle engine, ContextHandle ctx, long batch, float** inputs, int inputCount,
        float** outputs, int outputCount);
}

using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Interop;

namespace QatMl.Tool.Inspect;

/// <summary>What this CPU offers INT8 inference: the native library's feature detection, and the verdict it implies.</summary>
internal static class CpuVerdict
{
    /// <summary>"AVX-512 VNNI, 16 cores" or why the native library is missing.</summary>
    public static string Describe()
    {
        try
        {
            return $"{Name(NativeRuntime.DetectedIsa)}, {Environment.ProcessorCount} cores";
        }
        catch (Exception e) when (e is DllNotFoundException or QuantizationNativeException or TypeInitializationException or InvalidOperationException)
        {
            return $"native library unavailable ({e.Message.Split('\n')[0]}), {Environment.ProcessorCount} cores";
        }
    }

    /// <summary>The CPU features the native library detected (VNNI among them or not).</summary>
    public static string Features()
    {
        try
        {
            return NativeRuntime.Features.ToString();
        }
        catch (Exception e) when (e is DllNotFoundException or QuantizationNativeException or TypeInitializationException or InvalidOperationException)
        {
            return "unknown (native library unavailable)";
        }
    }

    /// <summary>Whether INT8 should beat FP32 on this CPU, from its ISA alone, and why.</summary>
    public static (bool Faster, string Why) Int8Verdict()
    {
        CpuIsa isa;
        try
        {
            isa = NativeRuntime.DetectedIsa;
        }
        catch (Exception e) when (e is DllNotFoundException or QuantizationNativeException or TypeInitializationException or InvalidOperationException)
        {
            return (false, "the native library could not be loaded here, so the CPU's features are unknown");
        }
        return isa switch
        {
            CpuIsa.Avx512Vnni => (true, "AVX-512 VNNI: vpdpbusd does 64 uint8 x int8 multiply-adds into int32 per instruction, about 4x FP32 FMA throughput"),
            CpuIsa.AvxVnni => (true, "AVX-VNNI: vpdpbusd on 256-bit registers, about 4x FP32 FMA throughput per instruction"),
            CpuIsa.Avx2 => (true, "AVX2 without VNNI: vpmaddubsw + vpmaddwd, about 2x FP32; its 16-bit sums can saturate (PostTraining's ReduceRange avoids it), so the gain is smaller"),
            _ => (false, "no AVX2: the integer kernels run portable code, INT8 mostly saves memory, not time"),
        };
    }

    public static string Name(CpuIsa isa) => isa switch
    {
        CpuIsa.Avx512Vnni => "AVX-512 VNNI",
        CpuIsa.AvxVnni => "AVX-VNNI",
        CpuIsa.Avx2 => "AVX2",
        _ => "scalar",
    };
}

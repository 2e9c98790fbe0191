namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Kernel paths of the native integer kernels, least capable first. Not a total order of CPUs: each path
/// runs only where the CPU has every feature it executes (<see cref="NativeRuntime.RequiredFeatures"/>).
/// </summary>
public enum CpuIsa
{
    /// <summary>Portable C++; the reference every fast path is tested against.</summary>
    Scalar = 0,
    /// <summary>AVX2 with FMA (vpmaddubsw / vpmaddwd).</summary>
    Avx2 = 1,
    /// <summary>AVX-VNNI (with AVX2 and FMA): VEX vpdpbusd on 256-bit registers. Zen 4, Ice Lake and Cascade Lake lack it.</summary>
    AvxVnni = 2,
    /// <summary>AVX-512 F/BW/VL with AVX512_VNNI (and AVX2, FMA): vpdpbusd on 512-bit registers.</summary>
    Avx512Vnni = 3,
}

/// <summary>CPU features the native library detected (and the OS enabled).</summary>
[Flags]
public enum CpuFeatures : uint
{
    /// <summary>None of the features below.</summary>
    None = 0,
    /// <summary>AVX2.</summary>
    Avx2 = 1u << 0,
    /// <summary>FMA3.</summary>
    Fma = 1u << 1,
    /// <summary>AVX-512 Foundation.</summary>
    Avx512F = 1u << 2,
    /// <summary>AVX-512 Byte and Word.</summary>
    Avx512BW = 1u << 3,
    /// <summary>AVX-512 Vector Length.</summary>
    Avx512VL = 1u << 4,
    /// <summary>AVX-512 VNNI.</summary>
    Avx512Vnni = 1u << 5,
    /// <summary>AVX-VNNI (VEX encoded).</summary>
    AvxVnni = 1u << 6,
    /// <summary>AVX-512 BF16.</summary>
    Avx512Bf16 = 1u << 7,
}

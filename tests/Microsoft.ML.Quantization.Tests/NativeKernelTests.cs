using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Tests.NativeKernels;
using Microsoft.ML.Quantization.Interop;
using Xunit.Abstractions;

namespace Microsoft.ML.Quantization.Tests;

// Kernel results against C# scalar references; the ISA cap is process-wide, so these share the collection.
[Collection(nameof(NativeIsaState))]
public sealed class NativeKernelTests(ITestOutputHelper output)
{
    /// <summary>The best path this CPU supports at or below <paramref name="cap"/>: what a cap must select.</summary>
    internal static CpuIsa BestSupportedAtOrBelow(CpuIsa cap)
    {
        for (CpuIsa isa = cap; isa > CpuIsa.Scalar; isa--)
            if (NativeRuntime.IsSupported(isa))
                return isa;
        return CpuIsa.Scalar;
    }

    private static byte QuantizeRef(float x, float scale, int zp) =>
        (byte)Math.Clamp((int)MathF.Round(x / scale, MidpointRounding.ToEven) + zp, 0, 255);

    [Fact]
    public void QuantizeAndDequantizeMatchTheScalarReference()
    {
        float[] x = [0.5f, 1.5f, 2.5f, -0.5f, -3.25f, 1000f, -1000f, 7.75f];
        var y = new byte[x.Length];
        QuantizedKernels.QuantizeLinear(x, 0.5f, 100, y);
        for (int i = 0; i < x.Length; i++)
            Assert.Equal(QuantizeRef(x[i], 0.5f, 100), y[i]);
        var back = new float[x.Length];
        QuantizedKernels.DequantizeLinear(y, 0.5f, 100, back);
        for (int i = 0; i < x.Length; i++)
            Assert.Equal((y[i] - 100) * 0.5f, back[i]);
    }

    [Fact]
    public void GemmMatchesTheScalarReferenceOnEveryIsa()
    {
        const int m = 5, k = 37, n = 19;
        var rng = new Random(7);
        var a = new byte[m * k];
        var b = new sbyte[k * n];
        rng.NextBytes(a);
        for (int i = 0; i < b.Length; i++) b[i] = (sbyte)rng.Next(-127, 128);
        var bias = new int[n];
        for (int j = 0; j < n; j++) bias[j] = rng.Next(-500, 500);
        var expect = new int[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                int s = bias[j];
                for (int kk = 0; kk < k; kk++) s += (a[i * k + kk] - 9) * b[kk * n + j];
                expect[i * n + j] = s;
            }
        float mult = 1f / 512;
        var expectU8 = expect.Select(v => (byte)Math.Clamp((int)MathF.Round(v * mult, MidpointRounding.ToEven) + 3, 3, 255)).ToArray();
        // This CPU, then the feature set of a Zen 4 / Cascade Lake (AVX-512 VNNI, no AVX-VNNI) emulated on it:
        // every cap packs for the best path the CPU supports at or below it, never one it lacks.
        CpuFeatures?[] featureSets = [null, ~CpuFeatures.AvxVnni];
        try
        {
            foreach (CpuFeatures? keep in featureSets)
            {
                NativeRuntime.SetFeatureMask(keep);
                foreach (CpuIsa isa in Enum.GetValues<CpuIsa>())
                {
                    if (!NativeRuntime.IsSupported(isa))
                        output.WriteLine($"path {isa} not run ({(keep is null ? "this CPU" : "emulated Zen 4")}): the CPU lacks {NativeRuntime.RequiredFeatures(isa) & ~NativeRuntime.Features}");
                    NativeRuntime.SetMaxIsa(isa);
                    Assert.Equal(BestSupportedAtOrBelow(isa), NativeRuntime.ActiveIsa);
                    using var packed = PackedInt8Weights.ForGemm(b, k, n);
                    Assert.Equal(BestSupportedAtOrBelow(isa), packed.Isa);
                    var c = new int[m * n];
                    QuantizedKernels.Gemm(a, m, 9, packed, c, bias);
                    Assert.Equal(expect, c);
                    var c8 = new byte[m * n];
                    QuantizedKernels.Gemm(a, m, 9, packed, [mult], 3, c8, bias, relu: true);
                    Assert.Equal(expectU8, c8);
                }
            }
        }
        finally
        {
            NativeRuntime.SetMaxIsa(null);
            NativeRuntime.SetFeatureMask(null);
        }
    }

    [Fact]
    public void CapAboveOrBesideAnEmulatedZen4NeverSelectsAnUnsupportedPath()
    {
        // The issue's SIGILL: SetMaxIsa(AvxVnni) on a CPU with AVX-512 VNNI but no AVX-VNNI gave ActiveIsa == AvxVnni.
        try
        {
            NativeRuntime.SetFeatureMask(~CpuFeatures.AvxVnni);
            Assert.False(NativeRuntime.IsSupported(CpuIsa.AvxVnni));
            Assert.Equal(0u, (uint)(NativeRuntime.Features & CpuFeatures.AvxVnni));
            CpuIsa below = NativeRuntime.IsSupported(CpuIsa.Avx2) ? CpuIsa.Avx2 : CpuIsa.Scalar;
            NativeRuntime.SetMaxIsa(CpuIsa.AvxVnni);
            Assert.Equal(below, NativeRuntime.ActiveIsa);
            using (var packed = PackedInt8Weights.ForGemm([1, 2, 3, 4, 5, 6], 2, 3))
            {
                Assert.Equal(below, packed.Isa);
                var c = new int[3];
                QuantizedKernels.Gemm([10, 20], 1, 0, packed, c);
                Assert.Equal(new[] { 10 * 1 + 20 * 4, 10 * 2 + 20 * 5, 10 * 3 + 20 * 6 }, c);
            }
            NativeRuntime.SetMaxIsa(CpuIsa.Avx512Vnni);
            Assert.True(NativeRuntime.IsSupported(NativeRuntime.ActiveIsa));
            Assert.Equal(NativeRuntime.DetectedIsa, NativeRuntime.ActiveIsa);
            Assert.NotEqual(CpuIsa.AvxVnni, NativeRuntime.DetectedIsa);
        }
        finally
        {
            NativeRuntime.SetMaxIsa(null);
            NativeRuntime.SetFeatureMask(null);
        }
        // Only the environment's mask (build/test.sh runs the native tests once more under QATML_CPU_FEATURE_MASK=~0x40) is left.
        uint expectedMask = Environment.GetEnvironmentVariable("QATML_CPU_FEATURE_MASK") switch
        {
            null or "" => uint.MaxValue,
            "~0x40" => ~0x40u,
            string other => throw new Xunit.Sdk.XunitException($"unexpected QATML_CPU_FEATURE_MASK={other} in this test's environment"),
        };
        Assert.Equal(expectedMask, (uint)NativeRuntime.FeatureMask);
    }

    [Fact]
    public void ConvolutionMatchesTheScalarReference()
    {
        // 1 image, 2 channels 4x4, 3 output channels 3x3, pad 1, stride 1.
        var rng = new Random(3);
        var x = new byte[2 * 16];
        rng.NextBytes(x);
        var w = new sbyte[3 * 2 * 9];
        for (int i = 0; i < w.Length; i++) w[i] = (sbyte)rng.Next(-127, 128);
        var g = new Conv2dGeometry(1, 2, 4, 4, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);
        float mult = 1f / 256;
        var expect = new byte[3 * 16];
        for (int oc = 0; oc < 3; oc++)
            for (int oy = 0; oy < 4; oy++)
                for (int ox = 0; ox < 4; ox++)
                {
                    int s = 0;
                    for (int c = 0; c < 2; c++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++)
                            {
                                int iy = oy - 1 + ky, ix = ox - 1 + kx;
                                if (iy < 0 || iy >= 4 || ix < 0 || ix >= 4) continue;
                                s += (x[c * 16 + iy * 4 + ix] - 120) * w[((oc * 2 + c) * 3 + ky) * 3 + kx];
                            }
                    expect[oc * 16 + oy * 4 + ox] = (byte)Math.Clamp((int)MathF.Round(s * mult, MidpointRounding.ToEven) + 128, 0, 255);
                }
        using var packed = PackedInt8Weights.ForConvolution(w, 3, 2, 3, 3);
        var y = new byte[3 * 16];
        QuantizedKernels.Conv2d(x, g, 120, packed, [mult], 128, y);
        Assert.Equal(expect, y);
    }

    [Fact]
    public void BadArgumentsCarryTheNativeMessage()
    {
        var y = new byte[4];
        var ex = Assert.Throws<QuantizationNativeException>(() => QuantizedKernels.QuantizeLinear([1f, 2f, 3f, 4f], 0f, 0, y));
        Assert.Equal(NativeStatus.InvalidArgument, ex.Status);
        Assert.Contains("qatml_quantize_linear: scales[0]", ex.Message);
        var ex2 = Assert.Throws<QuantizationNativeException>(() => PackedInt8Weights.ForConvolution(new sbyte[9], 3, 1, 1, 3, groups: 2));
        Assert.Contains("not a multiple of groups", ex2.Message);
        Assert.Throws<ArgumentException>(() => PackedInt8Weights.ForGemm(new sbyte[5], 2, 3));
    }

    [Fact]
    public void DisposedWeightsThrowObjectDisposed()
    {
        var packed = PackedInt8Weights.ForGemm(new sbyte[6], 2, 3);
        packed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => QuantizedKernels.Gemm(new byte[2], 1, 0, packed, new int[3]));
    }
}

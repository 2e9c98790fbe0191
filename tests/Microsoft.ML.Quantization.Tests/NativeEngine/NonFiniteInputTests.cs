using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.NativeEngine;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using Xunit.Abstractions;
using static Microsoft.ML.Quantization.Tests.NativeEngine.NativeEngineTests;

namespace Microsoft.ML.Quantization.Tests.NativeEngine;

/// <summary>
/// NaN and infinite inputs: the engine's QuantizeLinear equals ONNX Runtime's bit for bit (MLAS clamps with
/// max(x, lo) then min(x, hi), and x86 max returns its second operand for a NaN, so NaN quantizes to the type's
/// minimum, +Inf to its maximum, -Inf to its minimum), on every kernel path this CPU runs. ISA caps are
/// process-wide, hence the collection.
/// </summary>
[Collection(nameof(NativeIsaState))]
public sealed class NonFiniteInputTests(ITestOutputHelper output)
{
    private static readonly float NegativeNan = BitConverter.Int32BitsToSingle(unchecked((int)0xFFC00001));
    private static readonly float SignallingNan = BitConverter.Int32BitsToSingle(0x7F800001);

    private static float[] RowsWithNonFiniteValues(float[] images, int rows)
    {
        float[] x = images.AsSpan(0, rows * 784).ToArray();
        Span<float> Row(int r) => x.AsSpan(r * 784, 784);
        Row(0)[0] = float.NaN;                              // one NaN, first lane of a vector
        Row(1)[783] = float.NaN;                            // last element of a row
        for (int i = 0; i < 784; i += 3) Row(2)[i] = float.NaN;
        Row(3).Fill(float.NaN);                             // a row of NaN only
        Row(4)[100] = float.PositiveInfinity;
        Row(4)[101] = float.NegativeInfinity;
        Row(4)[102] = float.MaxValue;
        Row(4)[103] = -float.MaxValue;
        Row(5).Fill(float.PositiveInfinity);
        Row(6).Fill(float.NegativeInfinity);
        for (int i = 0; i < 784; i++)                       // a mixture, including NaN payloads and signs
            Row(7)[i] = (i % 7) switch
            {
                0 => float.NaN, 1 => NegativeNan, 2 => SignallingNan, 3 => float.PositiveInfinity, 4 => float.NegativeInfinity,
                5 => -0.0f, _ => Row(7)[i],
            };
        x[^1] = float.NaN;                                  // the last element of the batch
        return x;
    }

    private static NativeInt8Engine Load(byte[] model)
        => NativeInt8Engine.TryLoad(model, "test", [], [], new Dictionary<string, int[]>(), 1, out var unsupported)
           ?? throw new Xunit.Sdk.XunitException("not loaded: " + string.Join("; ", unsupported));

    private static float[] RunNative(byte[] model, float[] input, int rows)
    {
        using var engine = Load(model);
        var y = new float[rows * engine.Outputs[0].RowSize];
        engine.Run(rows, [input], [y]);
        return y;
    }

    /// <summary>Runs <paramref name="check"/> once per kernel path this CPU supports (engines pack at load, so each loads its own).</summary>
    private void OnEveryPath(Action<CpuIsa> check)
    {
        try
        {
            foreach (CpuIsa isa in Enum.GetValues<CpuIsa>())
            {
                if (!NativeRuntime.IsSupported(isa))
                {
                    output.WriteLine($"path {isa} not run: the CPU lacks {NativeRuntime.RequiredFeatures(isa) & ~NativeRuntime.Features}");
                    continue;
                }
                NativeRuntime.SetMaxIsa(isa);
                Assert.Equal(isa, NativeRuntime.ActiveIsa);
                check(isa);
            }
        }
        finally
        {
            NativeRuntime.SetMaxIsa(null);
        }
    }

    /// <summary>The input QuantizeLinear of the quantized FmnistNet and its DequantizeLinear as the whole model, zero point and type replaced.</summary>
    private static byte[] InputQdq(OnnxElementType type, int zeroPoint)
    {
        var model = OnnxModel.Parse(QuantizedFmnist(QuantizationPrecision.Int8));
        var g = model.Graph;
        var q = g.Nodes.Single(n => n.OpType == "QuantizeLinear" && n.Inputs[0] == g.Inputs[0].Name);
        var dq = g.Nodes.Single(n => n.OpType == "DequantizeLinear" && n.Inputs[0] == q.Outputs[0]);
        string zpName = g.FreshName("nonfinite_zp");
        g.SetInitializer(type == OnnxElementType.UInt8
            ? OnnxTensor.FromUInt8(zpName, [], [(byte)zeroPoint])
            : OnnxTensor.FromInt8(zpName, [], [(sbyte)zeroPoint]));
        q.Inputs[2] = zpName;
        dq.Inputs[2] = zpName;
        g.Proto.Output.Clear();
        g.AddOutput(dq.Outputs[0]);
        g.RemoveUnused();
        return model.ToBytes();
    }

    [Fact]
    public void QuantizeLinearOfNanAndInfinityIsBitExactWithOnnxRuntime()
    {
        const int rows = 8;
        float[] x = RowsWithNonFiniteValues(Images.Value, rows);
        foreach (var (type, zp) in new[] { (OnnxElementType.UInt8, 0), (OnnxElementType.UInt8, 131), (OnnxElementType.UInt8, 255),
                                           (OnnxElementType.Int8, -128), (OnnxElementType.Int8, 5), (OnnxElementType.Int8, 127) })
        {
            byte[] model = InputQdq(type, zp);
            float[] ort = RunOrt(model, x, rows, [1, 28, 28]);
            float scale = OutputScale(model);
            int lo = type == OnnxElementType.UInt8 ? 0 : -128, hi = type == OnnxElementType.UInt8 ? 255 : 127;
            // What ONNX Runtime does, stated: NaN -> the type's minimum, +Inf -> maximum, -Inf -> minimum.
            for (int i = 0; i < x.Length; i++)
            {
                if (float.IsNaN(x[i]) || float.IsNegativeInfinity(x[i]))
                    Assert.Equal((lo - zp) * scale, ort[i]);
                else if (float.IsPositiveInfinity(x[i]))
                    Assert.Equal((hi - zp) * scale, ort[i]);
            }
            // The managed reference operator (weights, QAT export, calibration checks) agrees with both.
            for (int i = 0; i < x.Length; i++)
            {
                int q = LinearQuantization.QuantizeLinear(x[i], scale, zp, 8, isSigned: type == OnnxElementType.Int8);
                Assert.Equal(ort[i], LinearQuantization.DequantizeLinear(q, scale, zp));
            }
            OnEveryPath(isa => Assert.True(ort.AsSpan().SequenceEqual(RunNative(model, x, rows)), $"{type} zero point {zp}, path {isa}"));
        }
    }

    [Fact]
    public void FmnistRowsWithNanAndInfinityScoreLikeOnnxRuntime()
    {
        // The row: native argmax 8, ONNX Runtime argmax 5 once the input held a NaN.
        const int rows = 8;
        byte[] model = QuantizedFmnist(QuantizationPrecision.Int8);
        float[] x = RowsWithNonFiniteValues(Images.Value, rows);
        float[] ort = RunOrt(model, x, rows, [1, 28, 28]);
        OnEveryPath(isa =>
        {
            float[] native = RunNative(model, x, rows);
            Assert.True(ort.AsSpan().SequenceEqual(native), $"path {isa}");
            for (int r = 0; r < rows; r++)
                Assert.Equal(ArgMax(ort.AsSpan(r * 10, 10)), ArgMax(native.AsSpan(r * 10, 10)));
        });
    }
}

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Inference.NativeEngine;
using Microsoft.ML.Quantization.Interop;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;
using Xunit.Abstractions;

namespace Microsoft.ML.Quantization.Tests.NativeEngine;

/// <summary>The native INT8 engine against ONNX Runtime on the same QDQ models, threads, and robustness of its loaders.</summary>
public sealed class NativeEngineTests(ITestOutputHelper output)
{
    private static readonly Lazy<List<FashionMnist.Row>> Calibration =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 200)));

    private static readonly Lazy<float[]> Images = new(() =>
        FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 300)).SelectMany(r => r.Input).ToArray());

    private static readonly Dictionary<string, byte[]> Models = [];

    internal static byte[] QuantizedFmnist(QuantizationPrecision precision)
    {
        lock (Models)
        {
            string key = precision.ToString();
            if (!Models.TryGetValue(key, out byte[]? bytes))
            {
                var context = new MLContext(seed: 1);
                var options = new PostTrainingOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 200, Precision = precision };
                using var q = context.Quantization.PostTraining(options).Fit(context.Data.LoadFromEnumerable(Calibration.Value));
                Models[key] = bytes = q.QuantizedModel;
            }
            return bytes;
        }
    }

    internal static float[] RunOrt(byte[] model, float[] input, int rows, int[] rowDims)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        using var session = new InferenceSession(model, options);
        var feed = new[] { NamedOnnxValue.CreateFromTensor(session.InputMetadata.Keys.First(), new DenseTensor<float>(input, [rows, .. rowDims])) };
        using var results = session.Run(feed, [session.OutputMetadata.Keys.First()]);
        return results.First().AsTensor<float>().ToArray();
    }

    private static NativeInt8Engine Load(byte[] model, int threads = 1)
        => NativeInt8Engine.TryLoad(model, "test", [], [], new Dictionary<string, int[]>(), threads, out var unsupported)
           ?? throw new Xunit.Sdk.XunitException("not loaded: " + string.Join("; ", unsupported));

    private static float[] RunNative(NativeInt8Engine engine, float[] input, int rows)
    {
        var output = new float[rows * engine.Outputs[0].RowSize];
        engine.Run(rows, [input], [output]);
        return output;
    }

    /// <summary>Largest difference in units of the output scale (LSBs of the integer output).</summary>
    internal static int MaxLsb(float[] a, float[] b, float scale)
    {
        Assert.Equal(a.Length, b.Length);
        int max = 0;
        for (int i = 0; i < a.Length; i++)
            max = Math.Max(max, (int)Math.Round(Math.Abs(a[i] - b[i]) / scale));
        return max;
    }

    internal static float OutputScale(byte[] model)
    {
        var g = OnnxModel.Parse(model).Graph;
        var dq = g.Producer(g.Outputs[0].Name)!;
        g.TryGetInitializer(dq.Inputs[1], out var s);
        return s.ToFloatArray()[0];
    }

    [Fact]
    public void FmnistNetInt8_BitExactWithOnnxRuntime_AtEveryBatchAndThreadCount()
    {
        byte[] model = QuantizedFmnist(QuantizationPrecision.Int8);
        using var engine = Load(model);
        Assert.Equal(["Quantize", "Conv", "MaxPool", "Conv", "MaxPool", "Gemm", "Gemm", "Dequantize"], engine.Plan.Ops.Select(o => o.Kind.ToString()));
        float[] images = Images.Value;
        int rows = images.Length / 784;
        float[] ort = RunOrt(model, images, rows, [1, 28, 28]);
        Assert.Equal(ort, RunNative(engine, images, rows));
        foreach (int batch in new[] { 1, 7, 64 })
        {
            var part = images.AsSpan(0, batch * 784).ToArray();
            Assert.Equal(ort.AsSpan(0, batch * 10).ToArray(), RunNative(engine, part, batch));
        }
        using var threaded = Load(model, threads: 3);
        Assert.Equal(3, threaded.Threads);
        Assert.Equal(ort, RunNative(threaded, images, rows));
        // Concurrent runs on one loaded model give identical results.
        var results = new float[6][];
        Parallel.For(0, results.Length, i => results[i] = RunNative(i % 2 == 0 ? engine : threaded, images, rows));
        Assert.All(results, r => Assert.Equal(ort, r));
        Assert.True(engine.ArenaBytesPerRow < engine.NaiveBytesPerRow);
        output.WriteLine($"weights {engine.WeightBytes} bytes, arena {engine.ArenaBytesPerRow} bytes/row (naive {engine.NaiveBytesPerRow})");
    }

    [Fact]
    public void FmnistNetW4A8_RunsWithInt4Weights_CloseToOnnxRuntime()
    {
        byte[] model = QuantizedFmnist(QuantizationPrecision.W4A8);
        Assert.Contains(OnnxModel.Parse(model).Graph.Initializers, t => t.ElementType == OnnxElementType.Int4);
        using var engine = Load(model);
        float[] images = Images.Value;
        int rows = images.Length / 784;
        float[] ort = RunOrt(model, images, rows, [1, 28, 28]);
        float[] native = RunNative(engine, images, rows);
        int lsb = MaxLsb(ort, native, OutputScale(model));
        int same = 0;
        for (int r = 0; r < rows; r++)
            same += ArgMax(ort.AsSpan(r * 10, 10)) == ArgMax(native.AsSpan(r * 10, 10)) ? 1 : 0;
        output.WriteLine($"W4A8: max {lsb} LSB vs ORT, top-1 agreement {same}/{rows}");
        Assert.InRange(lsb, 0, 4);
        Assert.True(same >= rows - 3);
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++)
            if (v[i] > v[best])
                best = i;
        return best;
    }
}

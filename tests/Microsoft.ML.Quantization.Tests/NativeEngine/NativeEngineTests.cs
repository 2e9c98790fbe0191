using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Interop;
using Microsoft.ML.Quantization.Lowering;
using Microsoft.ML.Quantization.NativeEngine;
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

    internal static readonly Lazy<float[]> Images = new(() =>
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
        Assert.Equal(["Quantize", "Conv", "MaxPool", "Conv", "MaxPool", "Gemm", "Gemm", "Dequantize"], engine.Ops.Select(o => o.Kind.ToString()));
        Assert.Equal(6, engine.NativeOpCount);  // each Conv and its 2x2 MaxPool run as one fused op
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

    [Fact]
    public void Transformer_NativeBackend_FallsBackOrFailsNamingTheNode()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value.Take(50));
        // A Cos on the logits stays float, and the engine has no Cos (float or integer).
        var model = OnnxModel.Load(TestData.FmnistNet);
        var g = model.Graph;
        string logits = g.Outputs[0].Name, raw = g.FreshName("raw_logits");
        g.Producer(logits)!.Outputs[0] = raw;
        g.AddNode("Cos", [raw], [logits], "cosine");
        PostTrainingOptions Options(bool allow) => new()
        {
            ModelBytes = model.ToBytes(), IntraOpNumThreads = 1, SampleCount = 50, Backend = QuantizedBackend.Native, AllowBackendFallback = allow,
        };
        using (var fallback = context.Quantization.PostTraining(Options(true)).Fit(calibration))
        {
            Assert.Equal(QuantizedBackend.OnnxRuntime, fallback.Backend);
            Assert.Equal(QuantizedBackend.Native, fallback.RequestedBackend);
            Assert.Contains("node 'cosine' (Cos)", fallback.BackendFallbackReason);
            // The root cause once, then a count of what fails only because it reads the Cos's output.
            Assert.Matches(@"; \d+ more nodes or outputs depend on those$", fallback.BackendFallbackReason);
            Assert.DoesNotContain("QuantizeLinear", fallback.BackendFallbackReason);
            Assert.Null(fallback.NativeWeightBytes);
        }
        var error = Assert.Throws<NotSupportedException>(() => context.Quantization.PostTraining(Options(false)).Fit(calibration));
        Assert.Contains("op type Cos is not supported by the native engine: node 'cosine' (Cos)", error.Message);

        // The plain model runs natively and scores like ONNX Runtime.
        var plain = new PostTrainingOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 50, BatchSize = 13, AllowBackendFallback = false };
        using var ort = context.Quantization.PostTraining(plain).Fit(calibration);
        plain.Backend = QuantizedBackend.Native;
        using var native = context.Quantization.PostTraining(plain).Fit(calibration);
        Assert.Equal(QuantizedBackend.Native, native.Backend);
        Assert.True(native.NativeWeightBytes > 0);
        IDataView test = context.Data.LoadFromEnumerable(FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 100)));
        Assert.Equal(Logits(context, ort.Transform(test)), Logits(context, native.Transform(test)));
    }

    private static List<float[]> Logits(MLContext context, IDataView scored)
        => context.Data.CreateEnumerable<ScoredRow>(scored, false).Select(r => r.Logits).ToList();

    private sealed class ScoredRow
    {
        [Microsoft.ML.Data.ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }

    [Fact]
    public void InconsistentModel_ClearErrorBeforeAnyNativeCall()
    {
        var model = OnnxModel.Parse(QuantizedFmnist(QuantizationPrecision.Int8));
        var g = model.Graph;
        // fc1's weight loses a column: K no longer matches the flattened pool output.
        var gemm = g.Nodes.First(n => n.OpType == "Gemm");
        var dq = g.Producer(gemm.Inputs[1])!;
        g.TryGetInitializer(dq.Inputs[0], out var w);
        long[] dims = w.Dims;
        sbyte[] values = w.ToInt8Array();
        var narrower = new sbyte[dims[0] * (dims[1] - 1)];
        for (long r = 0; r < dims[0]; r++)
            Array.Copy(values, r * dims[1], narrower, r * (dims[1] - 1), dims[1] - 1);
        g.SetInitializer(OnnxTensor.FromInt8(w.Name, [dims[0], dims[1] - 1], narrower));
        var e = Assert.Throws<InvalidOnnxModelException>(() =>
            NativeInt8Engine.TryLoad(model.ToBytes(), "broken.onnx", [], [], new Dictionary<string, int[]>(), 1, out _));
        Assert.Contains($"Model 'broken.onnx': node '{gemm.Name}' (Gemm): input has 3136 features, the weight expects K = 3135", e.Message);

        // A declared input shape that does not fit the first convolution's weights.
        var shapes = new Dictionary<string, int[]> { ["input"] = [3, 28, 28] };
        var conv = Assert.Throws<InvalidOnnxModelException>(() =>
            NativeInt8Engine.TryLoad(QuantizedFmnist(QuantizationPrecision.Int8), "m", [], [], shapes, 1, out _));
        Assert.Contains("input has 3 channels, the weight expects 1 x 1 groups", conv.Message);
    }

    /// <summary>
    /// Mutated valid QDQ models (dims, scales, zero points, attributes, rewired inputs, removed initializers) and mutated
    /// plan bytes: each is accepted and runs, or is rejected with a clear managed or native error; nothing crashes.
    /// </summary>
    [Fact]
    public void Fuzz_MutatedModelsAndPlans_NeverCrash()
    {
        byte[] valid = QuantizedFmnist(QuantizationPrecision.Int8);
        var random = new Random(12345);
        float[] images = Images.Value.AsSpan(0, 2 * 784).ToArray();
        int accepted = 0, rejected = 0;
        for (int it = 0; it < 150; it++)
        {
            var model = OnnxModel.Parse(valid);
            Mutate(model, random);
            byte[] bytes;
            try
            {
                bytes = model.ToBytes();
            }
            catch (InvalidOnnxModelException)
            {
                continue;
            }
            NativeInt8Engine? engine = null;
            try
            {
                engine = NativeInt8Engine.TryLoad(bytes, "mutated", [], [], new Dictionary<string, int[]>(), 1, out var unsupported);
                if (engine is null)
                {
                    Assert.NotEmpty(unsupported);
                    rejected++;
                    continue;
                }
                var outputs = engine.Outputs.Select(o => new float[2 * o.RowSize]).ToArray();
                var inputs = engine.Inputs.Select(i => new float[2 * i.RowSize]).ToArray();
                if (inputs.Length == 1 && inputs[0].Length == images.Length)
                    images.CopyTo(inputs[0], 0);
                engine.Run(2, inputs, outputs);
                accepted++;
            }
            catch (Exception e) when (e is InvalidOnnxModelException or ArgumentException or InvalidOperationException or NotSupportedException
                                      || e is QuantizationNativeException { Status: NativeStatus.InvalidArgument })
            {
                Assert.False(string.IsNullOrWhiteSpace(e.Message));
                rejected++;
            }
            finally
            {
                engine?.Dispose();
            }
        }
        output.WriteLine($"mutated models: {accepted} ran, {rejected} rejected");
        Assert.True(accepted > 0 && rejected > 0);

        // Mutated plan bytes of the real model: accepted and run, or InvalidArgument from the native loader.
        byte[] plan = QdqLowering.Lower(OnnxModel.Parse(valid), "m", [], [], new Dictionary<string, int[]>()).Plan!.ToBytes();
        using var context = new NativeContext(ComputeDevice.Cpu, 1);
        int planAccepted = 0;
        for (int it = 0; it < 300; it++)
        {
            byte[] m = (byte[])plan.Clone();
            int edits = 1 + random.Next(4);
            for (int k = 0; k < edits; k++)
            {
                int at = random.Next(m.Length);
                if (random.Next(4) == 0 && at < 4096)
                    m[at] = (byte)random.Next(256);               // the header, tensors and small payloads
                else
                    m[random.Next(Math.Min(m.Length, 2048))] ^= (byte)(1 << random.Next(8));
            }
            if (random.Next(8) == 0)
                Array.Resize(ref m, random.Next(m.Length));
            try
            {
                using var handle = NativeInt8Engine.CreateHandle(context, m);
                planAccepted++;
            }
            catch (QuantizationNativeException e)
            {
                Assert.Equal(NativeStatus.InvalidArgument, e.Status);
                Assert.Contains("qatml_engine_create", e.Message);
            }
        }
        output.WriteLine($"mutated plans: {planAccepted} of 300 accepted");
    }

    private static void Mutate(OnnxModel model, Random random)
    {
        var g = model.Graph;
        var inits = g.Initializers;
        var nodes = g.Nodes;
        switch (random.Next(6))
        {
            case 0:
            {   // a dimension of an initializer (data left as is: may no longer match)
                var t = inits[random.Next(inits.Count)];
                if (t.Proto.Dims.Count > 0)
                    t.Proto.Dims[random.Next(t.Proto.Dims.Count)] = random.Next(4) switch { 0 => 0, 1 => -1, 2 => 1, _ => random.Next(1, 5000) };
                break;
            }
            case 1:
            {   // a float constant (scales) set to 0, NaN, infinity or a negative value
                var floats = inits.Where(t => t.ElementType == OnnxElementType.Float).ToList();
                var t = floats[random.Next(floats.Count)];
                float[] v = t.ToFloatArray();
                v[random.Next(v.Length)] = new[] { 0f, float.NaN, float.PositiveInfinity, -1f, 1e-30f, 1e30f }[random.Next(6)];
                g.SetInitializer(OnnxTensor.FromFloats(t.Name, t.Dims, v));
                break;
            }
            case 2:
            {   // a zero point's type or value
                var zps = inits.Where(t => t.ElementType is OnnxElementType.UInt8 or OnnxElementType.Int8 && t.ElementCount == 1).ToList();
                var t = zps[random.Next(zps.Count)];
                g.SetInitializer(random.Next(2) == 0 ? OnnxTensor.FromInt32(t.Name, t.Dims, [random.Next(-300, 300)]) : OnnxTensor.FromInt8(t.Name, t.Dims, [(sbyte)random.Next(-128, 128)]));
                break;
            }
            case 3:
            {   // an attribute of a Conv / pool / Gemm / Flatten
                var n = nodes.Where(n => n.OpType is "Conv" or "MaxPool" or "Gemm" or "Flatten").ElementAt(random.Next(5));
                string[] names = ["strides", "pads", "kernel_shape", "dilations", "group", "transB", "axis", "auto_pad", "ceil_mode"];
                string name = names[random.Next(names.Length)];
                if (name is "group" or "transB" or "axis" or "ceil_mode")
                    n.SetInt(name, random.Next(-1, 4));
                else if (name == "auto_pad")
                    n.SetString(name, new[] { "SAME_UPPER", "SAME_LOWER", "VALID", "BOGUS" }[random.Next(4)]);
                else
                    n.SetInts(name, Enumerable.Range(0, random.Next(1, 5)).Select(_ => (long)random.Next(-1, 6)));
                break;
            }
            case 4:
            {   // a node input rewired to another tensor
                var n = nodes[random.Next(nodes.Count)];
                var names = g.TensorNames().ToList();
                if (n.Inputs.Count > 0)
                    n.Inputs[random.Next(n.Inputs.Count)] = names[random.Next(names.Count)];
                break;
            }
            default:
            {   // an initializer removed
                g.RemoveInitializer(inits[random.Next(inits.Count)].Name);
                break;
            }
        }
    }

    internal static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++)
            if (v[i] > v[best])
                best = i;
        return best;
    }
}

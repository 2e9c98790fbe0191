using System.IO.Compression;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.PostTraining;

/// <summary>PTQ of FmnistNet on its calibration images, checked on Fashion-MNIST test images.</summary>
public sealed class PostTrainingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qatml-ptq-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly Lazy<List<FashionMnist.Row>> Calibration =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 500)));

    private static readonly Lazy<List<FashionMnist.Row>> Test =
        new(() => FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 2000)));

    internal static PostTrainingOptions Options(QuantizationPrecision? precision = null) => new()
    {
        ModelPath = TestData.FmnistNet,
        IntraOpNumThreads = 1,
        SampleCount = 500,
        Precision = precision ?? QuantizationPrecision.Int8,
    };

    internal static double Accuracy(MLContext context, ITransformer model, IDataView data, string logits = "logits")
    {
        var rows = context.Data.CreateEnumerable<Scored>(model.Transform(data), false).ToList();
        return rows.Count(r => ArgMax(r.Logits) == r.Label) / (double)rows.Count;
    }

    private static int ArgMax(float[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++)
            if (v[i] > v[best])
                best = i;
        return best;
    }

    [Fact]
    public void Int8_QuantizesEveryConvAndGemm_KeepsAccuracy_RunsIntegerKernels()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        IDataView test = context.Data.LoadFromEnumerable(Test.Value);
        using QuantizedModelTransformer quantized = context.Quantization.PostTraining(Options()).Fit(calibration);

        var model = OnnxModel.Parse(quantized.QuantizedModel);
        var g = model.Graph;
        Assert.DoesNotContain(g.Nodes, n => n.OpType is "Relu");                      // folded into output quantization
        foreach (var op in g.Nodes.Where(n => n.OpType is "Conv" or "Gemm"))
        {
            Assert.All(op.Inputs.Where(i => i.Length > 0), i => Assert.Equal("DequantizeLinear", g.Producer(i)?.OpType));
            Assert.Equal("QuantizeLinear", Assert.Single(g.Consumers(op.Outputs[0])).OpType);
            var weightDq = g.Producer(op.Inputs[1])!;
            Assert.True(g.TryGetInitializer(weightDq.Inputs[0], out var w));
            Assert.Equal(OnnxElementType.Int8, w.ElementType);
            Assert.All(w.ToInt8Array(), v => Assert.InRange(v, (sbyte)-127, (sbyte)127));
            Assert.True(g.TryGetInitializer(g.Producer(op.Inputs[2])!.Inputs[0], out var bias));
            Assert.Equal(OnnxElementType.Int32, bias.ElementType);
        }
        Assert.All(quantized.Nodes, n => Assert.NotNull(n.Precision));

        var floatScoring = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1 }).Fit(test);
        double fp32 = Accuracy(context, floatScoring, test), int8 = Accuracy(context, quantized, test);
        Assert.True(int8 >= fp32 - 0.01, $"INT8 {int8:P2} vs FP32 {fp32:P2}");

        // ONNX Runtime runs integer kernels: its optimized graph has QLinearConv and no float Conv.
        string optimized = Path.Combine(_dir, "optimized.onnx");
        using (var so = new SessionOptions { OptimizedModelFilePath = optimized, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED })
        using (new InferenceSession(quantized.QuantizedModel, so)) { }
        var ops = OnnxModel.Load(optimized).Graph.Nodes.Select(n => n.OpType).ToList();
        Assert.Contains("QLinearConv", ops);
        Assert.DoesNotContain("Conv", ops);

        // And ONNX Runtime's profiler shows those integer kernels executing.
        using (var so = new SessionOptions { EnableProfiling = true, ProfileOutputPathPrefix = Path.Combine(_dir, "ort-profile"), IntraOpNumThreads = 1 })
        using (var session = new InferenceSession(quantized.QuantizedModel, so))
        {
            var input = new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(Calibration.Value[0].Input, [1, 1, 28, 28]);
            using (session.Run([NamedOnnxValue.CreateFromTensor("input", input)])) { }
            string profile = File.ReadAllText(session.EndProfiling());
            Assert.Contains("\"op_name\" : \"QLinearConv\"", profile.Replace("\"op_name\":\"", "\"op_name\" : \""));
            Assert.DoesNotContain("\"op_name\" : \"Conv\"", profile.Replace("\"op_name\":\"", "\"op_name\" : \""));
        }
    }

    [Fact]
    public void Options_ExcludeByPattern_MixedPrecisionMap_OddWidthsUseClip()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value.Take(200));
        IDataView test = context.Data.LoadFromEnumerable(Test.Value.Take(500));
        var options = Options();
        options.SampleCount = 200;
        options.ExcludedNodes.Add("/conv2/*");
        var fc1 = OnnxModel.Load(TestData.FmnistNet).Graph.Nodes.First(n => n.OpType == "Gemm").Name;
        options.NodePrecision[fc1] = new QuantizationPrecision(4, 6);
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);

        var conv2 = Assert.Single(quantized.FloatNodes, n => n.OpType == "Conv");
        Assert.StartsWith("/conv2/", conv2.Name);
        Assert.Equal("excluded by the options", conv2.Reason);
        Assert.Equal(new QuantizationPrecision(4, 6), quantized.Nodes.Single(n => n.Name == fc1).Precision);

        var g = OnnxModel.Parse(quantized.QuantizedModel).Graph;
        Assert.Contains(g.Nodes, n => n.OpType == "Conv" && g.Producer(n.Inputs[1]) is null);       // float weights stay float
        var gemm = g.Nodes.First(n => n.OpType == "Gemm");
        Assert.True(g.TryGetInitializer(g.Producer(gemm.Inputs[1])!.Inputs[0], out var w4));
        Assert.Equal(OnnxElementType.Int4, w4.ElementType);
        Assert.All(w4.ToInt4Array(), v => Assert.InRange(v, (sbyte)-7, (sbyte)7));
        // The 6-bit activation feeding the Gemm: Q -> Clip(0, 63) -> DQ on uint8.
        var clip = Assert.Single(g.Nodes, n => n.OpType == "Clip");
        Assert.True(g.TryGetInitializer(clip.Inputs[2], out var hi));
        Assert.Equal((byte)63, hi.ToUInt8Array()[0]);
        Assert.Equal(21, OnnxModel.Parse(quantized.QuantizedModel).DefaultOpset);        // int4 needs opset 21

        var floatScoring = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1 }).Fit(test);
        Assert.True(Accuracy(context, quantized, test) >= Accuracy(context, floatScoring, test) - 0.03);
    }

    [Fact]
    public void TensorRT_ForcesSymmetricActivations_ReduceRangeGivesSevenBitWeights()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value.Take(100));
        var options = Options();
        options.SampleCount = 100;
        options.ExecutionProvider = OnnxExecutionProvider.TensorRT;
        options.FallbackToCpu = true;                       // no GPU here: runs on the CPU, with a warning
        options.ReduceRange = true;
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);
        Assert.Equal(OnnxExecutionProvider.Cpu, quantized.ExecutionProvider);
        Assert.Equal(OnnxExecutionProvider.TensorRT, quantized.RequestedExecutionProvider);

        var g = OnnxModel.Parse(quantized.QuantizedModel).Graph;
        foreach (var q in g.Nodes.Where(n => n.OpType == "QuantizeLinear"))
        {
            Assert.True(g.TryGetInitializer(q.Inputs[2], out var zp));
            Assert.Equal(0, zp.ElementType == OnnxElementType.Int8 ? zp.ToInt8Array()[0] : zp.ToUInt8Array()[0]);
        }
        Assert.Contains(g.Nodes, q => q.OpType == "QuantizeLinear" && g.TryGetInitializer(q.Inputs[2], out var z) && z.ElementType == OnnxElementType.Int8);
        foreach (var op in g.Nodes.Where(n => n.OpType is "Conv" or "Gemm"))
        {
            Assert.True(g.TryGetInitializer(g.Producer(op.Inputs[1])!.Inputs[0], out var w));
            Assert.All(w.ToInt8Array(), v => Assert.InRange(v, (sbyte)-63, (sbyte)63));
        }
    }

    [Theory]
    [InlineData(CalibrationMethod.Entropy)]
    [InlineData(CalibrationMethod.Auto)]
    public void HistogramMethods_KeepAccuracyWithinOnePointOfMinMax(CalibrationMethod method)
    {
        // Entropy searches each side of an asymmetric tensor (the logits) on its own; Auto picks per tensor.
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        IDataView test = context.Data.LoadFromEnumerable(Test.Value);
        var options = Options();
        options.MinOutputCosine = 0;
        using var minMax = context.Quantization.PostTraining(options).Fit(calibration);
        options.CalibrationMethod = method;
        using var other = context.Quantization.PostTraining(options).Fit(calibration);
        double a = Accuracy(context, minMax, test), b = Accuracy(context, other, test);
        Assert.True(b >= a - 0.01, $"{method} {b:P2} vs MinMax {a:P2}");
    }

    [Fact]
    public void FourBitActivations_AreCalibratedForFourBits_MseClipsFarMoreAndKeepsMoreAccuracyThanMinMax()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        IDataView test = context.Data.LoadFromEnumerable(Test.Value);
        var options = Options(QuantizationPrecision.W4A4);
        options.MinOutputCosine = 0;
        using var minMax = context.Quantization.PostTraining(options).Fit(calibration);
        options.CalibrationMethod = CalibrationMethod.Mse;
        using var mse = context.Quantization.PostTraining(options).Fit(calibration);
        double a = Accuracy(context, minMax, test), b = Accuracy(context, mse, test);
        Assert.True(b >= a + 0.005, $"W4A4 Mse {b:P2} vs MinMax {a:P2}");
        // Fit calibrates the activations at the width they get.
        OnnxModel prepared = PostTrainingEstimator.Prepare(options, "fmnistnet");
        var table = ModelCalibrator.Run(context, PostTrainingEstimator.CalibrationOptions(options), calibration, prepared).Table;
        Assert.All(table.Where(e => e.Kind == TensorKind.Activation && e.RangeSource is null), e => Assert.Equal(4, e.Bits));
    }

    [Fact]
    public void BadInput_ClearErrors_NoPartialFiles_UnsupportedOpsListed()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value.Take(50));

        // Empty calibration data.
        var empty = Assert.Throws<InvalidOperationException>(() => context.Quantization.PostTraining(Options()).Fit(context.Data.LoadFromEnumerable(Calibration.Value.Take(0))));
        Assert.Contains("calibration data is empty", empty.Message);

        // Non-finite calibration values: counted and left out; all-NaN: an error naming the input.
        var rows = Calibration.Value.Take(50).Select(r => new FashionMnist.Row { Input = (float[])r.Input.Clone(), Label = r.Label }).ToList();
        rows[0].Input[3] = float.NaN;
        var nanOptions = Options();
        nanOptions.MinOutputCosine = 0;   // 50 rows calibrate too coarsely for the default target; this checks NaN handling
        using (var withNaN = context.Quantization.PostTraining(nanOptions).Fit(context.Data.LoadFromEnumerable(rows)))
            Assert.All(withNaN.Nodes, n => Assert.NotNull(n.Precision));
        var nan = Enumerable.Range(0, 4).Select(_ => new FashionMnist.Row { Input = Enumerable.Repeat(float.NaN, 784).ToArray() });
        Assert.Contains("no finite values", Assert.Throws<InvalidOperationException>(() => context.Quantization.PostTraining(Options()).Fit(context.Data.LoadFromEnumerable(nan))).Message);

        // An already quantized model.
        using var quantized = context.Quantization.PostTraining(Options()).Fit(calibration);
        var again = Options();
        again.ModelPath = null;
        again.ModelBytes = quantized.QuantizedModel;
        Assert.Contains("already quantized", Assert.Throws<InvalidOperationException>(() => context.Quantization.PostTraining(again).Fit(calibration)).Message);

        // An output path that cannot be written: nothing is left behind.
        string blocker = Path.Combine(_dir, "not-a-folder");
        File.WriteAllText(blocker, "x");
        Assert.ThrowsAny<IOException>(() => quantized.SaveAsOnnx(Path.Combine(blocker, "model.onnx")));
        string folderAsTarget = Path.Combine(_dir, "taken");
        Directory.CreateDirectory(folderAsTarget);
        Assert.ThrowsAny<IOException>(() => quantized.SaveAsOnnx(folderAsTarget));
        Assert.Equal(new[] { "not-a-folder", "taken" }, Directory.GetFileSystemEntries(_dir).Select(p => Path.GetFileName(p)!).Order().ToArray());

        // Ops the quantizer does not handle (a LogSoftmax on the logits) stay float and are listed with the reason.
        var model = OnnxModel.Load(TestData.FmnistNet);
        var g = model.Graph;
        string logits = g.Outputs[0].Name, raw = g.FreshName("raw_logits");
        g.Producer(logits)!.Outputs[0] = raw;
        g.AddNode("LogSoftmax", [raw], [logits], "log_softmax").SetInt("axis", -1);
        var withSoftmax = Options();
        withSoftmax.ModelPath = null;
        withSoftmax.ModelBytes = model.ToBytes();
        using var partly = context.Quantization.PostTraining(withSoftmax).Fit(calibration);
        var softmax = Assert.Single(partly.FloatNodes);
        Assert.Equal(("log_softmax", "LogSoftmax", "op type LogSoftmax is not quantized"), (softmax.Name, softmax.OpType, softmax.Reason));

        // A symbolic non-batch dimension without a declared shape.
        var dynamic = OnnxModel.Load(TestData.FmnistNet);
        dynamic.Graph.Proto.Input[0].Type.TensorType.Shape.Dim[2].DimParam = "height";
        var dynamicOptions = Options();
        dynamicOptions.ModelPath = null;
        dynamicOptions.ModelBytes = dynamic.ToBytes();
        var shapeError = Assert.Throws<ArgumentException>(() => context.Quantization.PostTraining(dynamicOptions).Fit(calibration));
        Assert.Contains("declare it in InputShapes", shapeError.Message);
        dynamicOptions.InputShapes["input"] = [1, 28, 28];
        using var declared = context.Quantization.PostTraining(dynamicOptions).Fit(calibration);
        Assert.All(declared.Nodes, n => Assert.NotNull(n.Precision));
    }

    [Fact]
    public void Compare_ReportsAccuracyAgreementLayersSizeAndBudget()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value.Take(200));
        IDataView test = context.Data.LoadFromEnumerable(Test.Value.Take(300));
        var options = Options();
        options.SampleCount = 200;
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);

        var c = context.Quantization.Compare(TestData.FmnistNet, quantized, test,
            new ComparisonOptions { LabelColumnName = "Label", MaxAccuracyDrop = 1.0, LatencyRepeats = 1 });
        Assert.Equal(300, c.Rows);
        Assert.InRange(c.FloatAccuracy!.Value, 0.85, 1.0);
        Assert.Equal((c.FloatAccuracy!.Value - c.QuantizedAccuracy!.Value) * 100, c.AccuracyDrop!.Value, 9);
        Assert.InRange(c.Top1Agreement, 0.97, 1.0);
        Assert.InRange(c.MeanCosineSimilarity, 0.99, 1.0);
        Assert.InRange(c.OutputSqnrDb, 15, 80);
        // Every quantized activation but the graph input and the compared output, worst first.
        var g = OnnxModel.Load(TestData.FmnistNet).Graph;
        var expected = g.Nodes.Where(n => n.OpType is "Relu" or "MaxPool" or "Flatten").Select(n => n.Outputs[0]).Order().ToArray();
        Assert.Equal(expected, c.Layers.Select(l => l.TensorName).Order().ToArray());
        Assert.Equal(c.Layers.OrderBy(l => l.SqnrDb).Select(l => l.TensorName), c.Layers.Select(l => l.TensorName));
        Assert.All(c.Layers, l => Assert.InRange(l.SqnrDb, 10, 80));
        Assert.InRange((double)c.QuantizedModelBytes / c.FloatModelBytes, 0.2, 0.3);
        Assert.True(c.FloatTime > TimeSpan.Zero && c.QuantizedTime > TimeSpan.Zero);
        Assert.Equal(c.AccuracyDrop <= 1.0, c.WithinBudget);
        Assert.Contains("top-1 agreement", c.ToString());

        // Without a label the budget applies to disagreement; an impossible budget says no.
        var strict = context.Quantization.Compare(TestData.FmnistNet, quantized, test,
            new ComparisonOptions { MaxAccuracyDrop = 0, PerLayer = false, MeasureLatency = false });
        Assert.Null(strict.AccuracyDrop);
        Assert.Empty(strict.Layers);
        Assert.Equal(strict.Top1Agreement == 1.0, strict.WithinBudget);
        Assert.Contains("Could not find input column 'Nope'", Assert.Throws<ArgumentOutOfRangeException>(() =>
            context.Quantization.Compare(TestData.FmnistNet, quantized, test, new ComparisonOptions { LabelColumnName = "Nope" })).Message);
    }

    private sealed class Scored
    {
        [Microsoft.ML.Data.ColumnName("logits")]
        public float[] Logits { get; set; } = [];
        public uint Label { get; set; }
    }
}

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

        var floatScoring = context.Quantization.ScoreOnnxModel(new OnnxScoringOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1 }).Fit(test);
        double fp32 = Accuracy(context, floatScoring, test), int8 = Accuracy(context, quantized, test);
        Assert.True(int8 >= fp32 - 0.01, $"INT8 {int8:P2} vs FP32 {fp32:P2}");

        // ONNX Runtime runs integer kernels: its optimized graph has QLinearConv and no float Conv.
        string optimized = Path.Combine(_dir, "optimized.onnx");
        using (var so = new SessionOptions { OptimizedModelFilePath = optimized, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED })
        using (new InferenceSession(quantized.QuantizedModel, so)) { }
        var ops = OnnxModel.Load(optimized).Graph.Nodes.Select(n => n.OpType).ToList();
        Assert.Contains("QLinearConv", ops);
        Assert.DoesNotContain("Conv", ops);
    }

    private sealed class Scored
    {
        [Microsoft.ML.Data.ColumnName("logits")]
        public float[] Logits { get; set; } = [];
        public uint Label { get; set; }
    }
}

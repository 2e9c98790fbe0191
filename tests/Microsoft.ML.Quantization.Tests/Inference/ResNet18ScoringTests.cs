using Microsoft.ML.Quantization.Inference;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Inference;

public sealed class ResNet18ScoringTests
{
    [Fact]
    public void ImagesFromMLNetTransformsFeedTheFixedBatchResNet18()
    {
        var context = new MLContext(seed: 1);
        FashionMnist.Set set = FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 2);
        IDataView inputs = ResNet18Images.Load(context, set, 2);

        var options = new OnnxModelScoringOptions { ModelPath = ResNet18Images.ModelPath, BatchSize = 1, IntraOpNumThreads = 1 };
        options.Outputs.Add(new OnnxColumnBinding("Features", ResNet18Images.OutputTensor));
        using OnnxModelScoringTransformer transformer = context.Quantization.ScoreOnnxModel(options).Fit(inputs);
        float[][] features = context.Data.CreateEnumerable<FeatureRow>(transformer.Transform(inputs), false).Select(f => f.Features).ToArray();

        Assert.Equal(2, features.Length);
        Assert.All(features, f => Assert.Equal(512, f.Length));
        Assert.All(features, f => Assert.True(f.All(float.IsFinite) && f.Any(v => v > 0)));   // post-ReLU average pool
        Assert.NotEqual(features[0], features[1]);                                            // different images, different features
    }

    [Fact]
    public void FixedBatchResNet18RunsAtBatch16AfterAnAutomaticSymbolicBatch()
    {
        // 20 images: one full batch of 16 and a short one of 4. The graph (IR 3, opset 8, batch fixed at 1)
        // is upgraded to opset 13 and given a symbolic batch by the transform itself.
        var context = new MLContext(seed: 1);
        FashionMnist.Set set = FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 20);
        IDataView inputs = context.Data.Cache(ResNet18Images.Load(context, set, 20));

        float[][] Score(int batchSize)
        {
            var options = new OnnxModelScoringOptions { ModelPath = ResNet18Images.ModelPath, BatchSize = batchSize, IntraOpNumThreads = 1 };
            options.Outputs.Add(new OnnxColumnBinding("Features", ResNet18Images.OutputTensor));
            using OnnxModelScoringTransformer transformer = context.Quantization.ScoreOnnxModel(options).Fit(inputs);
            return context.Data.CreateEnumerable<FeatureRow>(transformer.Transform(inputs), false).Select(f => f.Features).ToArray();
        }

        float[][] one = Score(1), sixteen = Score(16);
        Assert.Equal(20, sixteen.Length);
        for (int i = 0; i < one.Length; i++)
            Onnx.OrtRunner.AssertClose(one[i], sixteen[i], 1e-4);
    }

    [Fact]
    public void PinnedFixedBatch_EqualBatchSizePadsTheLastBatch_OtherBatchSizeIsAClearError()
    {
        // FmnistNet with a fixed batch of 2 whose Flatten became Reshape to [6272] and back to [2, 3136]:
        // the first Reshape folds the batch away, so it cannot be made symbolic.
        var model = Microsoft.ML.Quantization.Onnx.OnnxModel.Load(TestData.FmnistNet);
        var g = model.Graph;
        g.Proto.Input[0].Type.TensorType.Shape.Dim[0].DimValue = 2;
        var flatten = g.Nodes.First(n => n.OpType == "Flatten");
        string flat = flatten.Outputs[0], folded = g.FreshName("folded");
        flatten.OpType = "Reshape";
        flatten.RemoveAttribute("axis");
        flatten.Outputs[0] = folded;
        g.SetInitializer(Microsoft.ML.Quantization.Onnx.OnnxTensor.FromInt64("pinned", [1], [2 * 3136]));
        g.SetInitializer(Microsoft.ML.Quantization.Onnx.OnnxTensor.FromInt64("unfolded", [2], [2, 3136]));
        flatten.Inputs.Add("pinned");
        g.AddNode("Reshape", [folded, "unfolded"], [flat]);
        g.SortTopologically();
        string output = g.Outputs[0].Name;
        byte[] bytes = model.ToBytes();

        var context = new MLContext(seed: 1);
        FashionMnist.Set set = FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 5);
        IDataView data = FashionMnist.Load(context, set);
        var options = new OnnxModelScoringOptions { ModelBytes = bytes, BatchSize = 2, IntraOpNumThreads = 1 };
        options.Inputs.Add(new OnnxColumnBinding("input", "input"));
        options.Outputs.Add(new OnnxColumnBinding("Features", output));
        using OnnxModelScoringTransformer padded = context.Quantization.ScoreOnnxModel(options).Fit(data);
        float[][] rows = context.Data.CreateEnumerable<FeatureRow>(padded.Transform(data), false).Select(f => f.Features).ToArray();
        Assert.Equal(5, rows.Length);                        // the fifth row ran in a padded batch of 2

        var reference = new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet, BatchSize = 1, IntraOpNumThreads = 1 };
        reference.Outputs.Add(new OnnxColumnBinding("Features", output));
        using OnnxModelScoringTransformer single = context.Quantization.ScoreOnnxModel(reference).Fit(data);
        float[][] expected = context.Data.CreateEnumerable<FeatureRow>(single.Transform(data), false).Select(f => f.Features).ToArray();
        for (int i = 0; i < 5; i++)
            Onnx.OrtRunner.AssertClose(expected[i], rows[i], 1e-5);

        options.BatchSize = 4;
        var error = Assert.Throws<InvalidOperationException>(() => context.Quantization.ScoreOnnxModel(options).Fit(data));
        Assert.Contains("fixed batch dimension of 2", error.Message);
        Assert.Contains("BatchSize is 4", error.Message);
        Assert.Contains("pins the batch", error.Message);
    }

    private sealed class FeatureRow
    {
        public float[] Features { get; set; } = [];
    }

    private sealed class Pixels
    {
        [Microsoft.ML.Data.VectorType(ResNet18Images.InputSize)]
        public float[] OriginalInput { get; set; } = new float[ResNet18Images.InputSize];
    }
}

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

        var options = new OnnxScoringOptions { ModelPath = ResNet18Images.ModelPath, BatchSize = 1, IntraOpNumThreads = 1 };
        options.Outputs.Add(new OnnxColumnBinding("Features", ResNet18Images.OutputTensor));
        using OnnxScoringTransformer transformer = context.Quantization.ScoreOnnxModel(options).Fit(inputs);
        float[][] features = context.Data.CreateEnumerable<FeatureRow>(transformer.Transform(inputs), false).Select(f => f.Features).ToArray();

        Assert.Equal(2, features.Length);
        Assert.All(features, f => Assert.Equal(512, f.Length));
        Assert.All(features, f => Assert.True(f.All(float.IsFinite) && f.Any(v => v > 0)));   // post-ReLU average pool
        Assert.NotEqual(features[0], features[1]);                                            // different images, different features
    }

    [Fact]
    public void FixedBatchDimensionRefusesALargerBatchWithAClearError()
    {
        var context = new MLContext(seed: 1);
        var options = new OnnxScoringOptions { ModelPath = ResNet18Images.PreprocessPath, BatchSize = 16 };
        var error = Assert.Throws<InvalidOperationException>(() => context.Quantization.ScoreOnnxModel(options).Fit(
            context.Data.LoadFromEnumerable(new[] { new Pixels() })));
        Assert.Contains("fixed batch dimension of 1", error.Message);
        Assert.Contains("OriginalInput", error.Message);
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

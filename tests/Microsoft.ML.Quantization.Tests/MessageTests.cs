using Microsoft.ML.Data;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests;

/// <summary>
/// What a user reads when a column is missing or a model is wrong: the columns the data has, the option that binds the
/// column, and the model's file name (never "(model bytes)" when a path was given). Each error comes from Fit,
/// GetOutputSchema or Transform, before any row is scored.
/// </summary>
public sealed class MessageTests
{
    /// <summary>Fashion-MNIST rows whose image column is named "Pixels": FmnistNet's input "input" is not there.</summary>
    private static IDataView Renamed(MLContext context, int rows = 32)
        => context.Data.LoadFromEnumerable(FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: rows))
            .Select(r => new PixelsRow { Pixels = r.Input, Label = r.Label }));

    private static void AssertMissingInput(string message, string option)
    {
        Assert.Contains("Could not find input column 'input' (the data has 'Pixels', 'Label').", message);
        Assert.Contains($"Model input 'input' reads the column of the same name; to read another column, bind it in {option}", message);
    }

    [Fact]
    public void PostTraining_MissingColumn_ListsTheColumnsAndPointsToPostTrainingOptionsInputs()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Renamed(context);
        var estimator = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 16 });
        AssertMissingInput(Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(data)).Message, "PostTrainingOptions.Inputs");
        AssertMissingInput(Assert.Throws<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Internal.SchemaShapes.FromSchema(data.Schema))).Message,
            "PostTrainingOptions.Inputs");

        // Bound to the right column, it works; bound to a wrong one, the error says which binding.
        var bound = new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 16, Inputs = { new OnnxColumnBinding("Pixels", "input") } };
        using QuantizedModelTransformer model = context.Quantization.PostTraining(bound).Fit(data);
        Assert.Equal(["Pixels"], model.InputColumnNames);
        var wrong = new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 16, Inputs = { new OnnxColumnBinding("Image", "input") } };
        string message = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.PostTraining(wrong).Fit(data)).Message;
        Assert.Contains("Could not find input column 'Image' (the data has 'Pixels', 'Label'). PostTrainingOptions.Inputs binds model input 'input' to this column.", message);
    }

    [Theory]
    [InlineData(QuantizedBackend.OnnxRuntime)]
    [InlineData(QuantizedBackend.Native)]
    public void QuantizedTransform_MissingColumn_ListsTheColumns(QuantizedBackend backend)
    {
        var context = new MLContext(seed: 1);
        var options = new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 16, Backend = backend, AllowBackendFallback = false };
        using QuantizedModelTransformer model = context.Quantization.PostTraining(options)
            .Fit(FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 16)));
        AssertMissingInput(Assert.Throws<ArgumentOutOfRangeException>(() => model.Transform(Renamed(context))).Message, "PostTrainingOptions.Inputs");
    }

    [Fact]
    public void CalibrateAndScore_MissingColumn_PointToTheirOwnOptions()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Renamed(context);
        AssertMissingInput(Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Calibrate(TestData.FmnistNet, sampleCount: 16).Fit(data)).Message,
            "CalibrationEstimatorOptions.Inputs");
        AssertMissingInput(Assert.Throws<ArgumentOutOfRangeException>(() =>
            context.Quantization.Calibrate(TestData.FmnistNet).GetOutputSchema(Internal.SchemaShapes.FromSchema(data.Schema))).Message, "CalibrationEstimatorOptions.Inputs");
        AssertMissingInput(Assert.Throws<ArgumentOutOfRangeException>(() =>
            context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet }).Fit(data)).Message, "OnnxModelScoringOptions.Inputs");
    }

    [Fact]
    public void AwareTraining_MissingFeaturesOrLabel_PointToItsColumnOptions()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Renamed(context);
        var estimator = context.Quantization.AwareTraining(new AwareTrainingOptions { ModelPath = TestData.FmnistNetBn, Epochs = 1 });
        string message = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(data)).Message;
        Assert.Contains("Could not find input column 'input' (the data has 'Pixels', 'Label'). Set AwareTrainingOptions.FeatureColumnName", message);
        Assert.Contains("set AwareTrainingOptions.FeatureColumnName to read another",
            Assert.Throws<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Internal.SchemaShapes.FromSchema(data.Schema))).Message);

        var noLabel = context.Quantization.AwareTraining(new AwareTrainingOptions { ModelPath = TestData.FmnistNetBn, Epochs = 1, FeatureColumnName = "Pixels", LabelColumnName = "Class" });
        Assert.Contains("Could not find input column 'Class' (the data has 'Pixels', 'Label'). Set AwareTrainingOptions.LabelColumnName",
            Assert.Throws<ArgumentOutOfRangeException>(() => noLabel.Fit(data)).Message);
    }

    [Fact]
    public void AwareTraining_FeatureColumnName_BindsTheDeployedModelToo()
    {
        // PTQ-first within the budget (no libtorch): the quantized model reads the features column it was trained on.
        var context = new MLContext(seed: 1);
        IDataView data = Renamed(context, rows: 64);
        var options = new AwareTrainingOptions
        {
            ModelPath = TestData.FmnistNetBn, FeatureColumnName = "Pixels", Epochs = 1, CalibrationSampleCount = 32, MaxAccuracyDrop = 100,
            ValidationData = data,
        };
        using QuantizedModelTransformer model = context.Quantization.AwareTraining(options).Fit(data);
        Assert.Equal("PostTraining", model.AwareTraining!.Path);
        Assert.Equal(["Pixels"], model.InputColumnNames);
        Assert.Contains("Pixels", context.Quantization.AwareTraining(options).GetOutputSchema(Internal.SchemaShapes.FromSchema(data.Schema)).Select(c => c.Name));
        Assert.Equal(64, context.Data.CreateEnumerable<Scored>(model.Transform(data), reuseRowObject: false).Count(r => r.Logits.Length == 10));
    }

    [Fact]
    public void Compare_MissingLabel_PointsToComparisonOptions()
    {
        var context = new MLContext(seed: 1);
        IDataView data = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 16));
        using QuantizedModelTransformer model = context.Quantization.PostTraining(TestData.FmnistNet, sampleCount: 16).Fit(data);
        string message = Assert.Throws<ArgumentOutOfRangeException>(() =>
            context.Quantization.Compare(TestData.FmnistNet, model, data, new ComparisonOptions { LabelColumnName = "Class", MeasureLatency = false })).Message;
        Assert.Contains("Could not find input column 'Class' (the data has 'input', 'Label'). ComparisonOptions.LabelColumnName names it", message);
    }

    [Fact]
    public void AModelGivenByPath_IsNamedByItsPath_InPostTrainingsMessages()
    {
        var context = new MLContext(seed: 1);
        IDataView data = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 16));
        // A tensor that is not in the graph: PostTraining hands prepared bytes to scoring, which names the file.
        var noTensor = new PostTrainingOptions { ModelPath = TestData.FmnistNet, Outputs = { new OnnxColumnBinding("x", "nope") } };
        string message = Assert.Throws<ArgumentException>(() => context.Quantization.PostTraining(noTensor).GetOutputSchema(Internal.SchemaShapes.FromSchema(data.Schema))).Message;
        Assert.Contains($"Model '{TestData.FmnistNet}' has no tensor 'nope' to output.", message);
        // PostTraining's calibration runs on prepared bytes; what it says on mlContext.Log names the file too.
        var log = new List<string>();
        context.Log += (_, e) => { lock (log) log.Add(e.RawMessage); };
        using var model = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 16 }).Fit(data);
        Assert.Contains(log, m => m.StartsWith($"Calibrating '{TestData.FmnistNet}': ", StringComparison.Ordinal));
        Assert.DoesNotContain(log, m => m.Contains("(model bytes)", StringComparison.Ordinal) || m.Contains("(quantized model)", StringComparison.Ordinal));
    }

    private sealed class PixelsRow
    {
        [VectorType(FashionMnist.Pixels)]
        public float[] Pixels { get; set; } = [];

        public uint Label { get; set; }
    }

    private sealed class Scored
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }
}

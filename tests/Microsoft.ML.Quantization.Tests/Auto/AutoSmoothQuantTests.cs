using Google.Protobuf;
using Microsoft.ML.Quantization.Auto;
using Microsoft.ML.Quantization.Onnx.Proto;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;
using Xunit.Abstractions;

namespace Microsoft.ML.Quantization.Tests.Auto;

/// <summary>
/// SmoothQuant in the automatic search. FmnistNet with transformer-like activation outliers planted in front of fc1, its function
/// unchanged: a float Mul (kept float, as a LayerNorm with outlier gains would be) scales 16 of fc1's 3136 input channels by 500
/// and fc1's weights for them are divided by 500. Per-tensor INT8 then loses the other channels' resolution; the search detects
/// the outliers, tries SmoothQuant, and meets the constraint with it. Plain FmnistNet has no outliers and gets no SmoothQuant trial.
/// </summary>
public sealed class AutoSmoothQuantTests(ITestOutputHelper output)
{
    private const string Planted = "planted_outlier_gain";
    private static readonly Lazy<List<FashionMnist.Row>> Train =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 200)));
    private static readonly Lazy<List<FashionMnist.Row>> Validation =
        new(() => FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 400)));

    [Fact]
    public void ActivationOutliers_SmoothQuantIsTried_AndMeetsTheConstraint()
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value), validation = context.Data.LoadFromEnumerable(Validation.Value);
        var postTraining = new PostTrainingOptions { ModelBytes = WithOutliers(), IntraOpNumThreads = 1, SampleCount = 200 };
        postTraining.ExcludedNodes.Add(Planted);
        var options = new AutoQuantizationOptions { PostTraining = postTraining, LabelColumnName = "Label", MaxAccuracyDrop = 0.5, MaxTrials = 6 };
        using var result = context.Quantization.Auto(options).Execute(train, validation);
        output.WriteLine($"float accuracy {result.FloatMetric:F2}\n{result}");

        QuantizationTrial int8 = result.Trials[0];
        Assert.Equal("INT8 MinMax", int8.Configuration);
        Assert.False(int8.Accepted, result.ToString());   // the outliers cost plain INT8 more than half a point
        QuantizationTrial smoothed = Assert.Single(result.Trials, t => t.SmoothQuantAlpha is not null && t.Precision == QuantizationPrecision.Int8 && t.NodePrecision.Count == 0 && t.FloatNodes.Count == 0);
        Assert.Contains("SmoothQuant alpha", smoothed.Configuration);
        Assert.True(smoothed.Metric > int8.Metric, result.ToString());
        Assert.True(result.ConstraintMet, result.ToString());
        Assert.NotNull(result.BestTrial.SmoothQuantAlpha);

        // The chosen model (smoothed) measures on Compare what its trial measured.
        var comparison = context.Quantization.Compare(TestData.FmnistNet, result.Model, validation,
            new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
        Assert.Equal(result.BestTrial.Metric, comparison.QuantizedAccuracy!.Value * 100, 6);

        // ApplyTo gives PostTraining the trial's alpha.
        var again = new PostTrainingOptions();
        smoothed.ApplyTo(again);
        Assert.True(again.SmoothQuant);
        Assert.Equal([smoothed.SmoothQuantAlpha!.Value], again.SmoothQuantAlphas);
    }

    [Fact]
    public void NoOutliers_NoSmoothQuantTrial()
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value), validation = context.Data.LoadFromEnumerable(Validation.Value.Take(200));
        var options = new AutoQuantizationOptions
        {
            PostTraining = new PostTrainingOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 200 },
            LabelColumnName = "Label", MaxTrials = 5,
        };
        using var result = context.Quantization.Auto(options).Execute(train, validation);
        Assert.All(result.Trials, t => Assert.Null(t.SmoothQuantAlpha));
    }

    /// <summary>FmnistNet with a float Mul before fc1 that scales 16 input channels by 500, and fc1's weights for them divided by 500.</summary>
    private static byte[] WithOutliers()
    {
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(TestData.FmnistNet));
        var graph = model.Graph;
        NodeProto fc1 = graph.Node.First(n => n.OpType == "Gemm");
        var weight = graph.Initializer.Single(t => t.Name == fc1.Input[1]);
        Assert.Equal(1, fc1.Attribute.Single(a => a.Name == "transB").I);
        int outputs = (int)weight.Dims[0], channels = (int)weight.Dims[1];
        float[] w = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(weight.RawData.Span).ToArray();
        var gain = Enumerable.Repeat(1f, channels).ToArray();
        for (int c = 0; c < channels; c += channels / 16)
            gain[c] = 500;
        for (int o = 0; o < outputs; o++)
            for (int c = 0; c < channels; c++)
                w[o * channels + c] /= gain[c];
        weight.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.AsSpan()));
        var gainTensor = new TensorProto { Name = Planted + "_value", DataType = 1, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(gain.AsSpan())) };
        gainTensor.Dims.Add(channels);
        graph.Initializer.Add(gainTensor);
        var mul = new NodeProto { OpType = "Mul", Name = Planted };
        mul.Input.AddRange([fc1.Input[0], gainTensor.Name]);
        mul.Output.Add(Planted + "_output");
        graph.Node.Insert(graph.Node.IndexOf(fc1), mul);
        fc1.Input[0] = Planted + "_output";
        return model.ToByteArray();
    }
}

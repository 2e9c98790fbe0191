using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.PostTraining;

/// <summary>
/// The sensitivity analysis of PostTraining on FmnistNet at widths where plain quantization misses the target: it
/// measures each compute node quantized alone, leaves the most sensitive ones float, and the written model meets the
/// target on the calibration rows.
/// </summary>
public sealed class SensitivityTests
{
    private static readonly Lazy<List<FashionMnist.Row>> Calibration =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 200)));

    private static PostTrainingOptions Options() => new()
    {
        ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 200, SensitivityRowCount = 64,
        Precision = new QuantizationPrecision(3, 3),
    };

    [Fact]
    public void CosineTarget_KeepsTheMostSensitiveNodesFloat_AndTheWrittenModelMeetsIt()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        var options = Options();
        options.MinOutputCosine = 0.98;   // 0.99 on the calibration rows
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);

        var report = quantized.Sensitivity!;
        Assert.Equal("output cosine", report.Metric);
        Assert.True(report.AllQuantized < 0.99, $"3-bit FmnistNet already reaches {report.AllQuantized:F4}");
        Assert.True(report.TargetMet);
        Assert.True(report.Final >= 0.99);
        Assert.Equal(report.Nodes.Select(n => n.Alone).Order(), report.Nodes.Select(n => n.Alone));   // most sensitive first
        var kept = report.KeptFloat.Select(n => n.Name).ToList();
        Assert.NotEmpty(kept);
        Assert.True(kept.Count < report.Nodes.Count, $"all: {report.AllQuantized:F4}, final {report.Final:F4}: " + string.Join("; ", report.Nodes.Select(n => $"{n.Name} {n.Alone:F4} {n.KeptFloat}")));
        Assert.All(kept, name => Assert.StartsWith("kept float by the sensitivity analysis", quantized.Nodes.Single(n => n.Name == name).Reason));
        // The written QDQ model measures what the simulation measured.
        var comparison = context.Quantization.Compare(TestData.FmnistNet, quantized, context.Data.LoadFromEnumerable(Calibration.Value.Take(64)),
            new ComparisonOptions { PerLayer = false, MeasureLatency = false });
        Assert.InRange(comparison.MeanCosineSimilarity, 0.985, 1.0);

        options.MinOutputCosine = 0;
        using var plain = context.Quantization.PostTraining(options).Fit(calibration);
        Assert.Null(plain.Sensitivity);
        Assert.All(plain.Nodes, n => Assert.NotNull(n.Precision));
    }

    [Fact]
    public void FourBitWeights_TheMostSensitiveGetEightBitWeightsBeforeAnyNodeIsLeftFloat()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        var options = Options();
        options.Precision = QuantizationPrecision.W4A8;
        options.MinOutputCosine = 0.9995;
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);
        var report = quantized.Sensitivity!;
        var raised = report.Raised.Select(n => n.Name).ToHashSet();
        Assert.True(report.AllQuantized < report.Target, $"W4A8 already reaches {report.AllQuantized:F5}");
        Assert.NotEmpty(raised);
        Assert.True(report.TargetMet, $"final {report.Final:F5}");
        Assert.Empty(report.KeptFloat);
        // Raised nodes are written with int8 weights and W8A8 precision, the others with int4.
        var g = Microsoft.ML.Quantization.Onnx.OnnxModel.Parse(quantized.QuantizedModel).Graph;
        foreach (var node in quantized.Nodes.Where(n => n.OpType is "Conv" or "Gemm"))
        {
            var op = g.Nodes.Single(n => n.Name == node.Name);
            Assert.True(g.TryGetInitializer(g.Producer(op.Inputs[1])!.Inputs[0], out var w));
            var expected = raised.Contains(node.Name) ? Microsoft.ML.Quantization.Onnx.OnnxElementType.Int8 : Microsoft.ML.Quantization.Onnx.OnnxElementType.Int4;
            Assert.Equal(expected, w.ElementType);
            Assert.Equal(raised.Contains(node.Name) ? QuantizationPrecision.Int8 : QuantizationPrecision.W4A8, node.Precision);
        }
    }

    [Fact]
    public void AccuracyTarget_WithALabel_ReplacesTheCosineTarget()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        var options = Options();
        options.Precision = new QuantizationPrecision(2, 4);
        options.LabelColumnName = "Label";
        options.MaxAccuracyDrop = 0;
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);
        var report = quantized.Sensitivity!;
        Assert.Equal("accuracy drop", report.Metric);
        Assert.True(report.AllQuantized > 0, $"2-bit weights lose no accuracy ({report.AllQuantized})");
        Assert.True(report.TargetMet && report.Final <= 0);
        Assert.NotEmpty(report.KeptFloat);

        Assert.Throws<ArgumentException>(() => context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, MaxAccuracyDrop = 1 }));
    }
}

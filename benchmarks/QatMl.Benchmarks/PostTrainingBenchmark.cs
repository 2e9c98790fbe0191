using Microsoft.ML;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// Issue 5's figures, each a command:
///  - ptq-accuracy: FmnistNet over the 10k test images, calibrated on the 1000 listed training images, for each scheme:
///    accuracy, drop vs FP32, top-1 agreement, file size vs the BN-folded FP32 file our writer produces, weight bytes.
///    Then ResNet18 INT8: mean cosine similarity of its 512 features vs FP32 on 200 images, and file size.
///  - ptq-speed: ONNX Runtime INT8 vs FP32 on ResNet18 at batch 1 and 16, one thread, same run.
/// </summary>
internal static class PostTrainingBenchmark
{
    internal static void Accuracy(BenchmarkSettings settings, bool resnet)
    {
        var context = new MLContext(seed: 0);
        string fmnist = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx");
        IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
        IDataView test = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadTest(settings.DataFolder)));
        long foldedFloatBytes = FoldedFloatBytes(fmnist);
        long floatWeightBytes = FloatWeightBytes(fmnist);
        Console.WriteLine($"FmnistNet PTQ, calibrated on 1000 training images, evaluated on {test.GetRowCount()} test images (1 ORT thread).");
        Console.WriteLine($"  BN-folded FP32 file written by QatMl: {foldedFloatBytes:N0} bytes; FP32 weights {floatWeightBytes:N0} bytes");
        Console.WriteLine("  scheme                                           FP32     quant    drop   agree   size ratio  weight-bytes ratio");
        var schemes = new (string Name, Action<PostTrainingOptions> Configure)[]
        {
            ("INT8 per-channel, MinMax", o => { }),
            ("INT8 per-channel, Percentile 99.99", o => o.CalibrationMethod = CalibrationMethod.Percentile),
            ("INT8 per-channel, Entropy", o => o.CalibrationMethod = CalibrationMethod.Entropy),
            ("INT8 per-channel, Mse", o => o.CalibrationMethod = CalibrationMethod.Mse),
            ("INT8 per-channel, Auto", o => o.CalibrationMethod = CalibrationMethod.Auto),
            ("W8A8 per-tensor, MinMax", o => o.WeightsPerChannel = false),
            ("W4A8 per-channel, MinMax", o => o.Precision = QuantizationPrecision.W4A8),
            ("W4A8 per-channel, Mse", o => { o.Precision = QuantizationPrecision.W4A8; o.CalibrationMethod = CalibrationMethod.Mse; }),
            ("W4A8 middle, INT8 first/last layer", o => { o.Precision = QuantizationPrecision.W4A8; o.FirstLayerPrecision = o.LastLayerPrecision = QuantizationPrecision.Int8; }),
            ("W4A4 per-channel, Mse", o => { o.Precision = QuantizationPrecision.W4A4; o.CalibrationMethod = CalibrationMethod.Mse; }),
            ("W4A4 Mse, sensitivity analysis (cosine 0.99)", o => { o.Precision = QuantizationPrecision.W4A4; o.CalibrationMethod = CalibrationMethod.Mse; o.MinOutputCosine = 0.99; }),
        };
        foreach (var (name, configure) in schemes)
        {
            // The sensitivity analysis off unless the scheme asks for it: each row shows its calibration as is.
            var options = new PostTrainingOptions { ModelPath = fmnist, IntraOpNumThreads = 1, SampleCount = 1000, MinOutputCosine = 0 };
            configure(options);
            using QuantizedModelTransformer quantized = context.Quantization.PostTraining(options).Fit(calibration);
            var c = context.Quantization.Compare(fmnist, quantized, test, new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
            long weightBytes = QuantizedWeightBytes(quantized.QuantizedModel);
            Console.WriteLine($"  {name,-46} {c.FloatAccuracy,7:P2} {c.QuantizedAccuracy,8:P2} {c.AccuracyDrop,6:F2} {c.Top1Agreement,8:P2} {(double)quantized.QuantizedModel.Length / foldedFloatBytes,9:F3}x {(double)weightBytes / floatWeightBytes,12:F3}x");
        }
        Console.WriteLine("  (every scheme but the last quantizes the input, all Conv/Gemm weights and activations, and the logits; Relu folded into the output quantization)");

        if (!resnet)
            return;
        IDataView images = context.Data.Cache(ResNet18Images.Load(context, FashionMnist.ReadTest(settings.DataFolder, limit: 200), 200));
        var resnetOptions = new PostTrainingOptions { ModelPath = ResNet18Images.ModelPath, IntraOpNumThreads = 1, BatchSize = 16, SampleCount = 200 };
        using QuantizedModelTransformer resnetInt8 = context.Quantization.PostTraining(resnetOptions).Fit(images);
        var r = context.Quantization.Compare(ResNet18Images.ModelPath, resnetInt8, images, new ComparisonOptions { MeasureLatency = false });
        long resnetFolded = FoldedFloatBytes(ResNet18Images.ModelPath);
        Console.WriteLine($"ResNet18 INT8 (calibrated and evaluated on 200 Fashion-MNIST images at 224x224): mean cosine of the 512 features {r.MeanCosineSimilarity:F5} (goal >= 0.99), SQNR {r.OutputSqnrDb:F1} dB");
        Console.WriteLine($"  file {resnetInt8.QuantizedModel.Length:N0} bytes vs BN-folded FP32 {resnetFolded:N0} bytes: {(double)resnetInt8.QuantizedModel.Length / resnetFolded:F3}x (goal <= 0.27x); float nodes: {resnetInt8.FloatNodes.Count}");
        foreach (var l in r.Layers.Take(5))
            Console.WriteLine($"  worst layers: SQNR {l.SqnrDb:F1} dB  {l.TensorName}");
    }

    internal static void Speed(BenchmarkSettings settings)
    {
        var context = new MLContext(seed: 0);
        FashionMnist.Set set = FashionMnist.ReadTest(settings.DataFolder, limit: 64);
        IDataView images = context.Data.Cache(ResNet18Images.Load(context, set, 64));
        ScoringBenchmark.Consume(images, ResNet18Images.InputColumn);
        Console.WriteLine("ResNet18, ONNX Runtime CPU, 1 intra-op thread, 64 images per pass, best of " + settings.Repeat + ":");
        foreach (int batch in new[] { 1, 16 })
        {
            var options = new PostTrainingOptions { ModelPath = ResNet18Images.ModelPath, IntraOpNumThreads = 1, BatchSize = batch, SampleCount = 64 };
            using QuantizedModelTransformer int8 = context.Quantization.PostTraining(options).Fit(images);
            var scoring = new Microsoft.ML.Quantization.Inference.OnnxModelScoringOptions { ModelPath = ResNet18Images.ModelPath, IntraOpNumThreads = 1, BatchSize = batch };
            using var fp32 = context.Quantization.ScoreOnnxModel(scoring).Fit(images);
            string output = ResNet18Images.OutputTensor;
            var (tFloat, _) = settings.Best(() => ScoringBenchmark.Consume(fp32.Transform(images), output));
            var (tInt8, _) = settings.Best(() => ScoringBenchmark.Consume(int8.Transform(images), output));
            Console.WriteLine($"  batch {batch,2}: FP32 {tFloat * 1000 / 64,7:F2} ms/image   INT8 {tInt8 * 1000 / 64,7:F2} ms/image   speed-up {tFloat / tInt8:F2}x (goal >= 1.5x)");
        }
    }

    /// <summary>Our own writer's BN-folded FP32 file: the float baseline the size goal is measured against.</summary>
    private static long FoldedFloatBytes(string path)
    {
        var model = OnnxModel.Load(path);
        OnnxRewrites.PrepareForQuantization(model);
        return model.ToBytes().Length;
    }

    private static long FloatWeightBytes(string path)
    {
        var model = OnnxModel.Load(path);
        OnnxRewrites.PrepareForQuantization(model);
        return model.Graph.Initializers.Where(t => t.ElementType == OnnxElementType.Float && t.Dims.Length >= 2).Sum(t => (long)t.ToRawBytes().Length);
    }

    /// <summary>Bytes of the stored integer weights (int8 or packed int4 initializers of rank >= 2).</summary>
    private static long QuantizedWeightBytes(byte[] quantized)
        => OnnxModel.Parse(quantized).Graph.Initializers
            .Where(t => t.ElementType is OnnxElementType.Int8 or OnnxElementType.Int4 && t.Dims.Length >= 2)
            .Sum(t => (long)t.ToRawBytes().Length);
}

using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// adaround [--no-resnet] [--iterations N] [--resnet-rows N] [--resnet-iterations N] [--scheme W4A8-MinMax] [--verbose]: issue 16's AdaRound goals. FmnistNet calibrated on the 1000
/// listed training images (AdaRound learns from the same 1000), evaluated on the 10k test images, each scheme with
/// round-to-nearest and with AdaRound (the sensitivity analysis off, so every Conv/Gemm has 4-bit weights): W4A4 (goal
/// >= 89.8%) and W4A8 (goal >= 92.0%). Then ResNet18 W4A8 output cosine on Fashion-MNIST images at 224x224 (goal >= 0.99).
/// </summary>
internal static class AdaRoundBenchmark
{
    public static int Run(BenchmarkSettings settings, string[] args)
    {
        int iterations = Option(args, "--iterations") ?? 1000;
        if (args.Contains("--one-layer"))
            return OneLayer(iterations, Option(args, "--resnet-rows") ?? 32);
        var context = new MLContext(seed: 0);
        if (settings.Verbose)
            context.Log += (_, e) =>
            {
                if (e.Message.Contains("AdaRound", StringComparison.Ordinal))
                {
                    using var self = Process.GetCurrentProcess();
                    Console.WriteLine($"    {e.Message} [resident {self.WorkingSet64 >> 20} MiB, peak {self.PeakWorkingSet64 >> 20} MiB]");
                }
            };
        string? only = args.SkipWhile(a => a != "--scheme").Skip(1).FirstOrDefault();
        string fmnist = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx");
        IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
        IDataView test = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadTest(settings.DataFolder)));
        Console.WriteLine($"FmnistNet, calibrated on 1000 training images (AdaRound learns from them, {iterations} steps per layer), {test.GetRowCount()} test images, sensitivity analysis off:");
        Console.WriteLine("  scheme                          calibration  rounding    accuracy   drop   time");
        var schemes = new (string Name, QuantizationPrecision Precision, CalibrationMethod Method, double Goal)[]
        {
            ("W4A4 (input and logits 4-bit)", QuantizationPrecision.W4A4, CalibrationMethod.MinMax, 89.8),
            ("W4A4 (input and logits 4-bit)", QuantizationPrecision.W4A4, CalibrationMethod.Mse, 89.8),
            ("W4A8", QuantizationPrecision.W4A8, CalibrationMethod.MinMax, 92.0),
            ("W4A8", QuantizationPrecision.W4A8, CalibrationMethod.Mse, 92.0),
        };
        foreach (var (name, precision, method, goal) in schemes.Where(s => only is null || $"{s.Precision}-{s.Method}".Equals(only, StringComparison.OrdinalIgnoreCase)))
        {
            foreach (bool adaRound in new[] { false, true })
            {
                var options = new PostTrainingOptions
                {
                    ModelPath = fmnist, IntraOpNumThreads = 1, SampleCount = 1000, MinOutputCosine = 0, Precision = precision, CalibrationMethod = method,
                    AdaRound = adaRound, AdaRoundRowCount = 1000, AdaRoundIterations = iterations,
                };
                var clock = Stopwatch.StartNew();
                using QuantizedModelTransformer quantized = context.Quantization.PostTraining(options).Fit(calibration);
                double seconds = clock.Elapsed.TotalSeconds;
                var c = context.Quantization.Compare(fmnist, quantized, test, new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
                string verdict = adaRound ? c.QuantizedAccuracy * 100 >= goal ? $"  (goal >= {goal}%: met)" : $"  (goal >= {goal}%: missed)" : "";
                Console.WriteLine($"  {name,-31} {method,-12} {(adaRound ? "AdaRound" : "nearest"),-10} {c.QuantizedAccuracy,9:P2} {c.AccuracyDrop,6:F2} {seconds,5:F1} s{verdict}");
            }
        }

        if (args.Contains("--no-resnet"))
            return 0;
        int rows = Option(args, "--resnet-rows") ?? 32;
        int resnetIterations = Option(args, "--resnet-iterations") ?? 500;
        IDataView images = context.Data.Cache(ResNet18Images.Load(context, FashionMnist.ReadTest(settings.DataFolder, limit: 2 * rows), 2 * rows));
        IDataView resnetCalibration = context.Data.TakeRows(images, rows), heldOut = context.Data.SkipRows(images, rows);
        Console.WriteLine($"ResNet18 W4A8 (every Conv 4-bit, sensitivity analysis off), calibrated on {rows} Fashion-MNIST images at 224x224 (AdaRound learns from them), " +
                          $"{resnetIterations} AdaRound steps per layer, output cosine of the 512 features on {rows} other images:");
        foreach (bool adaRound in new[] { false, true })
        {
            var options = new PostTrainingOptions
            {
                ModelPath = ResNet18Images.ModelPath, IntraOpNumThreads = 1, BatchSize = 16, SampleCount = rows, MinOutputCosine = 0,
                Precision = QuantizationPrecision.W4A8, AdaRound = adaRound, AdaRoundRowCount = rows, AdaRoundIterations = resnetIterations,
            };
            var clock = Stopwatch.StartNew();
            using QuantizedModelTransformer quantized = context.Quantization.PostTraining(options).Fit(resnetCalibration);
            double seconds = clock.Elapsed.TotalSeconds;
            var r = context.Quantization.Compare(ResNet18Images.ModelPath, quantized, heldOut, new ComparisonOptions { PerLayer = false, MeasureLatency = false });
            using var self = Process.GetCurrentProcess();
            Console.WriteLine($"  {(adaRound ? "AdaRound" : "nearest"),-10} cosine {r.MeanCosineSimilarity:F5}, SQNR {r.OutputSqnrDb:F1} dB, {seconds:F1} s, " +
                              $"peak resident so far {self.PeakWorkingSet64 >> 20} MiB" + (adaRound ? $"  (goal >= 0.99: {(r.MeanCosineSimilarity >= 0.99 ? "met" : "missed")})" : ""));
        }
        return 0;
    }

    /// <summary>
    /// --one-layer: AdaRound's optimisation alone on ResNet18's last 3x3 Conv (512 -> 512, 2.4M weights, inputs 7x7) with
    /// random inputs, the resident memory before and after: what a full run's largest layers cost.
    /// </summary>
    private static int OneLayer(int iterations, int rows)
    {
        var graph = OnnxModel.Load(ResNet18Images.ModelPath).Graph;
        var node = graph.Nodes.Last(n => n.OpType == "Conv" && graph.TryGetInitializer(n.Inputs[1], out var w) && w.Dims[2] == 3);
        Assert(graph.TryGetInitializer(node.Inputs[1], out var weight));
        float[] values = weight.ToFloatArray();
        int outputs = (int)weight.Dims[0], perOutput = values.Length / outputs;
        float[] scales = [.. Enumerable.Range(0, outputs).Select(o => Math.Max(values.AsSpan(o * perOutput, perOutput).ToArray().Max(Math.Abs), 1e-8f) / 7)];
        sbyte[] integers = [.. values.Select((v, i) => (sbyte)Math.Clamp(Math.Round(v / scales[i / perOutput]), -7, 7))];
        var nearest = new QuantizedConstant(weight, 0, 4, integers, scales);
        long[] shape = [rows, weight.Dims[1], 7, 7];
        var random = new Random(0);
        float[] input = [.. Enumerable.Range(0, (int)(shape[0] * shape[1] * 49)).Select(_ => (float)Math.Max(0, random.NextDouble() * 2 - 0.5))];
        float[] quantized = [.. input.Select(v => MathF.Round(v * 16) / 16)];
        using var self = Process.GetCurrentProcess();
        Console.WriteLine($"ResNet18 '{node.Name}' ({weight.Dims[0]}x{weight.Dims[1]}x3x3), {rows} rows of random inputs, {iterations} steps: resident before {self.WorkingSet64 >> 20} MiB");
        var clock = Stopwatch.StartNew();
        var outcome = AdaRoundOptimizer.Learn(node, nearest, input, quantized, shape, relu: true, grid: null, new AdaRoundOptimizer.Settings(iterations, Seed: 0));
        self.Refresh();
        Console.WriteLine($"  error {outcome.NearestError:G4} -> {outcome.LearnedError:G4}, {clock.Elapsed.TotalSeconds:F1} s, resident after {self.WorkingSet64 >> 20} MiB, peak {self.PeakWorkingSet64 >> 20} MiB");
        return 0;

        static void Assert(bool condition)
        {
            if (!condition)
                throw new InvalidOperationException("ResNet18's Conv weight is not an initializer.");
        }
    }

    private static int? Option(string[] args, string name)
        => BenchmarkSettings.Arg(args, name) is { } value ? int.Parse(value, System.Globalization.CultureInfo.InvariantCulture) : null;
}

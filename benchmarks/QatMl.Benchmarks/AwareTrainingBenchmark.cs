using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// Issue 6's figures.
///  - qat: the recipe of ../shared/models/README.md on FmnistNet with its BatchNormalization: calibrate on the 1000
///    listed training images, fine-tune 2 epochs on the 60k training images (Adam lr 1e-4, batch 128, BN frozen
///    after epoch 1), evaluate on the 10k test images; float fine-tune (same seed and steps), QAT INT8, W4A8, W4A4,
///    and W4A4 PTQ with the same calibration; mean over --seeds seeds (default 3).
///  - qat-speed: a float epoch vs a QAT INT8 epoch of the same module on one thread (first --rows training rows),
///    in child processes with and without the glibc allocator settings of the reference notes.
/// Training data: a folder with train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] (--train; Debian's
/// dataset-fashion-mnist or github.com/zalandoresearch/fashion-mnist); the repo ships only the test set.
/// </summary>
internal static class AwareTrainingBenchmark
{
    private static string TrainFolder(string[] args)
    {
        if (Arg(args, "--train") is { } given)
            return given;
        const string debian = "/usr/share/datasets/fashion-mnist";
        return File.Exists(Path.Combine(debian, "train-images-idx3-ubyte.gz")) ? debian
            : throw new FileNotFoundException("Pass --train <folder with train-images-idx3-ubyte[.gz]>: the Fashion-MNIST training set is not shipped in the repo.");
    }

    internal static void Accuracy(BenchmarkSettings settings, string[] args)
    {
        int seeds = int.Parse(Arg(args, "--seeds") ?? "3", CultureInfo.InvariantCulture);
        int epochs = int.Parse(Arg(args, "--epochs") ?? "2", CultureInfo.InvariantCulture);
        bool lsq = !args.Contains("--moving-average");   // LSQ activation ranges are the default
        double distill = double.Parse(Arg(args, "--distill") ?? "0", CultureInfo.InvariantCulture);
        string[]? only = Arg(args, "--schemes")?.Split(',');
        string folder = TrainFolder(args);
        var context = new MLContext(seed: 0);
        string model = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32_bn.onnx");
        IDataView train = context.Data.Cache(FashionMnist.Load(context, FashionMnist.Read(Path.Combine(folder, "train-images-idx3-ubyte.gz"), Path.Combine(folder, "train-labels-idx1-ubyte.gz"))));
        IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
        IDataView test = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadTest(settings.DataFolder)));
        Console.WriteLine($"FmnistNet (BN kept) fine-tuned {epochs} epochs on {train.GetRowCount()} images, Adam 1e-4, batch 128, BN frozen after epoch 1, one thread; top-1 on {test.GetRowCount()} test images (ties to the lowest class).");
        var schemes = new (string Name, QuantizationPrecision? Precision)[]
        {
            ("float fine-tune", null), ("QAT INT8 (W8A8)", QuantizationPrecision.Int8), ("QAT W4A8", QuantizationPrecision.W4A8), ("QAT W4A4", QuantizationPrecision.W4A4),
        };
        if (only is not null)
            schemes = schemes.Where(s => only.Any(o => s.Name.Contains(o, StringComparison.OrdinalIgnoreCase))).ToArray();
        Console.WriteLine($"  activation ranges: {(lsq ? "learned step size (LSQ)" : "moving average")}; distillation weight {distill}");
        var results = schemes.ToDictionary(s => s.Name, _ => new List<(double Deployed, double? Fake, double Rate)>());
        var ptqW4A4 = new List<double>();
        for (int seed = 0; seed < seeds; seed++)
        {
            foreach (var (name, precision) in schemes)
            {
                var options = new AwareTrainingOptions
                {
                    ModelPath = model, Epochs = epochs, TrainingBatchSize = 128, LearningRate = 1e-4, BatchNormFreezeEpoch = 1, Seed = seed,
                    Precision = precision ?? QuantizationPrecision.Int8, ValidationData = test, CalibrationData = calibration, IntraOpNumThreads = 1,
                    ActivationRanges = lsq ? RangeLearning.LearnedStepSize : RangeLearning.MovingAverage, DistillationWeight = distill,
                    FloatFineTune = precision is null,
                };
                var clock = Stopwatch.StartNew();
                var (transformer, report) = AwareTrainer.Fit(context, options, train);
                transformer.Dispose();
                double rate = report.Epochs.Average(e => e.RowsPerSecond);
                results[name].Add((report.DeployedAccuracy!.Value, report.FakeQuantizedAccuracy, rate));
                Console.WriteLine($"  seed {seed} {name,-18} deployed {report.DeployedAccuracy:P2}  fake-quant {report.FakeQuantizedAccuracy:P2}  {rate:F0} rows/s  ({clock.Elapsed.TotalSeconds:F0} s)");
            }
            var ptq = new PostTrainingOptions { ModelPath = model, Precision = QuantizationPrecision.W4A4, IntraOpNumThreads = 1 };
            using var ptqModel = context.Quantization.PostTraining(ptq).Fit(calibration);
            var c = context.Quantization.Compare(model, ptqModel, test, new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
            ptqW4A4.Add(c.QuantizedAccuracy!.Value);
        }
        Console.WriteLine($"Mean of {seeds} seed(s) (every quantized scheme quantizes the input, all Conv/Gemm weights and activations, and the logits):");
        double? floatMean = results.TryGetValue("float fine-tune", out var f) ? f.Average(r => r.Deployed) : null;
        foreach (var (name, _) in schemes)
        {
            var r = results[name];
            Console.WriteLine($"  {name,-18} {r.Average(x => x.Deployed),8:P2}   vs float fine-tune {(r.Average(x => x.Deployed) - floatMean) * 100,6:F2} points   {r.Average(x => x.Rate),6:F0} rows/s");
        }
        if (results.TryGetValue("QAT W4A4", out var w4a4))
            Console.WriteLine($"  PTQ W4A4 (same calibration) {ptqW4A4.Average(),8:P2}; QAT W4A4 - PTQ W4A4 = {(w4a4.Average(x => x.Deployed) - ptqW4A4.Average()) * 100:F2} points (goal >= 1.0)");
        Console.WriteLine("  Goals: QAT INT8 at most 0.2 below the float fine-tune; W4A8 >= 92.17 and W4A4 >= 90.17 (PyTorch QAT, same tensors).");
    }

    /// <summary>Parent: runs the speed child with and without the allocator settings.</summary>
    internal static int Speed(string[] args)
    {
        foreach (bool tuned in new[] { false, true })
        {
            var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
            if (!Environment.ProcessPath!.EndsWith("QatMl.Benchmarks", StringComparison.Ordinal))
                start.ArgumentList.Add(typeof(AwareTrainingBenchmark).Assembly.Location);
            start.ArgumentList.Add("qat-speed-child");
            foreach (string a in args)
                start.ArgumentList.Add(a);
            foreach (var v in new[] { "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_" })
                start.Environment.Remove(v);
            if (tuned)
            {
                start.Environment["MALLOC_MMAP_THRESHOLD_"] = "33554432";
                start.Environment["MALLOC_TRIM_THRESHOLD_"] = "17179869184";
                start.Environment["MALLOC_TOP_PAD_"] = "268435456";
            }
            using var child = Process.Start(start)!;
            string output = child.StandardOutput.ReadToEnd();
            child.WaitForExit();
            Console.Write($"{(tuned ? "with" : "without")} the allocator settings: {output}");
            if (child.ExitCode != 0)
                return child.ExitCode;
        }
        return 0;
    }

    internal static void SpeedChild(BenchmarkSettings settings, string[] args)
    {
        int rows = int.Parse(Arg(args, "--rows") ?? "20000", CultureInfo.InvariantCulture);
        string folder = TrainFolder(args);
        var context = new MLContext(seed: 0);
        string model = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32_bn.onnx");
        IDataView train = context.Data.Cache(FashionMnist.Load(context, FashionMnist.Read(Path.Combine(folder, "train-images-idx3-ubyte.gz"), Path.Combine(folder, "train-labels-idx1-ubyte.gz"), rows)));
        double Rate(bool quantize, RangeLearning ranges = RangeLearning.LearnedStepSize)
        {
            var options = new AwareTrainingOptions { ModelPath = model, Epochs = 2, TrainingBatchSize = 128, BatchNormFreezeEpoch = 1, WarmupFraction = 0, CalibrationSampleCount = 256, IntraOpNumThreads = 1, ActivationRanges = ranges, FloatFineTune = !quantize };
            var (t, report) = AwareTrainer.Fit(context, options, train);
            t.Dispose();
            return report.Epochs.Max(e => e.RowsPerSecond);   // best epoch: the first warms up libtorch
        }
        Rate(false);   // warm-up run
        double floatRate = Rate(false), lsqRate = Rate(true), averageRate = Rate(true, RangeLearning.MovingAverage);
        Console.WriteLine($"float {floatRate:F0} rows/s; QAT INT8 with LSQ ranges (default) {lsqRate:F0} rows/s = {floatRate / lsqRate:F2}x a float epoch, "
            + $"with moving-average ranges {averageRate:F0} rows/s = {floatRate / averageRate:F2}x (goal <= 1.4x; {rows} rows, batch 128, one thread)");
    }

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

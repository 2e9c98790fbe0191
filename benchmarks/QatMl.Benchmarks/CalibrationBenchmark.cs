using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// Issue 4's benchmarks.
///  - calibration: calibration time over plain float inference of the same rows with the batched transform (same
///    batch size, one ORT thread), per method: FmnistNet on the 1000 calibration images, ResNet18 on 200 test images
///    made 224x224 RGB. Goals: MinMax at most 1.5x, Entropy at most 2.5x.
///  - calibration-memory: peak resident memory calibrating ResNet18 over 50 and over 500 streamed images, each in a
///    fresh child process. Goal: the difference under 64 MB.
/// </summary>
internal static class CalibrationBenchmark
{
    private static readonly CalibrationMethod[] Methods =
        [CalibrationMethod.MinMax, CalibrationMethod.MovingAverageMinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy, CalibrationMethod.Mse];

    internal static void Run(BenchmarkSettings settings, bool resnet)
    {
        var context = new MLContext(seed: 0);
        string fmnist = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx");
        IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
        Compare(settings, context, "FmnistNet", fmnist, calibration, "input", "logits", batch: 64, settings.Repeat);

        if (!resnet)
            return;
        IDataView images = context.Data.Cache(ResNet18Images.Load(context, FashionMnist.ReadTest(settings.DataFolder, limit: 200), 200));
        Compare(settings, context, "ResNet18", ResNet18Images.ModelPath, images, ResNet18Images.InputColumn, ResNet18Images.OutputTensor,
            batch: 16, Math.Max(1, settings.Repeat / 3));
    }

    private static void Compare(BenchmarkSettings settings, MLContext context, string name, string model, IDataView data,
        string inputColumn, string outputTensor, int batch, int repeat)
    {
        long rows = 0;
        var log = new List<string>();
        if (settings.Verbose)
            context.Log += (_, e) => { if (e.Message.Contains("Model runs took") || e.Message.Contains("Ranges computed")) log.Add(e.Message); };
        ScoringBenchmark.Consume(data, inputColumn);   // materialise the cache
        var scoring = new OnnxModelScoringOptions { ModelPath = model, BatchSize = batch, IntraOpNumThreads = 1 };
        scoring.Outputs.Add(new OnnxColumnBinding("Output", outputTensor));
        using OnnxModelScoringTransformer inference = context.Quantization.ScoreOnnxModel(scoring).Fit(data);
        var runs = settings with { Repeat = repeat };
        var (inferWall, inferCpu) = runs.Best(() => ScoringBenchmark.Consume(inference.Transform(data), "Output"));
        Console.WriteLine($"{name}: calibration vs float inference of the same rows, batch {batch}, 1 ORT thread, best of {repeat} (wall; CPU):");
        Console.WriteLine($"  float inference (ScoreOnnxModel)   {inferWall,8:F3} s   cpu {inferCpu:F3} s");
        foreach (CalibrationMethod method in Methods)
        {
            var options = new CalibrationEstimatorOptions
            {
                ModelPath = model,
                BatchSize = batch,
                IntraOpNumThreads = 1,
                Activations = new CalibrationOptions { Method = method },
            };
            CalibrationTransformer? last = null;
            var (wall, cpu) = runs.Best(() => last = context.Quantization.Calibrate(options).Fit(data));
            rows = last!.RowsObserved;
            string goal = method switch { CalibrationMethod.MinMax => " (goal <= 1.5x)", CalibrationMethod.Entropy => " (goal <= 2.5x)", _ => "" };
            Console.WriteLine($"  Calibrate {method,-20}     {wall,8:F3} s   cpu {cpu:F3} s   {wall / inferWall,5:F2}x{goal}   {last.Table.Count} tensors");
        }
        var fixedCost = new CalibrationEstimatorOptions { ModelPath = model, BatchSize = batch, IntraOpNumThreads = 1, SampleCount = 1 };
        var (fixedWall, _) = runs.Best(() => context.Quantization.Calibrate(fixedCost).Fit(data));
        // Where the time goes, from the calibrator's own log (last run of each method).
        foreach (string line in log)
            Console.WriteLine($"    {line}");
        Console.WriteLine($"  rows: {rows}; fixed cost (model preparation and session, MinMax on 1 row): {fixedWall:F3} s");
    }

    /// <summary>Runs the child for 50 and 500 images and reports both peaks and their difference.</summary>
    internal static int Memory(BenchmarkSettings settings, string[] args)
    {
        var peaks = new Dictionary<int, double>();
        foreach (int images in new[] { 50, 500 })
        {
            var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
            if (!Environment.ProcessPath!.EndsWith("QatMl.Benchmarks", StringComparison.Ordinal))
                start.ArgumentList.Add(typeof(CalibrationBenchmark).Assembly.Location);
            start.ArgumentList.Add("calibration-memory-child");
            start.ArgumentList.Add(images.ToString(CultureInfo.InvariantCulture));
            foreach (string a in args)
                start.ArgumentList.Add(a);
            using Process child = Process.Start(start)!;
            string output = child.StandardOutput.ReadToEnd();
            child.WaitForExit();
            Console.Write(output);
            if (child.ExitCode != 0)
                return child.ExitCode;
            string line = output.Split('\n').Single(l => l.StartsWith("peak_rss_mb=", StringComparison.Ordinal));
            peaks[images] = double.Parse(line["peak_rss_mb=".Length..], CultureInfo.InvariantCulture);
        }
        double diff = peaks[500] - peaks[50];
        Console.WriteLine($"ResNet18 MinMax calibration peak RSS: 50 images {peaks[50]:F0} MB, 500 images {peaks[500]:F0} MB, difference {diff:F0} MB (goal < 64 MB)");
        return 0;
    }

    /// <summary>One calibration over <paramref name="images"/> streamed images; prints the process's peak RSS.</summary>
    internal static void MemoryChild(BenchmarkSettings settings, int images)
    {
        var context = new MLContext(seed: 0);
        FashionMnist.Set set = FashionMnist.ReadTest(settings.DataFolder, limit: images);
        using OnnxModelScoringTransformer preprocess = ResNet18Images.Stream(context, set, images, out IDataView inputs);
        var options = new CalibrationEstimatorOptions { ModelPath = ResNet18Images.ModelPath, IntraOpNumThreads = 1, BatchSize = 16, SampleCount = images };
        var clock = Stopwatch.StartNew();
        CalibrationTransformer calibrated = context.Quantization.Calibrate(options).Fit(inputs);
        Console.WriteLine($"  {images} images: {calibrated.RowsObserved} rows, {calibrated.Table.Count} tensors, {clock.Elapsed.TotalSeconds:F1} s");
        Console.WriteLine($"peak_rss_mb={PeakResidentMegabytes().ToString("F1", CultureInfo.InvariantCulture)}");
    }

    private static double PeakResidentMegabytes()
    {
        // VmHWM: the resident set's high-water mark since the process started.
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
        throw new PlatformNotSupportedException("No VmHWM in /proc/self/status (peak memory needs Linux).");
    }
}

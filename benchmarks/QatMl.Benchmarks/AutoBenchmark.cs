using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Auto;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Benchmarks.Zoo;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// auto [--zoo FOLDER] [--rows N] [--only a,b] [--no-resnet] [--max-trials N] [--adaround] [--trials] [--backend native|ort]: issue 16's
/// automatic quantization, the result on the native engine (default; trials scored there, latency measured there) or ONNX Runtime.
/// FmnistNet (the 1000 listed training images calibrate, the 10k test images validate; MaxAccuracyDrop 0.5), ResNet18
/// (64 + 64 Fashion-MNIST images at 224x224; output cosine >= 0.99) and, with --zoo, every zoo model (N + N rows,
/// 32 by default; output cosine >= 0.99). Per model: trials, time (and in float validation passes), the chosen
/// configuration, its size, latency and metric, and the best plain scheme (INT8, W4A8, W4A4 with MinMax) beside it;
/// --trials prints every trial as it ends.
/// </summary>
internal static class AutoBenchmark
{
    public static int Run(BenchmarkSettings settings, string[] args)
    {
        int maxTrials = BenchmarkSettings.Arg(args, "--max-trials") is { } m ? int.Parse(m, CultureInfo.InvariantCulture) : 20;
        bool adaRound = args.Contains("--adaround"), trials = args.Contains("--trials");
        QuantizedBackend backend = BenchmarkSettings.Arg(args, "--backend") switch
        {
            null or "native" => QuantizedBackend.Native,
            "ort" => QuantizedBackend.OnnxRuntime,
            string other => throw new ArgumentException($"--backend: '{other}' is not native or ort."),
        };
        Console.WriteLine($"auto: the result's backend {backend} (trials' latency on it, one thread)");
        var only = BenchmarkSettings.Arg(args, "--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
        Microsoft.ML.OnnxRuntime.OrtEnv.Instance().EnvLogLevel = Microsoft.ML.OnnxRuntime.OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
        var context = new MLContext(seed: 0);
        IProgress<QuantizationTrial>? progress = trials ? new PrintTrial() : null;
        var lines = new List<string>();
        void Report(string model, Func<AutoQuantizationResult> run)
        {
            Console.WriteLine($"== {model}");
            try
            {
                using var result = run();
                var best = result.BestTrial;
                var plain = result.BestFixedScheme;
                string metric = result.Metric == "accuracy" ? "%" : " cosine";
                Console.WriteLine($"   {result.Trials.Count} trials, {result.Time.TotalSeconds:F1} s ({result.Time / result.FloatEvaluationTime:F1} float validation passes of {result.FloatEvaluationTime.TotalSeconds:F2} s); " +
                                  $"float {result.Metric} {result.FloatMetric:0.#####}");
                Console.WriteLine($"   chosen: #{best.Index} {best.Configuration}: {best.Metric:0.#####}{metric}, {best.SizeBytes / 1e6:F3} MB, {Latency(best)} ms/row{(best.Accepted ? "" : $" (constraint missed: {best.Reason})")}");
                Console.WriteLine(plain is null ? "   best plain scheme: none meets the constraint"
                    : $"   best plain scheme: #{plain.Index} {plain.Configuration}: {plain.Metric:0.#####}{metric}, {plain.SizeBytes / 1e6:F3} MB, {Latency(plain)} ms/row");
                Console.WriteLine($"   Pareto front: {string.Join("; ", result.ParetoFront.Select(t => $"#{t.Index}"))}");
                lines.Add($"| {model} | {result.Trials.Count} | {result.Time.TotalSeconds:F1} s ({result.Time / result.FloatEvaluationTime:F1}x) | {best.Configuration} | {best.SizeBytes / 1e6:F3} MB | " +
                          $"{Latency(best)} | {best.Metric:0.####}{(best.Accepted ? "" : " (missed)")} | " +
                          (plain is null ? "none meets |" : $"{plain.Configuration}: {plain.SizeBytes / 1e6:F3} MB, {Latency(plain)} ms/row, {plain.Metric:0.####} |"));
            }
            catch (Exception e)
            {
                Console.WriteLine($"   failed: {ZooBenchmark.Failure(e)}");
                lines.Add($"| {model} | failed: {ZooBenchmark.Failure(e)} | | | | | | |");
            }
        }

        if (only is null || only.Contains("fmnistnet"))
        {
            IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
            IDataView test = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadTest(settings.DataFolder)));
            Report("FmnistNet (accuracy, MaxAccuracyDrop 0.5, 10k test images)", () => context.Quantization.Auto(new AutoQuantizationOptions
            {
                PostTraining = new PostTrainingOptions { ModelPath = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx"), IntraOpNumThreads = 1, SampleCount = 1000, AdaRoundRowCount = 1000, Backend = backend },
                LabelColumnName = "Label", MaxAccuracyDrop = 0.5, ValidationRowCount = 10000, MaxTrials = maxTrials, AdaRound = adaRound, Progress = progress,
            }).Execute(calibration, test));
        }
        if (!args.Contains("--no-resnet") && (only is null || only.Contains("resnet18")))
        {
            IDataView images = context.Data.Cache(ResNet18Images.Load(context, FashionMnist.ReadTest(settings.DataFolder, limit: 128), 128));
            Report("ResNet18 (output cosine >= 0.99, 64 + 64 images)", () => context.Quantization.Auto(new AutoQuantizationOptions
            {
                PostTraining = new PostTrainingOptions { ModelPath = ResNet18Images.ModelPath, IntraOpNumThreads = 1, BatchSize = 16, SampleCount = 64, AdaRoundRowCount = 64, Backend = backend },
                MinOutputCosine = 0.99, MaxTrials = maxTrials, AdaRound = adaRound, Progress = progress,
            }).Execute(context.Data.TakeRows(images, 64), context.Data.SkipRows(images, 64)));
        }
        if (BenchmarkSettings.Arg(args, "--zoo") is { } folder)
        {
            int rows = BenchmarkSettings.Arg(args, "--rows") is { } r ? int.Parse(r, CultureInfo.InvariantCulture) : 32;
            var zoo = new ZooContext(context, Path.GetFullPath(folder), settings.DataFolder, rows, rows);
            foreach (ZooModel model in ZooModels.All.Where(m => only is null || only.Contains(m.Name)))
                Report($"{model.Name} (output cosine >= 0.99, {rows} + {rows} rows)", () =>
                {
                    string path = model.ModelPath(zoo);
                    OnnxModel onnx = OnnxModel.Load(path);
                    ZooRows data = model.Rows(zoo, onnx.Graph.RuntimeInputs[0].Name);
                    var options = ZooBenchmark.Options(path, data, model.Output(onnx), QuantizationPrecision.Int8, ZooBenchmark.FixedBatch(onnx, data), QuantizedBackend.OnnxRuntime);
                    options.AdaRoundRowCount = rows;
                    options.Backend = backend;
                    return context.Quantization.Auto(new AutoQuantizationOptions { PostTraining = options, MinOutputCosine = 0.99, MaxTrials = maxTrials, AdaRound = adaRound, Progress = progress })
                        .Execute(data.Calibration(context), data.HeldOut(context));
                });
        }
        Console.WriteLine();
        Console.WriteLine("| model | trials | time (float passes) | chosen configuration | size | ms/row | metric | best plain scheme |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        lines.ForEach(Console.WriteLine);
        return 0;
    }

    /// <summary>--trials: each trial as it ends.</summary>
    private sealed class PrintTrial : IProgress<QuantizationTrial>
    {
        public void Report(QuantizationTrial value) => Console.WriteLine($"   {value}");
    }

    /// <summary>Measured for accepted trials only (the chosen one when the constraint was missed has none).</summary>
    private static string Latency(QuantizationTrial t) => double.IsNaN(t.LatencyMilliseconds) ? "-" : t.LatencyMilliseconds.ToString("F3", CultureInfo.InvariantCulture);
}

using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.TrainingHost;

/// <summary>
/// Runs one AwareTraining fit in its own process and prints what the parent test checks, one "key=value" per line.
///   train --model M --data D --rows N --seed S --out F [--checkpoint C --every K] [--stall-at-step K]
///       QAT (LSQ ranges and weight step sizes, 2 epochs, batch 32, one libtorch thread) on the first N shipped
///       calibration images; writes the exported QDQ model's bytes to F. With --stall-at-step, it prints
///       "stalled=K" after step K's progress and waits to be killed.
///   ptq-first --model M --data D --rows N
///       AwareTraining with a budget PTQ meets; prints the path taken and whether TorchSharp or libtorch got loaded.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        try
        {
            string command = args.Length > 0 ? args[0] : throw new ArgumentException("usage: train|ptq-first --model M --data D --rows N ...");
            var context = new MLContext(seed: 1);
            var rows = FashionMnist.Rows(FashionMnist.ReadCalibration(Arg(args, "--data")!, int.Parse(Arg(args, "--rows")!, CultureInfo.InvariantCulture)));
            IDataView data = context.Data.LoadFromEnumerable(rows);
            return command switch
            {
                "train" => Train(context, data, args),
                "ptq-first" => PtqFirst(context, data, args),
                _ => throw new ArgumentException($"unknown command '{command}'"),
            };
        }
        catch (Exception e)
        {
            Console.Error.WriteLine(e);
            return 1;
        }
    }

    private static int Train(MLContext context, IDataView data, string[] args)
    {
        long? stallAt = Arg(args, "--stall-at-step") is { } s ? long.Parse(s, CultureInfo.InvariantCulture) : null;
        var options = new AwareTrainingOptions
        {
            ModelPath = Arg(args, "--model"),
            Epochs = 2,
            TrainingBatchSize = 32,
            CalibrationSampleCount = 64,
            IntraOpNumThreads = 1,
            ActivationRanges = RangeLearning.LearnedStepSize,
            LearnWeightStepSizes = true,
            Seed = int.Parse(Arg(args, "--seed")!, CultureInfo.InvariantCulture),
            CheckpointPath = Arg(args, "--checkpoint"),
            CheckpointEverySteps = Arg(args, "--every") is { } every ? int.Parse(every, CultureInfo.InvariantCulture) : 100,
            Progress = new Stall(stallAt),
        };
        using QuantizedModelTransformer model = context.Quantization.AwareTraining(options).Fit(data);
        string output = Arg(args, "--out")!;
        string temp = output + ".tmp";
        File.WriteAllBytes(temp, model.QuantizedModel);
        File.Move(temp, output, overwrite: true);
        foreach (var e in model.AwareTraining!.Epochs)
            Console.WriteLine(FormattableString.Invariant($"epoch{e.Epoch}.loss={e.MeanLoss:R}"));
        return 0;
    }

    private static int PtqFirst(MLContext context, IDataView data, string[] args)
    {
        var options = new AwareTrainingOptions
        {
            ModelPath = Arg(args, "--model"),
            ValidationFraction = 0.25,
            CalibrationSampleCount = 64,
            MaxAccuracyDrop = 100,   // any PTQ result is within it
        };
        using QuantizedModelTransformer model = context.Quantization.AwareTraining(options).Fit(data);
        Console.WriteLine($"path={model.AwareTraining!.Path}");
        Console.WriteLine($"torchsharp-assembly-loaded={AppDomain.CurrentDomain.GetAssemblies().Any(a => a.GetName().Name == "TorchSharp")}");
        Console.WriteLine($"libtorch-mapped={File.ReadLines("/proc/self/maps").Any(l => l.Contains("libtorch", StringComparison.Ordinal) || l.Contains("LibTorchSharp", StringComparison.Ordinal))}");
        return 0;
    }

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>Reports steps; at the stall step it says so and blocks the training thread until the parent kills the process.</summary>
    private sealed class Stall(long? step) : IProgress<AwareTrainingProgress>
    {
        public void Report(AwareTrainingProgress value)
        {
            if (value.Step != step)
                return;
            Console.WriteLine(FormattableString.Invariant($"stalled={value.Step}"));
            Console.Out.Flush();
            Thread.Sleep(Timeout.Infinite);
        }
    }
}

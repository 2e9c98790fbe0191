using System.Diagnostics;
using System.Reflection;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Tests.AwareTraining;

/// <summary>
/// Same seed, same bytes, in any process: fits in child processes (tests/QatMl.TrainingHost, run from this output
/// folder with this project's dependencies), a run killed with SIGKILL mid-epoch and resumed in a new process, the
/// checkpoint fingerprint's coverage of the options, and the PTQ-first path without TorchSharp.
/// </summary>
public sealed class TrainingReproducibilityTests
{
    private static readonly TimeSpan ChildTimeout = TimeSpan.FromMinutes(3);

    [Fact]
    public void SameSeed_InTwoProcesses_AndKilledMidEpochThenResumedInANewProcess_GiveTheSameModelBytes()
    {
        string dir = Directory.CreateTempSubdirectory("qatml-repro-").FullName;
        try
        {
            string[] Train(string output, int seed, params string[] more)
                => ["train", "--model", TestData.FmnistNetBn, "--data", TestData.FashionMnistFolder, "--rows", "192", "--seed", $"{seed}", "--out", Path.Combine(dir, output), .. more];

            var first = Child.Run(Train("first.onnx", 3));
            var second = Child.Run(Train("second.onnx", 3));
            byte[] model = File.ReadAllBytes(Path.Combine(dir, "first.onnx"));
            Assert.Equal(model, File.ReadAllBytes(Path.Combine(dir, "second.onnx")));
            Assert.Equal(first["epoch1.loss"], second["epoch1.loss"]);
            Child.Run(Train("other-seed.onnx", 4));
            Assert.NotEqual(model, File.ReadAllBytes(Path.Combine(dir, "other-seed.onnx")));   // the seed matters

            // 6 steps an epoch: checkpoints after steps 2, 5 and 8; killed while step 9 (epoch 2) reports, resumed elsewhere.
            string checkpoint = Path.Combine(dir, "qat.ckpt");
            string[] withCheckpoint = ["--checkpoint", checkpoint, "--every", "3"];
            Child.RunUntilThenKill(Train("killed.onnx", 3, [.. withCheckpoint, "--stall-at-step", "9"]), "stalled=9");
            Assert.True(File.Exists(checkpoint));
            Assert.False(File.Exists(Path.Combine(dir, "killed.onnx")));
            var resumed = Child.Run(Train("resumed.onnx", 3, withCheckpoint));
            Assert.Equal(model, File.ReadAllBytes(Path.Combine(dir, "resumed.onnx")));
            Assert.Equal(first["epoch1.loss"], resumed["epoch1.loss"]);
            Assert.False(File.Exists(checkpoint));
            Assert.Empty(Directory.GetFiles(dir, "qat.ckpt*"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void PtqFirst_WithinBudget_NeverLoadsTorchSharp()
    {
        var result = Child.Run(["ptq-first", "--model", TestData.FmnistNetBn, "--data", TestData.FashionMnistFolder, "--rows", "128"]);
        Assert.Equal("PostTraining", result["path"]);
        Assert.Equal("False", result["torchsharp-assembly-loaded"]);
        Assert.Equal("False", result["libtorch-mapped"]);
    }

    [Fact]
    public void CheckpointFingerprint_CoversEveryOptionThatChangesTraining()
    {
        // Every public option is either in the fingerprint, covered by the content hashes, or listed as not changing training.
        var options = typeof(AwareTrainingOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.DeclaringType != typeof(Microsoft.ML.Quantization.Inference.OnnxRuntimeOptions)).Select(p => p.Name).Order().ToList();
        var listed = TrainingFingerprint.TrainingOptions.Select(o => o.Name)
            .Concat(TrainingFingerprint.OptionsCoveredByContent).Concat(TrainingFingerprint.OptionsNotChangingTraining).Order().ToList();
        Assert.Equal(options, listed);

        // Changing any fingerprinted option changes the fingerprint, and only that entry.
        var rows = new TrainingRows([0.5f, 1.5f, 2.5f, 3.5f], [0, 1], 2, [2]);
        byte[] model = [1, 2, 3];
        var baseline = TrainingFingerprint.Of(new AwareTrainingOptions(), model, rows, rows);
        foreach (var (name, _) in TrainingFingerprint.TrainingOptions)
        {
            var changed = new AwareTrainingOptions();
            var property = typeof(AwareTrainingOptions).GetProperty(name)!;
            property.SetValue(changed, property.GetValue(changed) switch
            {
                bool b => !b,
                int i => i + 1,
                double d => d + 0.125,
                RangeLearning r => r == RangeLearning.MovingAverage ? RangeLearning.LearnedClipping : RangeLearning.MovingAverage,
                QuantizationPrecision p => p == QuantizationPrecision.W4A4 ? QuantizationPrecision.Int8 : QuantizationPrecision.W4A4,
                null when property.PropertyType == typeof(int?) => 1,
                null when property.PropertyType == typeof(QuantizationPrecision) => QuantizationPrecision.W4A8,
                var v => throw new InvalidOperationException($"No change defined for {name} = {v}."),
            });
            string? differences = TrainingFingerprint.Of(changed, model, rows, rows).DifferencesFrom(baseline);
            Assert.NotNull(differences);
            Assert.StartsWith($"{name} is ", differences);
            Assert.DoesNotContain(";", differences);
        }

        // The content: the model bytes, the training rows (a label), the calibration rows (one value).
        Assert.StartsWith("Model is ", TrainingFingerprint.Of(new AwareTrainingOptions(), [1, 2, 4], rows, rows).DifferencesFrom(baseline));
        var relabelled = rows with { Labels = [0, 2] };
        Assert.StartsWith("TrainingRows is ", TrainingFingerprint.Of(new AwareTrainingOptions(), model, relabelled, rows).DifferencesFrom(baseline));
        var recalibrated = rows with { Features = [0.5f, 1.5f, 2.5f, 3.25f] };
        Assert.StartsWith("CalibrationRows is ", TrainingFingerprint.Of(new AwareTrainingOptions(), model, rows, recalibrated).DifferencesFrom(baseline));
        Assert.Null(TrainingFingerprint.Of(new AwareTrainingOptions { CheckpointEverySteps = 7, MaxAccuracyDrop = 1 }, model, rows, rows).DifferencesFrom(baseline));
    }

    [Fact]
    public void EpochOrder_IsAPermutation_ThatDependsOnSeedAndEpoch()
    {
        var rows = new TrainingRows(new float[1000], new long[1000], 1, [1]);
        int[] order = rows.EpochOrder(seed: 0, epoch: 0);
        Assert.Equal(Enumerable.Range(0, 1000), order.Order());
        Assert.Equal(order, rows.EpochOrder(0, 0));
        Assert.NotEqual(order, rows.EpochOrder(0, 1));
        Assert.NotEqual(order, rows.EpochOrder(1, 0));
        Assert.NotEqual(rows.EpochOrder(1, 0), rows.EpochOrder(0, 1));     // (seed, epoch) is not a symmetric mix
        Assert.InRange(order.Where((r, i) => r == i).Count(), 0, 10);       // shuffled, not nearly the identity
    }

    /// <summary>The training host as a child process: "key=value" lines back, stderr in the failure message.</summary>
    private static class Child
    {
        public static Dictionary<string, string> Run(string[] args)
        {
            using var process = Start(args);
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();
            if (!process.WaitForExit(ChildTimeout))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"The training host did not finish within {ChildTimeout.TotalMinutes} minutes: {string.Join(' ', args)}");
            }
            process.WaitForExit();
            Assert.True(process.ExitCode == 0, $"The training host failed ({process.ExitCode}): {string.Join(' ', args)}\n{stderr.Result}");
            return stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
        }

        /// <summary>Starts the host, waits for <paramref name="line"/> on its output, then kills it with SIGKILL.</summary>
        public static void RunUntilThenKill(string[] args, string line)
        {
            using var process = Start(args);
            var stderr = process.StandardError.ReadToEndAsync();
            var watch = Stopwatch.StartNew();
            while (process.StandardOutput.ReadLine() is { } output)
            {
                if (output == line)
                {
                    process.Kill();   // SIGKILL on Unix: no managed code runs after it
                    process.WaitForExit();
                    return;
                }
                if (watch.Elapsed > ChildTimeout)
                    break;
            }
            process.Kill();
            process.WaitForExit();
            Assert.Fail($"The training host never printed '{line}' (exit {process.ExitCode}): {string.Join(' ', args)}\n{stderr.Result}");
        }

        private static Process Start(string[] args)
        {
            string tests = Path.ChangeExtension(typeof(Child).Assembly.Location, null);
            string host = Path.Combine(AppContext.BaseDirectory, "QatMl.TrainingHost.dll");
            Assert.True(File.Exists(host), $"{host} is missing: build the solution (the test project references tests/QatMl.TrainingHost).");
            string dotnet = Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self
                : Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
            var start = new ProcessStartInfo(dotnet) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in (string[])["exec", "--depsfile", tests + ".deps.json", "--runtimeconfig", tests + ".runtimeconfig.json", host, .. args])
                start.ArgumentList.Add(a);
            return Process.Start(start)!;
        }
    }
}

using System.Globalization;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// Where the time goes, per node, in ONNX Runtime INT8 and in the native engine on the same QDQ model (ResNet18 or
/// FmnistNet, one thread, batch 1 by default; or a zoo model with its default PTQ, --zoo FOLDER --only NAME [--rows N]).
/// ONNX Runtime's own profiler gives its per-kernel times; run with QATML_ENGINE_PROFILE=1 in the environment to get
/// the engine's per-op table on stderr at exit.
///   QATML_ENGINE_PROFILE=1 dotnet run --project benchmarks/QatMl.Benchmarks -c Release -- engine-profile [--fmnistnet | --zoo FOLDER --only NAME] [--batch N] [--runs N]
/// </summary>
internal static class EngineProfile
{
    internal static int Run(BenchmarkSettings settings, string[] args)
    {
        var context = new MLContext(seed: 0);
        bool fmnist = args.Contains("--fmnistnet");
        int batch = Arg(args, "--batch", 1);
        int runs = Arg(args, "--runs", fmnist ? 200 : 20);
        IDataView data;
        string model, column;
        int rowSize;
        int[] rowDims;
        QuantizedModelTransformer? zooModel = null;
        if (BenchmarkSettings.Arg(args, "--zoo") is { } zooFolder)
        {
            string name = BenchmarkSettings.Arg(args, "--only") ?? throw new ArgumentException("engine-profile --zoo needs --only <model name>");
            int rows = Arg(args, "--rows", 8);
            var zoo = new QatMl.Benchmarks.Zoo.ZooContext(context, Path.GetFullPath(zooFolder), settings.DataFolder, rows, rows);
            QatMl.Benchmarks.Zoo.ZooModel zooEntry = QatMl.Benchmarks.Zoo.ZooModels.All.Single(m => m.Name == name);
            string path = zooEntry.ModelPath(zoo);
            Microsoft.ML.Quantization.Onnx.OnnxModel onnx = Microsoft.ML.Quantization.Onnx.OnnxModel.Load(path);
            QatMl.Benchmarks.Zoo.ZooRows zooRows = zooEntry.Rows(zoo, onnx.Graph.RuntimeInputs[0].Name);
            if (zooRows.Tensors.Count != 1 || !zooRows.Tensors[0].IsFloat)
                throw new ArgumentException($"{name}: engine-profile takes models with one float input");
            bool fixedBatch = onnx.Graph.RuntimeInputs[0].Shape is { Count: > 0 } shape && shape[0].Value is long b && b > 0;
            zooModel = context.Quantization.PostTraining(QatMl.Benchmarks.Zoo.ZooBenchmark.Options(path, zooRows, zooEntry.Output(onnx), QuantizationPrecision.Int8,
                fixedBatch, QuantizedBackend.OnnxRuntime)).Fit(zooRows.Calibration(context));
            data = context.Data.Cache(zooRows.HeldOut(context));
            (model, column, rowSize, rowDims) = (path, zooRows.Tensors[0].Name, zooRows.Tensors[0].Size, zooRows.Tensors[0].RowDims);
        }
        else if (fmnist)
        {
            data = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
            (model, column, rowSize, rowDims) = (Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx"), "input", 784, [1, 28, 28]);
        }
        else
        {
            data = context.Data.Cache(ResNet18Images.Load(context, FashionMnist.ReadTest(settings.DataFolder, limit: 64), 64));
            (model, column, rowSize, rowDims) = (ResNet18Images.ModelPath, ResNet18Images.InputColumn, ResNet18Images.InputSize, [3, 224, 224]);
        }
        using QuantizedModelTransformer int8 = zooModel ?? EngineBenchmark.Quantize(context, model, data, fmnist ? 1000 : 64, batch: 16, fmnist ? null : column,
            QuantizationPrecision.Int8, everyNode: true);
        float[] inputs = EngineBenchmark.Column(data, column).Take(rowSize * batch).ToArray();

        // ONNX Runtime with its profiler.
        Dictionary<string, (string Op, double Us)> perNode;
        using (var probe = new InferenceSession(int8.QuantizedModel))
            perNode = OrtKernelTimes(int8.QuantizedModel, [NamedOnnxValue.CreateFromTensor(probe.InputMetadata.Keys.First(), new DenseTensor<float>(inputs, [batch, .. rowDims]))], runs);
        double total = perNode.Values.Sum(v => v.Us);
        Console.WriteLine($"ONNX Runtime INT8, batch {batch}, {runs} runs (first included): {total / runs / batch:F1} us per row in kernels");
        foreach (var (node, (op, us)) in perNode)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {us / runs / batch,9:F1} us {100 * us / total,5:F1}%  {op,-22} {node}"));

        // The native engine over the same model: its per-op table is printed at exit when QATML_ENGINE_PROFILE=1.
        using var native = new QuantizedModelTransformer(context, int8.QuantizedModel, int8.Settings with { Backend = QuantizedBackend.Native, AllowBackendFallback = false, BatchSize = batch }, int8.Nodes);
        IBatchScorer scorer = native.BatchScorer;
        using IScoringBatch staging = scorer.CreateBatch(Enumerable.Repeat(true, scorer.Outputs.Length).ToArray(), scorer.BatchSize);
        Array.Copy(inputs, staging.InputBuffers[0], inputs.Length);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double best = double.MaxValue;
        for (int i = 0; i < runs; i++)
        {
            clock.Restart();
            staging.Run(batch);
            best = Math.Min(best, clock.Elapsed.TotalMilliseconds * 1000);
        }
        Console.WriteLine($"native INT8, batch {batch}, {runs} runs: best {best / batch:F1} us per row");
        if (Environment.GetEnvironmentVariable("QATML_ENGINE_PROFILE") != "1")
            Console.WriteLine("  (set QATML_ENGINE_PROFILE=1 for the engine's per-op table)");
        return 0;
    }

    /// <summary>ONNX Runtime's profiler over <paramref name="runs"/> runs (one thread, all optimizations): kernel time per node, with its op type.</summary>
    internal static Dictionary<string, (string Op, double Us)> OrtKernelTimes(byte[] model, IReadOnlyList<NamedOnnxValue> inputs, int runs)
    {
        string prefix = Path.Combine(Path.GetTempPath(), $"qatml-ort-profile-{Environment.ProcessId}");
        using var so = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        so.EnableProfiling = true;
        so.ProfileOutputPathPrefix = prefix;
        string profileFile;
        using (var session = new InferenceSession(model, so))
        {
            for (int i = 0; i < runs; i++)
                using (session.Run(inputs)) { }
            profileFile = session.EndProfiling();
        }
        var perNode = new Dictionary<string, (string Op, double Us)>();
        using (JsonDocument doc = JsonDocument.Parse(File.ReadAllText(profileFile)))
        {
            foreach (JsonElement e in doc.RootElement.EnumerateArray())
            {
                if (e.GetProperty("cat").GetString() != "Node" || !e.GetProperty("name").GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal))
                    continue;
                string node = e.GetProperty("name").GetString()![..^"_kernel_time".Length];
                string op = e.GetProperty("args").TryGetProperty("op_name", out JsonElement o) ? o.GetString()! : "?";
                double us = e.GetProperty("dur").GetDouble();
                perNode[node] = perNode.TryGetValue(node, out var v) ? (op, v.Us + us) : (op, us);
            }
        }
        File.Delete(profileFile);
        return perNode;
    }

    private static int Arg(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }
}

using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace QatMl.Benchmarks.Zoo;

/// <summary>
/// zoo &lt;folder&gt; [--rows N] [--only a,b]: every zoo model quantized with the one-liner's defaults to INT8 and W4A8 on
/// real rows (N calibration rows, N held-out rows; 32 by default). Per model: opset, size, whether preparation (opset
/// upgrade to 13 and 21) passes; per scheme: fits or the error, output cosine and SQNR, the task metric, the nodes left
/// float with their reasons, sizes, ONNX Runtime time float vs quantized, and whether the native engine runs it or
/// why not. A model that fails at any step is reported and the next one runs.
/// </summary>
internal static class ZooBenchmark
{
    private static readonly (string Name, QuantizationPrecision Precision)[] Schemes = [("INT8", QuantizationPrecision.Int8), ("W4A8", QuantizationPrecision.W4A8)];

    public static int Run(BenchmarkSettings settings, string[] args)
    {
        string? folder = args.Length > 1 && !args[1].StartsWith("--", StringComparison.Ordinal) ? args[1] : null;
        if (folder is null || !Directory.Exists(folder))
        {
            Console.Error.WriteLine("usage: QatMl.Benchmarks zoo <zoo folder> [--rows N] [--only name,name]   (build/zoo-fetch.md says how to fill the folder)");
            return 2;
        }
        int rows = Option(args, "--rows") is { } r ? int.Parse(r, CultureInfo.InvariantCulture) : 32;
        var only = Option(args, "--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
        // Old exporters list weights as graph inputs; ONNX Runtime warns once per weight and session.
        Microsoft.ML.OnnxRuntime.OrtEnv.Instance().EnvLogLevel = Microsoft.ML.OnnxRuntime.OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
        var context = new MLContext(seed: 1);
        var zoo = new ZooContext(context, Path.GetFullPath(folder), settings.DataFolder, rows, rows);
        Console.WriteLine($"zoo: {zoo.Folder}, {rows} calibration + {rows} held-out rows per model");
        int fitted = 0, attempts = 0;
        foreach (ZooModel model in ZooModels.All.Where(m => only is null || only.Contains(m.Name)))
        {
            var (ok, tried) = RunModel(zoo, model);
            fitted += ok;
            attempts += tried;
        }
        Console.WriteLine($"zoo: {fitted} of {attempts} model x scheme fits succeeded");
        return 0;
    }

    private static (int Fitted, int Attempts) RunModel(ZooContext zoo, ZooModel model)
    {
        Console.WriteLine();
        Console.WriteLine($"== {model.Name}: {model.Family}");
        Console.WriteLine($"   source: {model.Source}; licence: {model.Licence}");
        string path;
        OnnxModel onnx;
        try
        {
            path = model.ModelPath(zoo);
            onnx = OnnxModel.Load(path);
        }
        catch (Exception e)
        {
            Console.WriteLine($"   model: {Failure(e)}");
            return (0, Schemes.Length);
        }
        var inputs = onnx.Graph.RuntimeInputs;
        Console.WriteLine($"   file: {path} ({new FileInfo(path).Length / 1e6:F2} MB), ir {onnx.IrVersion}, ai.onnx opset {onnx.DefaultOpset}, {onnx.Graph.Nodes.Count} nodes, " +
                          $"inputs {string.Join(", ", inputs.Select(i => i.ToString()))}");
        Console.WriteLine($"   preparation: {Preparation(path, onnx.DefaultOpset, 13)}; for W4A8 {Preparation(path, onnx.DefaultOpset, 21)}");

        ZooRows rows;
        try
        {
            rows = model.Rows(zoo, inputs[0].Name);
            Console.WriteLine($"   rows: {rows.CalibrationCount} calibration, {rows.HeldOutCount} held out; " +
                              string.Join(", ", rows.Tensors.Select(t => $"{t.Name} {(t.IsFloat ? "float" : "int64")}[{string.Join(",", t.RowDims)}]")));
        }
        catch (Exception e)
        {
            Console.WriteLine($"   rows: {Failure(e)}");
            return (0, Schemes.Length);
        }
        string output = model.Output(onnx);
        bool fixedBatch = inputs[0].Shape is { Count: > 0 } shape && shape[0].Value is long batch && batch > 0;
        int fitted = 0;
        foreach (var (scheme, precision) in Schemes)
            fitted += RunScheme(zoo, model, path, rows, output, scheme, precision, fixedBatch) ? 1 : 0;
        return (fitted, Schemes.Length);
    }

    /// <summary>PostTraining's graph preparation (BN folding, constant folding, opset upgrade) and an upgrade to <paramref name="opset"/>.</summary>
    private static string Preparation(string path, long shipped, int opset)
    {
        try
        {
            OnnxModel prepared = PostTrainingEstimator.Prepare(new PostTrainingOptions { ModelPath = path }, path);
            OnnxRewrites.UpgradeOpset(prepared, opset);
            OnnxValidator.Validate(prepared);
            return $"opset {shipped} -> {prepared.DefaultOpset} ok";
        }
        catch (Exception e)
        {
            return $"opset {opset}: {Failure(e)}";
        }
    }

    internal static PostTrainingOptions Options(string path, ZooRows rows, string output, QuantizationPrecision precision, bool fixedBatch, QuantizedBackend backend)
    {
        var options = new PostTrainingOptions
        {
            ModelPath = path, Precision = precision, SampleCount = rows.CalibrationCount, IntraOpNumThreads = 1,
            BatchSize = fixedBatch ? 1 : 8, Backend = backend,
        };
        foreach (ZooTensor tensor in rows.Tensors)
        {
            options.Inputs.Add(new OnnxColumnBinding(tensor.Name, tensor.Name));
            options.InputShapes[tensor.Name] = tensor.RowDims;
        }
        options.Outputs.Add(new OnnxColumnBinding("zoo_output", output));
        return options;
    }

    private static bool RunScheme(ZooContext zoo, ZooModel model, string path, ZooRows rows, string output, string scheme, QuantizationPrecision precision, bool fixedBatch)
    {
        var context = zoo.Context;
        QuantizedModelTransformer quantized;
        try
        {
            quantized = context.Quantization.PostTraining(Options(path, rows, output, precision, fixedBatch, QuantizedBackend.OnnxRuntime)).Fit(rows.Calibration(context));
        }
        catch (Exception e)
        {
            Console.WriteLine($"   {scheme,-5} fit: {Failure(e)}");
            return false;
        }
        using (quantized)
        {
            var line = new List<string> { "fits" };
            IDataView heldOut = rows.HeldOut(context);
            try
            {
                var comparison = context.Quantization.Compare(path, quantized, heldOut, new ComparisonOptions { OutputTensorName = output, PerLayer = false, LatencyRepeats = 3 });
                line.Add($"output cosine {comparison.MeanCosineSimilarity:F4}, SQNR {comparison.OutputSqnrDb:F1} dB");
                line.Add($"size {comparison.FloatModelBytes / 1e6:F2} -> {comparison.QuantizedModelBytes / 1e6:F2} MB");
                if (comparison.FloatTime is { } f && comparison.QuantizedTime is { } q)
                    line.Add($"ORT {f.TotalMilliseconds / rows.HeldOutCount:F2} -> {q.TotalMilliseconds / rows.HeldOutCount:F2} ms/row ({comparison.Speedup:F2}x)");
            }
            catch (Exception e)
            {
                line.Add($"compare: {Failure(e)}");
            }
            if (model.Metric is { } metric)
            {
                try
                {
                    float[] quantizedOutput = EngineBenchmark.Column(quantized.Transform(heldOut), "zoo_output");
                    float[] floatOutput = FloatOutput(context, path, rows, output, fixedBatch, heldOut);
                    line.Add(metric(floatOutput, quantizedOutput, rows));
                }
                catch (Exception e)
                {
                    line.Add($"task metric: {Failure(e)}");
                }
            }
            Console.WriteLine($"   {scheme,-5} {string.Join("; ", line)}");
            var floatNodes = quantized.FloatNodes;
            Console.WriteLine($"         float nodes: {quantized.Nodes.Count - floatNodes.Count} of {quantized.Nodes.Count} quantized; " +
                              string.Join("; ", floatNodes.GroupBy(n => $"{n.OpType}: {n.Reason}").OrderByDescending(g => g.Count()).Take(6)
                                  .Select(g => $"{g.Count()}x {Truncate(g.Key, 120)}")));
        }
        Console.WriteLine($"         native engine: {Native(zoo, path, rows, output, precision, fixedBatch)}");
        return true;
    }

    private static float[] FloatOutput(MLContext context, string path, ZooRows rows, string output, bool fixedBatch, IDataView heldOut)
    {
        var options = Options(path, rows, output, QuantizationPrecision.Int8, fixedBatch, QuantizedBackend.OnnxRuntime).ToScoringOptions(File.ReadAllBytes(path));
        using var scorer = context.Quantization.ScoreOnnxModel(options).Fit(heldOut);
        return EngineBenchmark.Column(scorer.Transform(heldOut), "zoo_output");
    }

    /// <summary>Whether the native INT8 engine takes the quantized model, or the reason it falls back to ONNX Runtime.</summary>
    private static string Native(ZooContext zoo, string path, ZooRows rows, string output, QuantizationPrecision precision, bool fixedBatch)
    {
        try
        {
            using var native = zoo.Context.Quantization.PostTraining(Options(path, rows, output, precision, fixedBatch, QuantizedBackend.Native)).Fit(rows.Calibration(zoo.Context));
            return native.Backend == QuantizedBackend.Native
                ? "runs natively"
                : $"falls back to ONNX Runtime ({native.BackendFallbackReason?.Length ?? 0} chars of reasons): {Truncate(native.BackendFallbackReason ?? "(no reason given)", 300)}";
        }
        catch (Exception e)
        {
            return Failure(e);
        }
    }

    /// <summary>An exception as one line: type, message (shortened) and the first library frame, where it was thrown.</summary>
    private static string Failure(Exception e)
    {
        string? frame = e.StackTrace?.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Contains("Microsoft.ML.Quantization.", StringComparison.Ordinal));
        return $"FAILED {e.GetType().Name}: {Truncate(e.Message.ReplaceLineEndings(" "), 400)}" + (frame is null ? "" : $" [{Truncate(frame, 160)}]");
    }

    private static string Truncate(string text, int length) => text.Length <= length ? text : text[..length] + $"... (+{text.Length - length} chars)";

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace QatMl.Benchmarks.Zoo;

/// <summary>
/// zoo &lt;folder&gt; [--rows N] [--only a,b] [--profile] [--tools bias-correction,cle,smoothquant,auto,entropy]: every zoo model quantized with the one-liner's defaults to INT8 and W4A8 on
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
        Profile = args.Contains("--profile");
        Tools = (Option(args, "--tools") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.OrdinalIgnoreCase);
        if (Tools.Except(["bias-correction", "cle", "smoothquant", "auto", "entropy", "none"], StringComparer.OrdinalIgnoreCase).FirstOrDefault() is { } unknown)
        {
            Console.Error.WriteLine($"unknown tool '{unknown}' (--tools none|bias-correction,cle,smoothquant,auto,entropy)");
            return 2;
        }
        var only = Option(args, "--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
        // Old exporters list weights as graph inputs; ONNX Runtime warns once per weight and session.
        Microsoft.ML.OnnxRuntime.OrtEnv.Instance().EnvLogLevel = Microsoft.ML.OnnxRuntime.OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
        var context = new MLContext(seed: 1);
        var zoo = new ZooContext(context, Path.GetFullPath(folder), settings.DataFolder, rows, rows);
        Console.WriteLine($"zoo: {zoo.Folder}, {rows} calibration + {rows} held-out rows per model{(Tools.Count > 0 ? $"; tools: {string.Join(", ", Tools)}" : "")}");
        var results = new List<SchemeResult>();
        foreach (ZooModel model in ZooModels.All.Where(m => only is null || only.Contains(m.Name)))
            results.AddRange(RunModel(zoo, model));
        Console.WriteLine();
        Console.WriteLine($"zoo: {results.Count(r => r.Fits)} of {results.Count} model x scheme fits succeeded");
        PrintSummary(results);
        return 0;
    }

    /// <summary>--profile: ONNX Runtime's per-op-type kernel times, float and quantized, on the held-out rows.</summary>
    private static bool Profile { get; set; }

    /// <summary>
    /// --tools a,b: the accuracy tools to use instead of the one-liner's defaults (bias correction and equalization on):
    /// bias-correction, cle, smoothquant, auto or entropy calibration; "none" for plain calibration.
    /// </summary>
    private static HashSet<string> Tools { get; set; } = [];

    /// <summary>One line of the summary table.</summary>
    private sealed record SchemeResult(string Model, string Scheme, bool Fits)
    {
        public double? Cosine { get; init; }
        public string? Metric { get; init; }
        public int FloatNodes { get; init; }
        public int Raised { get; init; }
        public int DataNodes { get; init; }
        public double? SizeRatio { get; init; }
        public double? TimeRatio { get; init; }
        public string Native { get; init; } = "";
    }

    private static void PrintSummary(List<SchemeResult> results)
    {
        Console.WriteLine();
        Console.WriteLine("| model | scheme | fits | output cosine | task metric | float nodes | size ratio | ORT time quantized/float | native engine |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var r in results)
            Console.WriteLine($"| {r.Model} | {r.Scheme} | {(r.Fits ? "yes" : "no")} | {r.Cosine?.ToString("F4", CultureInfo.InvariantCulture) ?? "-"} | {r.Metric ?? "-"} | " +
                              $"{(r.Fits ? $"{r.FloatNodes} of {r.DataNodes}{(r.Raised > 0 ? $" ({r.Raised} raised to W8)" : "")}" : "-")} | {r.SizeRatio?.ToString("F3", CultureInfo.InvariantCulture) ?? "-"} | " +
                              $"{r.TimeRatio?.ToString("F2", CultureInfo.InvariantCulture) ?? "-"} | {r.Native} |");
    }

    private static List<SchemeResult> RunModel(ZooContext zoo, ZooModel model)
    {
        List<SchemeResult> Failed(string why) => [.. Schemes.Select(x => new SchemeResult(model.Name, x.Name, false) { Native = why })];
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
            return Failed("model missing");
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
            return Failed("rows missing");
        }
        string output = model.Output(onnx);
        bool fixedBatch = FixedBatch(onnx, rows);
        return [.. Schemes.Select(x => RunScheme(zoo, model, path, rows, output, x.Name, x.Precision, fixedBatch))];
    }

    /// <summary>One row per run for a pinned batch, or for inputs declared whole (no batch dimension: Silero's state and rate).</summary>
    internal static bool FixedBatch(OnnxModel onnx, ZooRows rows)
    {
        var inputs = onnx.Graph.RuntimeInputs;
        return inputs[0].Shape is { Count: > 0 } shape && shape[0].Value is long batch && batch > 0
               || rows.Tensors.Any(t => inputs.FirstOrDefault(i => i.Name == t.Name)?.Shape is { } s && s.Count == t.RowDims.Length);
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
        // Defaults (bias correction and equalization on) unless --tools names the set to use.
        if (Tools.Count > 0)
        {
            options.BiasCorrection = Tools.Contains("bias-correction");
            options.CrossLayerEqualization = Tools.Contains("cle");
        }
        options.SmoothQuant = Tools.Contains("smoothquant");
        if (Tools.Contains("auto"))
            options.CalibrationMethod = Microsoft.ML.Quantization.Calibration.CalibrationMethod.Auto;
        if (Tools.Contains("entropy"))
            options.CalibrationMethod = Microsoft.ML.Quantization.Calibration.CalibrationMethod.Entropy;
        return options;
    }

    private static SchemeResult RunScheme(ZooContext zoo, ZooModel model, string path, ZooRows rows, string output, string scheme, QuantizationPrecision precision, bool fixedBatch)
    {
        var context = zoo.Context;
        var result = new SchemeResult(model.Name, scheme, false);
        QuantizedModelTransformer quantized;
        try
        {
            quantized = context.Quantization.PostTraining(Options(path, rows, output, precision, fixedBatch, QuantizedBackend.OnnxRuntime)).Fit(rows.Calibration(context));
        }
        catch (Exception e)
        {
            Console.WriteLine($"   {scheme,-5} fit: {Failure(e)}");
            return result with { Native = "-" };
        }
        using (quantized)
        {
            result = result with { Fits = true };
            var line = new List<string> { "fits" };
            IDataView heldOut = rows.HeldOut(context);
            try
            {
                var comparison = context.Quantization.Compare(path, quantized, heldOut, new ComparisonOptions { OutputTensorName = output, PerLayer = false, LatencyRepeats = 3 });
                line.Add($"output cosine {comparison.MeanCosineSimilarity:F4}, SQNR {comparison.OutputSqnrDb:F1} dB");
                line.Add($"size {comparison.FloatModelBytes / 1e6:F2} -> {comparison.QuantizedModelBytes / 1e6:F2} MB");
                result = result with { Cosine = comparison.MeanCosineSimilarity, SizeRatio = (double)comparison.QuantizedModelBytes / comparison.FloatModelBytes };
                if (comparison.FloatTime is { } f && comparison.QuantizedTime is { } q)
                {
                    line.Add($"ORT {f.TotalMilliseconds / rows.HeldOutCount:F2} -> {q.TotalMilliseconds / rows.HeldOutCount:F2} ms/row ({comparison.Speedup:F2}x)");
                    result = result with { TimeRatio = q.TotalMilliseconds / f.TotalMilliseconds };
                }
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
                    string text = metric(floatOutput, quantizedOutput, rows);
                    line.Add(text);
                    result = result with { Metric = text };
                }
                catch (Exception e)
                {
                    line.Add($"task metric: {Failure(e)}");
                }
            }
            Console.WriteLine($"   {scheme,-5} {string.Join("; ", line)}");
            // Float compute nodes: shape arithmetic and integer ops are not counted (they have nothing to quantize).
            var data = quantized.Nodes.Where(n => n.Reason is null || !(n.Reason.Contains("do not depend on the input data", StringComparison.Ordinal)
                                                                        || n.Reason.Contains("no float data", StringComparison.Ordinal))).ToList();
            var floatNodes = data.Where(n => n.Precision is null).ToList();
            result = result with { FloatNodes = floatNodes.Count, DataNodes = data.Count };
            Console.WriteLine($"         float nodes: {floatNodes.Count} of {data.Count} data nodes ({quantized.Nodes.Count - data.Count} shape/integer nodes not counted)" +
                              (floatNodes.Count == 0 ? "" : "; " + string.Join("; ", floatNodes.GroupBy(n => $"{n.OpType}: {(n.Reason!.StartsWith("kept float by the sensitivity", StringComparison.Ordinal) ? "kept float by the sensitivity analysis" : n.Reason)}")
                                  .OrderByDescending(g => g.Count()).Take(6).Select(g => $"{g.Count()}x {Truncate(g.Key, 120)}"))));
            result = result with { Raised = quantized.Sensitivity?.Raised.Count() ?? 0 };
            if (quantized.Sensitivity is { } s)
                Console.WriteLine($"         sensitivity ({s.Rows} calibration rows, {s.Evaluations} runs): {s.Metric} {s.AllQuantized:F4} all quantized -> {s.Final:F4}" +
                                  (s.Raised.Any() ? $"; {s.Raised.Count()} given 8-bit weights" : "") +
                                  (s.KeptFloat.Any() ? $"; kept float: {string.Join(", ", s.KeptFloat.Take(8).Select(n => $"{n.Name} ({n.OpType}, alone {n.Alone:F4})"))}{(s.KeptFloat.Count() > 8 ? $" and {s.KeptFloat.Count() - 8} more" : "")}" : ""));
            var written = OnnxModel.Parse(quantized.QuantizedModel).Graph;
            int sixteen = written.Nodes.Count(n => n.OpType == "QuantizeLinear" && n.Inputs.Count > 2
                && written.TryGetInitializer(n.Inputs[2], out var zp) && zp.ElementType is OnnxElementType.UInt16 or OnnxElementType.Int16);
            if (sixteen > 0)
                Console.WriteLine($"         16-bit activations: {sixteen} tensors");
            if (Profile)
                PrintProfile(path, quantized.QuantizedModel, rows, fixedBatch);
            string native = Native(quantized, path);
            Console.WriteLine($"         native engine: {native}");
            return result with { Native = native.StartsWith("runs natively", StringComparison.Ordinal) ? "runs" : "falls back" };
        }
    }

    private static float[] FloatOutput(MLContext context, string path, ZooRows rows, string output, bool fixedBatch, IDataView heldOut)
    {
        var options = Options(path, rows, output, QuantizationPrecision.Int8, fixedBatch, QuantizedBackend.OnnxRuntime).ToScoringOptions(File.ReadAllBytes(path));
        using var scorer = context.Quantization.ScoreOnnxModel(options).Fit(heldOut);
        return EngineBenchmark.Column(scorer.Transform(heldOut), "zoo_output");
    }

    /// <summary>Kernel time per op type (float and quantized models, the held-out rows in batches of 8), the largest first.</summary>
    private static void PrintProfile(string floatPath, byte[] quantizedModel, ZooRows rows, bool oneRow)
    {
        int batch = oneRow ? 1 : Math.Min(8, rows.HeldOutCount);
        var inputs = rows.Tensors.Select((t, k) =>
        {
            var values = rows.Rows.Skip(rows.CalibrationCount).Take(batch).Select(r => r[k]).ToList();
            int[] dims = oneRow && OnnxModel.Load(floatPath).Graph.RuntimeInputs.First(i => i.Name == t.Name).Shape?.Count == t.RowDims.Length ? t.RowDims : [batch, .. t.RowDims];
            return t.IsFloat
                ? Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor(t.Name, new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(values.SelectMany(v => (float[])v).ToArray(), dims))
                : Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor(t.Name, new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<long>(values.SelectMany(v => (long[])v).ToArray(), dims));
        }).ToList();
        foreach (var (label, bytes) in new[] { ("float", File.ReadAllBytes(floatPath)), ("quantized", quantizedModel) })
        {
            var times = EngineProfile.OrtKernelTimes(bytes, inputs, runs: 5);
            double total = times.Values.Sum(v => v.Us) / 5 / batch;
            Console.WriteLine($"         ORT profile {label}: {total:F0} us/row in kernels; " + string.Join(", ", times.Values.GroupBy(v => v.Op)
                .Select(g => (Op: g.Key, Us: g.Sum(v => v.Us) / 5 / batch, Count: g.Count())).OrderByDescending(g => g.Us).Take(10)
                .Select(g => $"{g.Op} {g.Us:F0} us ({g.Count}x)")));
        }
    }

    /// <summary>Whether the native INT8 engine takes the quantized model, or the reasons it falls back to ONNX Runtime.</summary>
    private static string Native(QuantizedModelTransformer quantized, string path)
    {
        try
        {
            var settings = quantized.Settings;
            using var engine = Microsoft.ML.Quantization.NativeEngine.NativeInt8Engine.TryLoad(quantized.QuantizedModel, path, settings.Inputs, settings.Outputs,
                settings.InputShapes, 1, out IReadOnlyList<string> unsupported);
            string reasons = string.Join("; ", unsupported);
            return engine is not null ? "runs natively" : $"falls back to ONNX Runtime ({reasons.Length} chars of reasons): {Truncate(reasons, 300)}";
        }
        catch (Exception e)
        {
            return Failure(e);
        }
    }

    /// <summary>An exception as one line: type, message (shortened) and the first library frame, where it was thrown.</summary>
    internal static string Failure(Exception e)
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

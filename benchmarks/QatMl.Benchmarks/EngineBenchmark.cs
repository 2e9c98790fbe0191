using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.NativeEngine;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// The native INT8 engine's figures, all measured in one run on one thread (the process is pinned to one core):
///  - images/s of FmnistNet (batch 1, 32, 256), ResNet18 (batch 1, 16) and, with --zoo FOLDER, every zoo model with one
///    float input that fits (batch 1, 8; build/zoo-fetch.md), for ONNX Runtime FP32, ONNX Runtime INT8 (the same QDQ
///    model), the native engine INT8 and the native engine W4A8 (int4 weights), timed two ways: the backend's batch call
///    alone (staging buffers reused, no IDataView) and through the transformer's IDataView cursor; --batch 1,16 sets the
///    batches of every model, --only a,b the zoo models, --rows N their calibration and timed rows (16);
///  - ratios native / ORT INT8 (goal >= 1.2x), native / ORT FP32 (goal >= 3x on FmnistNet and ResNet18, >= 2x on the
///    zoo), native W4A8 / native INT8;
///  - the largest difference of the native outputs from ONNX Runtime's, in LSBs of the output scale;
///  - for a zoo model the engine cannot run, the reasons (the nodes and ops), instead of times;
///  - resident memory a loaded model adds (one child process per model and backend: RSS after loading and one batch,
///    minus RSS before loading).
/// </summary>
internal static class EngineBenchmark
{
    private sealed record Contender(string Name, Func<int, IDisposable> Create, Func<IDisposable, IBatchScorer> Scorer, Func<IDisposable, ITransformer> Transformer);

    internal static int Run(BenchmarkSettings settings, string[] args)
    {
        var context = new MLContext(seed: 0);
        int[]? batches = BenchmarkSettings.Arg(args, "--batch")?.Split(',').Select(b => int.Parse(b, CultureInfo.InvariantCulture)).ToArray();
        string fmnist = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx");
        IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
        var testRows = FashionMnist.Rows(FashionMnist.ReadTest(settings.DataFolder, limit: 2048));
        IDataView test = context.Data.Cache(context.Data.LoadFromEnumerable(testRows));
        float[] images = testRows.SelectMany(r => r.Input).ToArray();
        Console.WriteLine($"FmnistNet: PTQ on 1000 calibration images (MinMax, per-channel), {testRows.Count} test images per pass, one thread, best of {settings.Repeat}; images/s");
        var fmnistModels = Quantize(context, fmnist, calibration, 1000, batch: 64, null);
        Compare(settings, context, "FmnistNet", fmnist, fmnistModels, test, images, 784, [1, 28, 28], batches ?? [1, 32, 256]);

        if (!args.Contains("--no-resnet"))
        {
            const int count = 64;
            IDataView resnetImages = context.Data.Cache(ResNet18Images.Load(context, FashionMnist.ReadTest(settings.DataFolder, limit: count), count));
            float[] pixels = Column(resnetImages, ResNet18Images.InputColumn);
            Console.WriteLine();
            Console.WriteLine($"ResNet18 (224x224 from Fashion-MNIST): PTQ on the same {count} images, {count} images per pass, one thread, best of {settings.Repeat}; images/s");
            var resnetModels = Quantize(context, ResNet18Images.ModelPath, resnetImages, count, batch: 16, ResNet18Images.InputColumn);
            Compare(settings, context, "ResNet18", ResNet18Images.ModelPath, resnetModels, resnetImages, pixels, ResNet18Images.InputSize, [3, 224, 224],
                batches ?? [1, 16]);
        }
        if (BenchmarkSettings.Arg(args, "--zoo") is { } zoo)
            ZooModels(settings, args, zoo, batches ?? [1, 8]);
        return 0;
    }

    /// <summary>Every zoo model (except ResNet18, above, unless --only names it: its default PTQ) with one float input: PTQ on real rows, then the same table.</summary>
    private static void ZooModels(BenchmarkSettings settings, string[] args, string folder, int[] batches)
    {
        int rows = BenchmarkSettings.Arg(args, "--rows") is { } r ? int.Parse(r, CultureInfo.InvariantCulture) : 16;
        var only = BenchmarkSettings.Arg(args, "--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
        OrtEnv.Instance().EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
        var context = new MLContext(seed: 1);
        var zoo = new QatMl.Benchmarks.Zoo.ZooContext(context, Path.GetFullPath(folder), settings.DataFolder, rows, rows);
        foreach (QatMl.Benchmarks.Zoo.ZooModel model in QatMl.Benchmarks.Zoo.ZooModels.All.Where(m => only is null ? m.Name != "resnet18" : only.Contains(m.Name)))
        {
            Console.WriteLine();
            try
            {
                string path = model.ModelPath(zoo);
                OnnxModel onnx = OnnxModel.Load(path);
                var inputs = onnx.Graph.RuntimeInputs;
                QatMl.Benchmarks.Zoo.ZooRows data = model.Rows(zoo, inputs[0].Name);
                bool fixedBatch = inputs[0].Shape is { Count: > 0 } shape && shape[0].Value is long b && b > 0;
                string output = model.Output(onnx);
                if (data.Tensors.Count != 1 || !data.Tensors[0].IsFloat)
                {
                    // An input declared as a whole tensor (silero's state and sample rate) has no batch: one row per run.
                    bool wholeTensors = data.Tensors.Any(t => inputs.FirstOrDefault(i => i.Name == t.Name)?.Shape is { } full && full.Count == t.RowDims.Length);
                    TokenModel(settings, context, model, path, data, output, fixedBatch || wholeTensors, fixedBatch || wholeTensors ? [1] : batches);
                    continue;
                }
                QuantizedModelTransformer Fit(QuantizationPrecision precision)
                    => context.Quantization.PostTraining(QatMl.Benchmarks.Zoo.ZooBenchmark.Options(path, data, output, precision, fixedBatch, QuantizedBackend.OnnxRuntime))
                        .Fit(data.Calibration(context));
                var models = new Quantized(Fit(QuantizationPrecision.Int8), Fit(QuantizationPrecision.W4A8));
                IDataView timed = context.Data.Cache(data.HeldOut(context));
                float[] inputValues = Column(timed, data.Tensors[0].Name);
                int[] dims = data.Tensors[0].RowDims;
                Console.WriteLine($"{model.Name} ({model.Family}): PTQ on {data.CalibrationCount} rows, {data.HeldOutCount} rows per pass, one thread, best of {settings.Repeat}; rows/s");
                using (var native = NativeInt8Engine.TryLoad(models.Int8.QuantizedModel, model.Name, models.Int8.Settings.Inputs, models.Int8.Settings.Outputs,
                           models.Int8.Settings.InputShapes, 1, out IReadOnlyList<string> reasons))
                {
                    if (native is null)
                    {
                        Console.WriteLine($"  native engine: does not run it: {string.Join("; ", reasons)}");
                        continue;
                    }
                }
                Compare(settings, context, model.Name, path, models, timed, inputValues, data.Tensors[0].Size, dims, fixedBatch ? [1] : batches, memory: false);
                Console.WriteLine($"  INT8 {PerTensorDifferences(models.Int8, inputValues, dims, data.HeldOutCount)}");
                Console.WriteLine($"  W4A8 {PerTensorDifferences(models.W4A8, inputValues, dims, data.HeldOutCount)}");
            }
            catch (Exception e)
            {
                Console.WriteLine($"{model.Name}: FAILED {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
            }
        }
    }

    /// <summary>
    /// A zoo model with several or integer inputs (token ids, masks): PTQ INT8, then the rows through each backend's
    /// transformer (IDataView; the raw call takes one float buffer), the output difference and the per-tensor comparison.
    /// </summary>
    private static void TokenModel(BenchmarkSettings settings, MLContext context, QatMl.Benchmarks.Zoo.ZooModel model, string path,
        QatMl.Benchmarks.Zoo.ZooRows data, string output, bool oneRowPerRun, int[] batches)
    {
        QuantizedModelTransformer int8 = context.Quantization.PostTraining(
            QatMl.Benchmarks.Zoo.ZooBenchmark.Options(path, data, output, QuantizationPrecision.Int8, oneRowPerRun, QuantizedBackend.OnnxRuntime)).Fit(data.Calibration(context));
        Console.WriteLine($"{model.Name} ({model.Family}): inputs {string.Join(", ", data.Tensors.Select(t => $"{t.Name} [{string.Join(", ", t.RowDims)}]"))}; " +
                          $"PTQ on {data.CalibrationCount} rows, {data.HeldOutCount} rows per pass, one thread, best of {settings.Repeat}; rows/s through IDataView");
        using (var native = NativeInt8Engine.TryLoad(int8.QuantizedModel, model.Name, int8.Settings.Inputs, int8.Settings.Outputs, int8.Settings.InputShapes, 1,
                   out IReadOnlyList<string> reasons))
        {
            if (native is null)
            {
                Console.WriteLine($"  native engine: does not run it: {string.Join("; ", reasons)}");
                return;
            }
            Console.WriteLine($"  native INT8: {native.Ops.Count} plan ops ({native.NativeOpCount} after fusion), packed weights {native.WeightBytes:N0} bytes, activations {native.ArenaBytesPerRow:N0} bytes/row");
        }
        IDataView timed = context.Data.Cache(data.HeldOut(context));
        byte[] floatBytes = File.ReadAllBytes(path);
        Console.WriteLine($"  {"batch",5} {"ORT FP32",10} {"ORT INT8",10} {"nat INT8",10}   nat/ORT-INT8  nat/ORT-FP32");
        foreach (int batch in batches)
        {
            var transformers = new ITransformer[]
            {
                context.Quantization.ScoreOnnxModel((int8.Settings with { BatchSize = batch, IntraOpNumThreads = 1 }).ToScoringOptions(floatBytes)).Fit(timed),
                new QuantizedModelTransformer(context, int8.QuantizedModel, int8.Settings with { Backend = QuantizedBackend.OnnxRuntime, AllowBackendFallback = false, BatchSize = batch }, int8.Nodes),
                new QuantizedModelTransformer(context, int8.QuantizedModel, int8.Settings with { Backend = QuantizedBackend.Native, AllowBackendFallback = false, BatchSize = batch }, int8.Nodes),
            };
            var speed = transformers.Select(t => data.HeldOutCount / settings.Best(() => ScoringBenchmark.Consume(t.Transform(timed), "zoo_output")).Wall).ToArray();
            Console.WriteLine($"  {batch,5} {speed[0],10:N0} {speed[1],10:N0} {speed[2],10:N0}   {speed[2] / speed[1],11:F2}x {speed[2] / speed[0],12:F2}x");
            if (batch == batches[^1])
            {
                float[] ort = Column(transformers[1].Transform(timed), "zoo_output"), nat = Column(transformers[2].Transform(timed), "zoo_output");
                Console.WriteLine($"  outputs over {data.HeldOutCount} rows: native INT8 vs ORT INT8 {Difference(int8, ort, nat)}");
            }
            foreach (var t in transformers)
                (t as IDisposable)?.Dispose();
        }
        var inputs = data.Tensors.Select((t, i) => (t.Name, Values: Stack(data, i), t.RowDims)).ToList();
        Console.WriteLine($"  INT8 {PerTensorDifferences(int8, inputs, data.HeldOutCount)}");
    }

    /// <summary>Input <paramref name="index"/> of the held-out rows, row after row (float[] or long[]).</summary>
    private static Array Stack(QatMl.Benchmarks.Zoo.ZooRows data, int index)
    {
        var rows = data.Rows.Skip(data.CalibrationCount).Select(r => r[index]).ToList();
        return data.Tensors[index].IsFloat ? rows.SelectMany(r => (float[])r).ToArray() : rows.SelectMany(r => (long[])r).ToArray();
    }

    private sealed record Quantized(QuantizedModelTransformer Int8, QuantizedModelTransformer W4A8);

    /// <summary>
    /// FmnistNet and ResNet18 with every node quantized (the sensitivity analysis off: by default ResNet18's PTQ keeps its
    /// stem convolution float, which the engine runs as a plain float loop), so the backends compare on one integer model.
    /// </summary>
    private static Quantized Quantize(MLContext context, string model, IDataView calibration, int samples, int batch, string? column)
        => new(Quantize(context, model, calibration, samples, batch, column, QuantizationPrecision.Int8, everyNode: true),
               Quantize(context, model, calibration, samples, batch, column, QuantizationPrecision.W4A8, everyNode: true));

    /// <summary>PTQ of <paramref name="model"/> on one ONNX Runtime thread (<paramref name="column"/>: the input column when it is not named as the graph input).</summary>
    internal static QuantizedModelTransformer Quantize(MLContext context, string model, IDataView calibration, int samples, int batch, string? column,
        QuantizationPrecision precision, bool everyNode = false)
    {
        var options = new PostTrainingOptions { ModelPath = model, IntraOpNumThreads = 1, SampleCount = samples, BatchSize = batch, Precision = precision };
        if (everyNode)
            options.MinOutputCosine = 0;
        if (column is not null)
            options.Inputs.Add(new OnnxColumnBinding(column, column));
        return context.Quantization.PostTraining(options).Fit(calibration);
    }

    private static void Compare(BenchmarkSettings settings, MLContext context, string name, string floatModel, Quantized models, IDataView data,
        float[] inputs, int rowSize, int[] rowDims, int[] batches, bool memory = true)
    {
        QuantizedModelTransformer WithBackend(QuantizedModelTransformer q, QuantizedBackend backend, int batch)
            => new(context, q.QuantizedModel, q.Settings with { Backend = backend, AllowBackendFallback = false, BatchSize = batch }, q.Nodes);
        byte[] floatBytes = File.ReadAllBytes(floatModel);
        var contenders = new Contender[]
        {
            // The float model with the quantized model's bindings and declared shapes, on one thread.
            new("ORT FP32", b => context.Quantization.ScoreOnnxModel((models.Int8.Settings with { BatchSize = b, IntraOpNumThreads = 1 }).ToScoringOptions(floatBytes)).Fit(data),
                t => ((OnnxModelScoringTransformer)t).Scorer, t => (ITransformer)t),
            new("ORT INT8", b => WithBackend(models.Int8, QuantizedBackend.OnnxRuntime, b), t => ((QuantizedModelTransformer)t).BatchScorer, t => (ITransformer)t),
            new("native INT8", b => WithBackend(models.Int8, QuantizedBackend.Native, b), t => ((QuantizedModelTransformer)t).BatchScorer, t => (ITransformer)t),
            new("native W4A8", b => WithBackend(models.W4A8, QuantizedBackend.Native, b), t => ((QuantizedModelTransformer)t).BatchScorer, t => (ITransformer)t),
        };
        int n = inputs.Length / rowSize;
        Console.WriteLine($"  {"batch",5} {"timing",-10} {"ORT FP32",10} {"ORT INT8",10} {"nat INT8",10} {"nat W4A8",10}   nat/ORT-INT8 (>=1.2)  nat/ORT-FP32 (>=3)  W4A8/INT8");
        foreach (int batch in batches)
        {
            var raw = new double[contenders.Length];
            var viaView = new double[contenders.Length];
            float[]?[] outputs = new float[contenders.Length][];
            for (int c = 0; c < contenders.Length; c++)
            {
                using IDisposable t = contenders[c].Create(batch);
                IBatchScorer scorer = contenders[c].Scorer(t);
                using IScoringBatch staging = scorer.CreateBatch(Enumerable.Repeat(true, scorer.Outputs.Length).ToArray(), scorer.BatchSize);
                float[]? all = null;  // the output's row size is known after a run (models with symbolic output dims)
                void Pass(bool keep)
                {
                    for (int r0 = 0; r0 < n; r0 += batch)
                    {
                        int rows = Math.Min(batch, n - r0);
                        Array.Copy(inputs, (long)r0 * rowSize, staging.InputBuffers[0], 0, (long)rows * rowSize);
                        staging.Run(rows);
                        if (!keep)
                            continue;
                        int outSize = staging.OutputRowSizes[0];
                        all ??= new float[(long)n * outSize];
                        Array.Copy(staging.OutputBuffers[0], 0, all, (long)r0 * outSize, (long)rows * outSize);
                    }
                }
                Pass(keep: true);
                outputs[c] = all;
                raw[c] = n / settings.Best(() => Pass(keep: false)).Wall;
                ITransformer transformer = contenders[c].Transformer(t);
                string column = transformer is QuantizedModelTransformer q ? q.OutputColumnNames[0] : ((OnnxModelScoringTransformer)transformer).OutputColumnNames[0];
                viaView[c] = n / settings.Best(() => ScoringBenchmark.Consume(transformer.Transform(data), column)).Wall;
            }
            Print(batch, "raw call", raw);
            Print(batch, "IDataView", viaView);
            if (batch == batches[^1])
                Console.WriteLine($"  outputs over {n} rows: native INT8 vs ORT INT8 {Difference(models.Int8, outputs[1]!, outputs[2]!)}; " +
                                  $"native W4A8 vs ORT W4A8 {Difference(models.W4A8, RunOrt(models.W4A8, inputs, n, rowDims, batch), outputs[3]!)}");
        }
        foreach (var (label, model) in new[] { ("INT8", models.Int8), ("W4A8", models.W4A8) })
        {
            using var engine = NativeInt8Engine.TryLoad(model.QuantizedModel, name, model.Settings.Inputs, model.Settings.Outputs, model.Settings.InputShapes, 1, out _)!;
            Console.WriteLine($"  native {label}: {engine.Ops.Count} plan ops ({engine.NativeOpCount} after fusion), packed weights {engine.WeightBytes:N0} bytes (QDQ file {model.QuantizedModel.Length:N0}), activations {engine.ArenaBytesPerRow:N0} bytes/image (without reuse {engine.NaiveBytesPerRow:N0})");
        }
        if (!memory)
            return;
        int memoryBatch = batches[^1];
        string file = Path.Combine(Path.GetTempPath(), $"qatml-engine-{name}-{Environment.ProcessId}.onnx");
        try
        {
            File.WriteAllBytes(file, models.Int8.QuantizedModel);
            double ort = MemoryChild(file, "ort", memoryBatch, rowDims), native = MemoryChild(file, "native", memoryBatch, rowDims);
            File.WriteAllBytes(file, models.W4A8.QuantizedModel);
            double native4 = MemoryChild(file, "native", memoryBatch, rowDims);
            Console.WriteLine($"  resident memory added by loading the INT8 model and one batch of {memoryBatch}: ORT {ort:F1} MB, native {native:F1} MB ({native / ort:F2}x); native W4A8 {native4:F1} MB");
        }
        finally
        {
            File.Delete(file);
        }

        static void Print(int batch, string timing, double[] v)
            => Console.WriteLine($"  {batch,5} {timing,-10} {v[0],10:N0} {v[1],10:N0} {v[2],10:N0} {v[3],10:N0}   {v[2] / v[1],12:F2}x {v[2] / v[0],19:F2}x {v[3] / v[2],10:F2}x");
    }

    private static float[] RunOrt(QuantizedModelTransformer model, float[] inputs, int n, int[] rowDims, int batch)
    {
        var settings = model.Settings with { Backend = QuantizedBackend.OnnxRuntime, BatchSize = batch };
        using var ort = new QuantizedModelTransformer(new MLContext(0), model.QuantizedModel, settings, model.Nodes);
        IBatchScorer scorer = ort.BatchScorer;
        using IScoringBatch staging = scorer.CreateBatch([true], scorer.BatchSize);
        int rowSize = rowDims.Aggregate(1, (a, b) => a * b);
        float[]? all = null;
        for (int r0 = 0; r0 < n; r0 += batch)
        {
            int rows = Math.Min(batch, n - r0);
            Array.Copy(inputs, (long)r0 * rowSize, staging.InputBuffers[0], 0, (long)rows * rowSize);
            staging.Run(rows);
            int outSize = staging.OutputRowSizes[0];
            all ??= new float[(long)n * outSize];
            Array.Copy(staging.OutputBuffers[0], 0, all, (long)r0 * outSize, (long)rows * outSize);
        }
        return all!;
    }

    /// <summary>
    /// Every 8-bit activation of a QDQ model compared between the engine and ONNX Runtime on the same rows: ONNX Runtime
    /// outputs each QuantizeLinear's integers, the engine the DequantizeLinear that reads them (the same values when the
    /// two agree). Returns how many tensors agree within 1 LSB and the first that do not, with the op that wrote them.
    /// </summary>
    private static string PerTensorDifferences(QuantizedModelTransformer model, float[] inputs, int[] rowDims, int rows)
    {
        string input = model.Settings.Inputs.FirstOrDefault()?.TensorName ?? OnnxModel.Parse(model.QuantizedModel).Graph.RuntimeInputs[0].Name;
        return PerTensorDifferences(model, [(input, inputs, rowDims)], rows);
    }

    private static string PerTensorDifferences(QuantizedModelTransformer model, IReadOnlyList<(string Tensor, Array Values, int[] RowDims)> inputs, int rows)
    {
        var onnx = OnnxModel.Parse(model.QuantizedModel);
        var g = onnx.Graph;
        var consumers = g.ConsumerMap();
        var pairs = new List<(OnnxNode Q, OnnxNode Dq)>();
        foreach (var q in g.TopologicalOrder().Where(n => n.OpType == "QuantizeLinear"))
            if (consumers.GetValueOrDefault(q.Outputs[0])?.FirstOrDefault(n => n.OpType == "DequantizeLinear") is { } dq)
                pairs.Add((q, dq));
        if (pairs.Count == 0)
            return "per tensor: no quantized activations";
        // ONNX Runtime: the integers of every QuantizeLinear.
        var ortModel = OnnxModel.Parse(model.QuantizedModel);
        ortModel.Graph.AddOutputs(pairs.Select(p => p.Q.Outputs[0]).Where(n => !ortModel.Graph.IsGraphOutput(n)));
        var so = new SessionOptions { IntraOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        using var session = new InferenceSession(ortModel.ToBytes(), so);
        var values = inputs.Select(i =>
        {
            long[] shape = [rows, .. i.RowDims.Select(d => (long)d)];
            return i.Values is long[] ids ? OrtValue.CreateTensorValueFromMemory(ids, shape) : OrtValue.CreateTensorValueFromMemory((float[])i.Values, shape);
        }).ToList();
        string[] names = pairs.Select(p => p.Q.Outputs[0]).ToArray();
        using var results = session.Run(new RunOptions(), inputs.Select(i => i.Tensor).ToArray(), values, names);
        foreach (var v in values)
            v.Dispose();
        // The engine: the DequantizeLinear of each, as outputs of the same lowering.
        var bindings = pairs.Select(p => new OnnxColumnBinding(p.Dq.Outputs[0], p.Dq.Outputs[0])).ToList();
        var inputBindings = inputs.Select(i => new OnnxColumnBinding(i.Tensor, i.Tensor)).ToList();
        using var engine = NativeInt8Engine.TryLoad(model.QuantizedModel, "per-tensor", inputBindings, bindings, model.Settings.InputShapes, 1, out var why);
        if (engine is null)
            return $"per tensor: the engine does not load the model with every activation as an output ({string.Join("; ", why)})";
        var native = engine.Outputs.Select(o => new float[rows * o.RowSize]).ToArray();
        engine.Run(rows, inputs.Select(i => i.Values).ToArray(), native);
        int within = 0;
        var worst = new List<string>();
        for (int i = 0; i < pairs.Count; i++)
        {
            var (q, _) = pairs[i];
            g.TryGetInitializer(q.Inputs[1], out var scaleTensor);
            float scale = scaleTensor.ToFloatArray()[0];
            int zp = q.Inputs.Count > 2 && g.TryGetInitializer(q.Inputs[2], out var z) ? (z.ElementType == OnnxElementType.Int8 ? z.ToInt8Array()[0] : z.ToUInt8Array()[0]) : 0;
            OrtValue ort = results[i];
            int[] ortInts = ort.GetTensorTypeAndShape().ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int8
                ? ort.GetTensorDataAsSpan<sbyte>().ToArray().Select(v => (int)v).ToArray()
                : ort.GetTensorDataAsSpan<byte>().ToArray().Select(v => (int)v).ToArray();
            float[] mine = native[i];
            int max = 0, over = 0;
            for (int k = 0; k < Math.Min(mine.Length, ortInts.Length); k++)
            {
                int d = Math.Abs((int)MathF.Round(mine[k] / scale) + zp - ortInts[k]);
                max = Math.Max(max, d);
                over += d > 1 ? 1 : 0;
            }
            if (max <= 1)
                within++;
            else if (worst.Count < 6)
                worst.Add($"'{q.Inputs[0]}' from {g.Producer(q.Inputs[0])?.OpType ?? "input"}: max {max} LSB ({over} of {mine.Length} values over 1)");
        }
        return $"per tensor: {within} of {pairs.Count} quantized activations within 1 LSB of ONNX Runtime" +
               (worst.Count > 0 ? $"; first beyond: {string.Join("; ", worst)}" : "");
    }

    /// <summary>The largest difference in LSBs of the output's DequantizeLinear scale (or, for a float output, as a value), and how many values agree.</summary>
    private static string Difference(QuantizedModelTransformer model, float[] a, float[] b)
    {
        var g = OnnxModel.Parse(model.QuantizedModel).Graph;
        string output = model.Settings.Outputs.FirstOrDefault()?.TensorName ?? g.Outputs[0].Name;
        OnnxNode? producer = g.Producer(output);
        float maxAbs = 0;
        for (int i = 0; i < a.Length; i++)
            maxAbs = Math.Max(maxAbs, Math.Abs(a[i] - b[i]));
        string same = $"{Same(a, b)} of {a.Length} values identical";
        if (producer is { OpType: "DequantizeLinear" } && g.TryGetInitializer(producer.Inputs[1], out var s) && s.ElementCount == 1)
            return $"max {(int)Math.Round(maxAbs / s.ToFloatArray()[0])} LSB ({same})";
        return $"max |difference| {maxAbs:G3} (float output; {same})";
    }

    private static int Same(float[] a, float[] b) => a.Where((v, i) => v == b[i]).Count();

    internal static float[] Column(IDataView view, string name)
    {
        var result = new List<float>();
        var column = view.Schema[name];
        using var cursor = view.GetRowCursor([column]);
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.AddRange(value.DenseValues());
        }
        return [.. result];
    }

    private static double MemoryChild(string model, string backend, int batch, int[] rowDims)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        if (!Environment.ProcessPath!.EndsWith("QatMl.Benchmarks", StringComparison.Ordinal))
            start.ArgumentList.Add(typeof(EngineBenchmark).Assembly.Location);
        foreach (string a in new[] { "engine-memory-child", model, backend, batch.ToString(CultureInfo.InvariantCulture), string.Join(",", rowDims) })
            start.ArgumentList.Add(a);
        using Process child = Process.Start(start)!;
        string output = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        string? line = output.Split('\n').FirstOrDefault(l => l.StartsWith("rss_delta_mb=", StringComparison.Ordinal));
        if (child.ExitCode != 0 || line is null)
            throw new InvalidOperationException($"engine-memory-child failed ({child.ExitCode}): {output}");
        return double.Parse(line["rss_delta_mb=".Length..], CultureInfo.InvariantCulture);
    }

    /// <summary>Child process: RSS after loading <paramref name="args"/>[0] with one backend and running one batch, minus RSS before.</summary>
    internal static int MemoryChildMain(string[] args)
    {
        byte[] model = File.ReadAllBytes(args[0]);
        string backend = args[1];
        int batch = int.Parse(args[2], CultureInfo.InvariantCulture);
        int[] rowDims = args[3].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        int rowSize = rowDims.Aggregate(1, (a, b) => a * b);
        var input = new float[batch * rowSize];
        // Both native libraries loaded and warmed before the baseline.
        _ = NativeRuntime.AbiVersion;
        _ = OrtEnv.Instance();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        double before = ResidentMegabytes();
        IDisposable loaded;
        if (backend == "ort")
        {
            var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
            var session = new InferenceSession(model, options);
            using var value = OrtValue.CreateTensorValueFromMemory(input, [batch, .. rowDims.Select(d => (long)d)]);
            using var results = session.Run(new RunOptions(), [session.InputMetadata.Keys.First()], [value], [session.OutputMetadata.Keys.First()]);
            loaded = session;
        }
        else
        {
            var engine = NativeInt8Engine.TryLoad(model, "model", [], [], new Dictionary<string, int[]>(), 1, out _)!;
            engine.Run(batch, [input], [new float[batch * engine.Outputs[0].RowSize]]);
            loaded = engine;
        }
        // Loading parses the model and builds the plan in managed memory; give that garbage back before measuring.
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        double after = ResidentMegabytes();
        Console.WriteLine($"rss_delta_mb={(after - before).ToString("F2", CultureInfo.InvariantCulture)}");
        GC.KeepAlive(loaded);
        return 0;
    }

    private static double ResidentMegabytes()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
        throw new PlatformNotSupportedException("No VmRSS in /proc/self/status (memory needs Linux).");
    }
}

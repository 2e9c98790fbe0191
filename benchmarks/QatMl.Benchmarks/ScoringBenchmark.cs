using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Transforms.Onnx;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// Issue 3's benchmark: rows per second scoring FmnistNet over the 10k Fashion-MNIST test images,
/// one thread, the same ONNX Runtime session options for all three:
///  - QatMl's batched transform (batch 64),
///  - ML.NET's own ApplyOnnxModel (one row per ONNX Runtime call),
///  - a hand-written ONNX Runtime loop over the same preprocessed arrays (batch 64, buffers reused).
/// Goals: at least 2x ApplyOnnxModel and at least 0.9x the hand-written loop.
/// </summary>
internal static class ScoringBenchmark
{
    private const int Batch = 64;

    internal static void Run(BenchmarkSettings settings)
    {
        string model = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx");
        var mlContext = new MLContext(seed: 0);
        mlContext.SetOnnxSessionOption(new OnnxSessionOptions
        {
            IntraOpNumThreads = 1,
            InterOpNumThreads = 1,
            PerSessionThreads = true,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        });
        FashionMnist.Set test = FashionMnist.ReadTest(settings.DataFolder);
        List<FashionMnist.Row> rows = FashionMnist.Rows(test);
        IDataView data = mlContext.Data.LoadFromEnumerable(rows);
        // Materialise the source once so every contender reads the same in-memory rows.
        data = mlContext.Data.Cache(data);
        Consume(data, "input");

        var options = new OnnxModelScoringOptions { ModelPath = model, BatchSize = Batch, IntraOpNumThreads = 1 };
        using OnnxModelScoringTransformer ours = mlContext.Quantization.ScoreOnnxModel(options).Fit(data);
        var theirs = mlContext.Transforms.ApplyOnnxModel(new OnnxOptions
        {
            ModelFile = model,
            InputColumns = ["input"],
            OutputColumns = ["logits"],
            IntraOpNumThreads = 1,
            InterOpNumThreads = 1,
        }).Fit(data);

        float[] flat = rows.SelectMany(r => r.Input).ToArray();
        using var sessionOptions = new SessionOptions
        {
            IntraOpNumThreads = 1,
            InterOpNumThreads = 1,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        };
        using var session = new InferenceSession(model, sessionOptions);

        var (tOurs, cOurs) = settings.Best(() => Consume(ours.Transform(data), "logits"));
        var (tTheirs, cTheirs) = settings.Best(() => Consume(theirs.Transform(data), "logits"));
        var (tHand, cHand) = settings.Best(() => HandLoop(session, flat, rows.Count));

        int n = rows.Count;
        Console.WriteLine($"FmnistNet FP32, {n} images, 1 ORT thread, batch {Batch}, best of {settings.Repeat} (wall; process CPU time of that run):");
        Console.WriteLine($"  QatMl ScoreOnnxModel      {n / tOurs,10:F0} rows/s   cpu {cOurs:F3} s / wall {tOurs:F3} s");
        Console.WriteLine($"  ML.NET ApplyOnnxModel     {n / tTheirs,10:F0} rows/s   cpu {cTheirs:F3} s / wall {tTheirs:F3} s");
        Console.WriteLine($"  hand-written ORT loop     {n / tHand,10:F0} rows/s   cpu {cHand:F3} s / wall {tHand:F3} s");
        Console.WriteLine($"  ratio vs ApplyOnnxModel   {tTheirs / tOurs,10:F2}x (goal >= 2)");
        Console.WriteLine($"  ratio vs hand-written     {tHand / tOurs,10:F2}x (goal >= 0.9)");

        // How batch size trades call overhead against cache footprint on this model.
        Console.WriteLine("  QatMl ScoreOnnxModel by batch size:");
        foreach (int batch in new[] { 1, 8, 16, 32, 64, 128 })
        {
            var o = new OnnxModelScoringOptions { ModelPath = model, BatchSize = batch, IntraOpNumThreads = 1 };
            using OnnxModelScoringTransformer t = mlContext.Quantization.ScoreOnnxModel(o).Fit(data);
            var (wall, _) = settings.Best(() => Consume(t.Transform(data), "logits"));
            Console.WriteLine($"    batch {batch,4}: {n / wall,10:F0} rows/s");
        }
    }

    /// <summary>Reads every value of a vector column, as a consumer would.</summary>
    internal static float Consume(IDataView view, string column)
    {
        DataViewSchema.Column c = view.Schema[column];
        using DataViewRowCursor cursor = view.GetRowCursor([c]);
        ValueGetter<VBuffer<float>> getter = cursor.GetGetter<VBuffer<float>>(c);
        VBuffer<float> value = default;
        float sum = 0;
        while (cursor.MoveNext())
        {
            getter(ref value);
            sum += value.GetValues()[0];
        }
        return sum;
    }

    private static float HandLoop(InferenceSession session, float[] flat, int count)
    {
        const int rowSize = 784;
        var input = new float[Batch * rowSize];
        var output = new float[Batch * 10];
        using var runOptions = new RunOptions();
        using var fullIn = OrtValue.CreateTensorValueFromMemory(input, [Batch, 1, 28, 28]);
        using var fullOut = OrtValue.CreateTensorValueFromMemory(output, [Batch, 10]);
        float sum = 0;
        for (int start = 0; start < count; start += Batch)
        {
            int n = Math.Min(Batch, count - start);
            flat.AsSpan(start * rowSize, n * rowSize).CopyTo(input);
            if (n == Batch)
            {
                session.Run(runOptions, ["input"], [fullIn], ["logits"], [fullOut]);
            }
            else
            {
                using var partIn = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, input.AsMemory(0, n * rowSize), [n, 1, 28, 28]);
                using var partOut = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, output.AsMemory(0, n * 10), [n, 10]);
                session.Run(runOptions, ["input"], [partIn], ["logits"], [partOut]);
            }
            sum += output[0];
        }
        return sum;
    }
}

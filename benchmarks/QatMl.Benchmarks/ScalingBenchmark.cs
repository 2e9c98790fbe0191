using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Quantization.Tests.Reliability;

namespace QatMl.Benchmarks;

/// <summary>
/// ptq-scaling: PostTraining time against graph size, on chains of 10k, 30k and 100k nodes (SyntheticGraphs.Chain),
/// with the time of each stage. Linear growth keeps the time per node flat; the goal is 100k Identity nodes in
/// under 10 s. Other chains by --ops: Relu (calibrated, 100k extra ONNX Runtime outputs), Flatten and Add (calibrated and
/// quantized; there the "session" column, ONNX Runtime optimising the QDQ graph, grows faster than linearly on its own).
///   dotnet run --project benchmarks/QatMl.Benchmarks -c Release -- ptq-scaling [--sizes 10000,30000,100000] [--ops Identity,Relu,Flatten,Add]
/// </summary>
internal static class ScalingBenchmark
{
    private sealed class Row
    {
        [VectorType(SyntheticGraphs.Width)]
        [ColumnName("input")]
        public float[] Input { get; set; } = [];
    }

    internal static int Run(string[] args)
    {
        int[] sizes = (Arg(args, "--sizes") ?? "10000,30000,100000").Split(',').Select(int.Parse).ToArray();
        string[] ops = (Arg(args, "--ops") ?? "Identity").Split(',');
        var context = new MLContext(seed: 0);
        var random = new Random(0);
        IDataView rows = context.Data.LoadFromEnumerable(Enumerable.Range(0, 16).Select(_ =>
            new Row { Input = Enumerable.Range(0, SyntheticGraphs.Width).Select(_ => (float)random.NextDouble()).ToArray() }).ToList());
        Console.WriteLine("PostTraining on node chains (one ORT thread, 16 calibration rows): total wall time, then per stage.");
        Console.WriteLine("  op        nodes    total s   us/node   parse  prepare  calibrate  qdq-write  session");
        foreach (string op in ops)
            foreach (int n in sizes)
            {
                byte[] model = SyntheticGraphs.Chain(n, op);
                var options = new PostTrainingOptions { ModelBytes = model, IntraOpNumThreads = 1, SampleCount = 16, BatchSize = 16 };
                var clock = Stopwatch.StartNew();
                var parsed = OnnxModel.Parse(model, sourceName: "chain");
                double parse = clock.Elapsed.TotalSeconds;
                var prepared = PostTrainingEstimator.Prepare(options, "chain");
                double prepare = clock.Elapsed.TotalSeconds;
                CalibrationTable table = ModelCalibrator.Run(context, PostTrainingEstimator.CalibrationOptions(options), rows, prepared).Table;
                double calibrate = clock.Elapsed.TotalSeconds;
                QdqResult result = QdqWriter.Quantize(prepared, table, options);
                double write = clock.Elapsed.TotalSeconds;
                using (new QuantizedModelTransformer(context, result.Model, options.ToScoringSettings(), result.Nodes)) { }
                double session = clock.Elapsed.TotalSeconds;
                GC.KeepAlive(parsed);

                clock.Restart();
                using (context.Quantization.PostTraining(options).Fit(rows)) { }
                double total = clock.Elapsed.TotalSeconds;
                Console.WriteLine($"  {op,-8} {n,7} {total,10:F2} {total / n * 1e6,9:F1} {parse,7:F2} {prepare - parse,8:F2} {calibrate - prepare,10:F2} {write - calibrate,10:F2} {session - write,8:F2}");
            }
        return 0;
    }

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// Issue 14's single-row latency on FmnistNet, one thread: ML.NET's PredictionEngine over QatMl's transformers (the
/// row-to-row path: one model run per Predict) against the same model called directly on one row with preallocated
/// buffers:
///  - float scoring (ScoreOnnxModel) and the INT8 QDQ model on ONNX Runtime, against InferenceSession.Run with
///    preallocated OrtValues on the same bytes and session settings;
///  - the INT8 model on the native engine, against the engine's own one-row run.
/// Goal: PredictionEngine within 1.2x of the direct call. Every PredictionEngine output is checked bit for bit against
/// the direct call's before anything is timed.
/// </summary>
internal static class SingleRowBenchmark
{
    private const int RowSize = 784;
    private const int Classes = 10;

    internal static int Run(BenchmarkSettings settings, string[] args)
    {
        int count = Arg(args, "--rows") ?? 1000;
        var context = new MLContext(seed: 0);
        string fmnist = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx");
        IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
        List<FashionMnist.Row> rows = FashionMnist.Rows(FashionMnist.ReadTest(settings.DataFolder, limit: count));
        Console.WriteLine($"FmnistNet, {rows.Count} test images one at a time, one thread, best of {settings.Repeat}; microseconds per row:");

        using OnnxModelScoringTransformer floatModel = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = fmnist, IntraOpNumThreads = 1 })
            .Fit(calibration);
        using QuantizedModelTransformer ortInt8 = Quantize(context, fmnist, calibration, QuantizedBackend.OnnxRuntime);
        using QuantizedModelTransformer nativeInt8 = Quantize(context, fmnist, calibration, QuantizedBackend.Native);

        bool identical = true;
        var ratios = new List<double>();
        identical &= Measure(settings, context, "FP32, ONNX Runtime", floatModel, rows, OrtDirect(File.ReadAllBytes(fmnist)), ratios);
        identical &= Measure(settings, context, "INT8, ONNX Runtime", ortInt8, rows, OrtDirect(ortInt8.QuantizedModel), ratios);
        identical &= Measure(settings, context, "INT8, native engine", nativeInt8, rows, NativeDirect(nativeInt8), ratios);
        Console.WriteLine(identical ? "  PredictionEngine outputs: identical to the direct calls on every row" : "  PredictionEngine outputs: DIFFER from the direct calls");
        Console.WriteLine($"  worst ratio {ratios.Max():F2}x (goal <= 1.2)");
        return identical ? 0 : 1;
    }

    private static int? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : null;
    }

    private static QuantizedModelTransformer Quantize(MLContext context, string model, IDataView calibration, QuantizedBackend backend)
    {
        var options = new PostTrainingOptions { ModelPath = model, IntraOpNumThreads = 1, Backend = backend, AllowBackendFallback = false };
        QuantizedModelTransformer quantized = context.Quantization.PostTraining(options).Fit(calibration);
        if (quantized.Backend != backend)
            throw new InvalidOperationException($"{backend} was asked for, {quantized.Backend} runs.");
        return quantized;
    }

    /// <summary>A direct one-row call: copies the row into a preallocated input, runs, returns the preallocated output.</summary>
    private interface IDirect : IDisposable
    {
        float[] Run(float[] row);
    }

    /// <summary>
    /// Times PredictionEngine.Predict and the direct call over every row (after checking both give the same floats) and
    /// prints both latencies and their ratio.
    /// </summary>
    private static bool Measure(BenchmarkSettings settings, MLContext context, string name, ITransformer model, List<FashionMnist.Row> rows,
        IDirect direct, List<double> ratios)
    {
        using (direct)
        {
            using var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, Scored>(model, new PredictionEngineOptions { OwnsTransformer = false });
            bool identical = rows.All(r => engine.Predict(r).Logits.AsSpan().SequenceEqual(direct.Run(r.Input)));
            var result = new Scored();
            float sink = 0;
            var (pe, _) = settings.Best(() =>
            {
                foreach (FashionMnist.Row r in rows)
                {
                    engine.Predict(r, ref result);
                    sink += result.Logits[0];
                }
            });
            var (raw, _) = settings.Best(() =>
            {
                foreach (FashionMnist.Row r in rows)
                    sink += direct.Run(r.Input)[0];
            });
            double perRow = 1e6 / rows.Count;
            ratios.Add(pe / raw);
            Console.WriteLine($"  {name,-22} PredictionEngine {pe * perRow,8:F1} us   direct {raw * perRow,8:F1} us   ratio {pe / raw,5:F2}x{(float.IsNaN(sink) ? " (NaN)" : "")}");
            return identical;
        }
    }

    /// <summary>InferenceSession.Run on one row with the session settings QatMl uses (one thread, all graph optimizations).</summary>
    private static IDirect OrtDirect(byte[] model) => new OrtRow(model);

    private sealed class OrtRow : IDirect
    {
        private readonly SessionOptions _options = new()
        {
            IntraOpNumThreads = 1,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        private readonly InferenceSession _session;
        private readonly RunOptions _run = new();
        private readonly float[] _input = new float[RowSize];
        private readonly float[] _output = new float[Classes];
        private readonly OrtValue _inputValue;
        private readonly OrtValue _outputValue;

        internal OrtRow(byte[] model)
        {
            _session = new InferenceSession(model, _options);
            _inputValue = OrtValue.CreateTensorValueFromMemory(_input, [1, 1, 28, 28]);
            _outputValue = OrtValue.CreateTensorValueFromMemory(_output, [1, Classes]);
        }

        public float[] Run(float[] row)
        {
            row.CopyTo(_input, 0);
            _session.Run(_run, ["input"], [_inputValue], ["logits"], [_outputValue]);
            return _output;
        }

        public void Dispose()
        {
            _inputValue.Dispose();
            _outputValue.Dispose();
            _run.Dispose();
            _session.Dispose();
            _options.Dispose();
        }
    }

    /// <summary>The loaded engine's own run on one row (what the transformer's batches call), buffers reused.</summary>
    private static IDirect NativeDirect(QuantizedModelTransformer model) => new NativeRow(model);

    private sealed class NativeRow(QuantizedModelTransformer model) : IDirect
    {
        private readonly float[][] _input = [new float[RowSize]];
        private readonly float[][] _output = [new float[Classes]];

        public float[] Run(float[] row)
        {
            row.CopyTo(_input[0], 0);
            model.NativeEngine!.Run(1, _input, _output);
            return _output[0];
        }

        public void Dispose()
        {
        }
    }

    private sealed class Scored
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }
}

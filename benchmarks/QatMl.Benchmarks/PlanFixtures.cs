using Microsoft.ML;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Lowering;
using Microsoft.ML.Quantization.NativeEngine;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace QatMl.Benchmarks;

/// <summary>
/// Writes engine plans with inputs and the CPU engine's outputs, so the native tests and the GPU check run them
/// without .NET:
///   dotnet run --project benchmarks/QatMl.Benchmarks -c Release -- write-plan-fixtures OUTDIR [--resnet]
/// FmnistNet INT8 and W4A8 (8 test images; tests/data/plans holds them), and with --resnet ResNet18 INT8 and W4A8
/// (2 images at 224x224; plans of about 16 and 8 MB, so they are not committed: build/gpu-check.sh expects them in
/// artifacts/plan-fixtures). PTQ as the engine benchmark quantizes (MinMax, per-channel).
/// Files per model: NAME.qep (the plan, qatml_engine.h) and NAME.io:
///   "QIO1"; u32 rows; u32 input_count; u32 output_count; then per input and per output:
///   i64 elements per row; f32 values[rows * elements] (little-endian).
/// </summary>
internal static class PlanFixtures
{
    internal static int Run(BenchmarkSettings settings, string[] args)
    {
        if (args.Length < 2 || args[1].StartsWith("--", StringComparison.Ordinal))
        {
            Console.Error.WriteLine("usage: QatMl.Benchmarks write-plan-fixtures OUTDIR [--resnet]");
            return 2;
        }
        string folder = Path.GetFullPath(args[1]);
        Directory.CreateDirectory(folder);
        var context = new MLContext(seed: 0);

        IDataView calibration = context.Data.Cache(FashionMnist.Load(context, FashionMnist.ReadCalibration(settings.DataFolder)));
        float[] images = FashionMnist.Rows(FashionMnist.ReadTest(settings.DataFolder, limit: 8)).SelectMany(r => r.Input).ToArray();
        string fmnist = Path.Combine(settings.ModelsFolder, "fmnistnet_fp32.onnx");
        foreach (var (label, precision) in new[] { ("int8", QuantizationPrecision.Int8), ("w4a8", QuantizationPrecision.W4A8) })
        {
            using QuantizedModelTransformer q = EngineBenchmark.Quantize(context, fmnist, calibration, 1000, batch: 64, null, precision);
            Write(folder, $"fmnistnet_{label}", q, images, rows: 8);
        }

        if (args.Contains("--resnet"))
        {
            const int count = 64;
            IDataView resnetImages = context.Data.Cache(ResNet18Images.Load(context, FashionMnist.ReadTest(settings.DataFolder, limit: count), count));
            float[] pixels = EngineBenchmark.Column(resnetImages, ResNet18Images.InputColumn);
            foreach (var (label, precision) in new[] { ("int8", QuantizationPrecision.Int8), ("w4a8", QuantizationPrecision.W4A8) })
            {
                using QuantizedModelTransformer q = EngineBenchmark.Quantize(context, ResNet18Images.ModelPath, resnetImages, count, batch: 16,
                    ResNet18Images.InputColumn, precision);
                Write(folder, $"resnet18_{label}", q, pixels, rows: 2);
            }
        }
        return 0;
    }

    /// <summary>Lowers the QDQ model of <paramref name="q"/>, runs the CPU engine on the first rows of <paramref name="inputs"/>, writes both files.</summary>
    private static void Write(string folder, string name, QuantizedModelTransformer q, float[] inputs, int rows)
    {
        var model = OnnxModel.Parse(q.QuantizedModel, sourceName: name);
        LoweringResult lowered = QdqLowering.Lower(model, name, q.Settings.Inputs, q.Settings.Outputs, q.Settings.InputShapes);
        if (!lowered.Succeeded)
            throw new InvalidOperationException($"{name} does not lower to an engine plan: {string.Join("; ", lowered.Unsupported)}");
        if (lowered.Inputs.Length != 1)
            throw new InvalidOperationException($"{name}: fixtures take models of one input, this one has {lowered.Inputs.Length}.");
        int rowSize = lowered.Inputs[0].RowSize;
        float[] x = inputs.AsSpan(0, rows * rowSize).ToArray();
        float[][] outputs = lowered.Outputs.Select(o => new float[rows * o.RowSize]).ToArray();
        using (NativeInt8Engine engine = NativeInt8Engine.Load(lowered.Plan!, lowered.Inputs, lowered.Outputs, threads: 1))
            engine.Run(rows, [x], outputs);

        WriteAtomically(Path.Combine(folder, name + ".qep"), s => s.Write(lowered.Plan!.ToBytes()));
        WriteAtomically(Path.Combine(folder, name + ".io"), s =>
        {
            using var w = new BinaryWriter(s, System.Text.Encoding.ASCII, leaveOpen: true);
            w.Write("QIO1"u8);
            w.Write((uint)rows);
            w.Write(1u);
            w.Write((uint)outputs.Length);
            w.Write((long)rowSize);
            foreach (float v in x)
                w.Write(v);
            for (int i = 0; i < outputs.Length; i++)
            {
                w.Write((long)lowered.Outputs[i].RowSize);
                foreach (float v in outputs[i])
                    w.Write(v);
            }
        });
        Console.WriteLine($"{name}: plan {new FileInfo(Path.Combine(folder, name + ".qep")).Length:N0} bytes, {rows} rows of {rowSize} inputs, outputs of {string.Join(", ", lowered.Outputs.Select(o => o.RowSize))} values");
    }

    private static void WriteAtomically(string path, Action<Stream> write)
    {
        string temp = path + ".tmp";
        try
        {
            using (var s = File.Create(temp))
                write(s);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }
}

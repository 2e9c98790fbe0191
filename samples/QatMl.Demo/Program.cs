// QatMl demo, the main job on data the repo ships: post-training quantization of FmnistNet (a CNN trained in PyTorch,
// exported to ONNX) to INT8 and to W4A8, calibrated on 1000 Fashion-MNIST training images, evaluated on the 10k test
// images, with accuracy, model size and ONNX Runtime FP32 vs INT8 time side by side, and the quantized model saved
// with mlContext.Model.Save and restored with mlContext.Quantization.LoadModel.
//
//   dotnet run --project samples/QatMl.Demo -c Release [-- --data <fashion-mnist folder>] [--model <onnx>] [--limit N] [--out <folder>]
//
// --data: a folder with t10k-*-ubyte[.gz] and calibration-1000-*-ubyte[.gz] (default: the copy the repo ships in
// tests/data/fashion-mnist). The full Fashion-MNIST is in Debian's dataset-fashion-mnist or
// github.com/zalandoresearch/fashion-mnist.
using Microsoft.ML;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

string dataFolder = Arg("--data") ?? Path.Combine(AppContext.BaseDirectory, "data", "fashion-mnist");
string modelPath = Arg("--model") ?? Path.Combine(AppContext.BaseDirectory, "data", "models", "fmnistnet_fp32.onnx");
string outFolder = Arg("--out") ?? Path.Combine(Path.GetTempPath(), "qatml-demo");
int? limit = Arg("--limit") is { } l ? int.Parse(l, System.Globalization.CultureInfo.InvariantCulture) : null;
Directory.CreateDirectory(outFolder);

Console.WriteLine($"QatMl native library {NativeRuntime.LibraryVersion}: CPU ISA {NativeRuntime.DetectedIsa}");
var mlContext = new MLContext(seed: 0);
IDataView calibration = mlContext.Data.Cache(FashionMnist.Load(mlContext, FashionMnist.ReadCalibration(dataFolder)));
IDataView test = mlContext.Data.Cache(FashionMnist.Load(mlContext, FashionMnist.ReadTest(dataFolder, limit)));
Console.WriteLine($"Fashion-MNIST from {dataFolder}: {calibration.GetRowCount()} calibration images, {test.GetRowCount()} test images");
Console.WriteLine($"Model: {modelPath} ({new FileInfo(modelPath).Length:N0} bytes). ONNX Runtime CPU, 1 thread, batch 64.");
Console.WriteLine();
Console.WriteLine("scheme                         top-1     drop   agree     size (bytes)   FP32 ms   quant ms  speed-up");

foreach (var (name, precision, backend) in new[]
{
    ("INT8 (W8A8, per channel)", QuantizationPrecision.Int8, QuantizedBackend.OnnxRuntime),
    ("INT8, QatMl native engine", QuantizationPrecision.Int8, QuantizedBackend.Native),
    ("W4A8 (INT8 first/last)", QuantizationPrecision.W4A8, QuantizedBackend.OnnxRuntime),
})
{
    var options = new PostTrainingOptions
    {
        ModelPath = modelPath,
        Precision = precision,
        IntraOpNumThreads = 1,
        BatchSize = 64,
        Backend = backend,
    };
    if (precision != QuantizationPrecision.Int8)
        options.FirstLayerPrecision = options.LastLayerPrecision = QuantizationPrecision.Int8;

    using QuantizedModelTransformer quantized = mlContext.Quantization.PostTraining(options).Fit(calibration);
    QuantizationComparison c = mlContext.Quantization.Compare(modelPath, quantized, test,
        new ComparisonOptions { LabelColumnName = "Label", MaxAccuracyDrop = 0.5, PerLayer = false });
    if (name.StartsWith("INT8 (", StringComparison.Ordinal))
        Console.WriteLine($"{"FP32",-28} {c.FloatAccuracy,8:P2} {"",7} {"",7} {c.FloatModelBytes,14:N0}");
    Console.WriteLine($"{name,-28} {c.QuantizedAccuracy,8:P2} {c.AccuracyDrop,7:F2} {c.Top1Agreement,7:P1} {c.QuantizedModelBytes,14:N0} {c.FloatTime!.Value.TotalMilliseconds,9:F1} {c.QuantizedTime!.Value.TotalMilliseconds,10:F1} {c.Speedup,8:F2}x   within 0.5 points: {(c.WithinBudget == true ? "yes" : "no")}");

    // Export: a standard QDQ ONNX file, and an ML.NET model zip that LoadModel restores with its options.
    string stem = Path.Combine(outFolder, backend == QuantizedBackend.Native ? "fmnistnet_int8_native" : precision == QuantizationPrecision.Int8 ? "fmnistnet_int8" : "fmnistnet_w4a8");
    quantized.SaveAsOnnx(stem + ".onnx");
    mlContext.Model.Save(quantized, test.Schema, stem + ".zip");
    var restored = (QuantizedModelTransformer)mlContext.Quantization.LoadModel(stem + ".zip", out _);
    restored.Dispose();
}
Console.WriteLine();
Console.WriteLine($"Saved the quantized models (.onnx and ML.NET .zip) in {outFolder}.");
Console.WriteLine("W4A8 is about accuracy and size here: ONNX Runtime runs int4 weights as DequantizeLinear into float ops, so it is");
Console.WriteLine("slower than FP32; 4-bit speed is the native engine's job. INT8 on a bigger model: the ptq-speed benchmark (ResNet18).");

string? Arg(string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

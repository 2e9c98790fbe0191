// QatMl demo: the main job on data the repo ships. Today: batched float scoring of FmnistNet over
// the Fashion-MNIST test set through mlContext.Quantization, with accuracy and throughput, and what
// the native INT8 library sees of this CPU. Calibration and quantization join as they land.
//
//   dotnet run --project samples/QatMl.Demo -c Release [-- --data <fashion-mnist folder>] [--model <onnx>] [--limit N]
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Quantization.Inference;
using QatMl.Samples;

string dataFolder = Arg("--data") ?? Path.Combine(AppContext.BaseDirectory, "data", "fashion-mnist");
string modelPath = Arg("--model") ?? Path.Combine(AppContext.BaseDirectory, "data", "models", "fmnistnet_fp32.onnx");
int? limit = Arg("--limit") is { } l ? int.Parse(l, System.Globalization.CultureInfo.InvariantCulture) : null;

Console.WriteLine($"QatMl native library {NativeRuntime.LibraryVersion}: CPU ISA {NativeRuntime.DetectedIsa} (active {NativeRuntime.ActiveIsa}), features {NativeRuntime.Features}");

var mlContext = new MLContext(seed: 0);
FashionMnist.Set test = FashionMnist.ReadTest(dataFolder, limit);
Console.WriteLine($"Fashion-MNIST test images: {test.Count} from {dataFolder}");
IDataView data = FashionMnist.Load(mlContext, test);

var options = new OnnxScoringOptions { ModelPath = modelPath, BatchSize = 64, IntraOpNumThreads = 1 };
using OnnxScoringTransformer model = mlContext.Quantization.ScoreOnnxModel(options).Fit(data);

var clock = Stopwatch.StartNew();
IDataView scored = model.Transform(data);
int correct = 0, total = 0;
foreach (var row in mlContext.Data.CreateEnumerable<Scored>(scored, reuseRowObject: true))
{
    int predicted = 0;
    for (int c = 1; c < row.logits.Length; c++)
        if (row.logits[c] > row.logits[predicted]) predicted = c;   // ties go to the lowest class
    correct += predicted == row.Label ? 1 : 0;
    total++;
}
clock.Stop();
Console.WriteLine($"FmnistNet FP32 ({Path.GetFileName(modelPath)}), ONNX Runtime CPU, batch 64, 1 thread:");
Console.WriteLine($"  top-1 accuracy {100.0 * correct / total:F2}% ({correct}/{total}), {total / clock.Elapsed.TotalSeconds:F0} images/s");

string? Arg(string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

sealed class Scored
{
    public float[] logits { get; set; } = [];
    public uint Label { get; set; }
}

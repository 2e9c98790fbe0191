// The consumer check's app (build/consumer-check.sh): what a new user does with the package, each step a named check.
// Modes: "main" (PTQ, native engine, save/load, QAT, PredictionEngine), "no-native" (run with libqatml_native removed:
// Backend = Native must fall back to ONNX Runtime), "no-ort" (run with ONNX Runtime's native library removed: the
// error must name the package to add).
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

string mode = args.Length > 0 ? args[0] : "main";
string repo = args.Length > 1 ? args[1] : throw new ArgumentException("usage: QatMlConsumer <main|no-native|no-ort> <repo root> <work folder>");
string work = args.Length > 2 ? args[2] : throw new ArgumentException("usage: QatMlConsumer <main|no-native|no-ort> <repo root> <work folder>");
string fmnist = Path.Combine(repo, "tests/data/models/fmnistnet_fp32.onnx");
string fmnistBn = Path.Combine(repo, "tests/data/models/fmnistnet_fp32_bn.onnx");
string images = Path.Combine(repo, "tests/data/fashion-mnist");

var context = new MLContext(seed: 1);
var warnings = new List<string>();
context.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
IDataView calibration = FashionMnist.Load(context, FashionMnist.ReadCalibration(images, limit: 256));
List<FashionMnist.Row> testRows = FashionMnist.Rows(FashionMnist.ReadTest(images, limit: 1000));
IDataView test = context.Data.LoadFromEnumerable(testRows);
int failed = 0;

void Check(string name, Action step)
{
    try
    {
        step();
        Console.WriteLine($"PASS {name}");
    }
    catch (Exception e)
    {
        failed++;
        Console.WriteLine($"FAIL {name}: {e.GetType().Name}: {e.Message}");
    }
}

void Require(bool condition, string what)
{
    if (!condition)
        throw new InvalidOperationException(what);
}

double Accuracy(IDataView scored)
{
    var rows = context.Data.CreateEnumerable<Scored>(scored, reuseRowObject: false).ToList();
    return rows.Count(r => Array.IndexOf(r.Logits, r.Logits.Max()) == r.Label) / (double)rows.Count;
}

PostTrainingOptions Ptq(QuantizedBackend backend, bool allowFallback) => new()
{
    ModelPath = fmnist, Backend = backend, AllowBackendFallback = allowFallback, SampleCount = 256,
};

switch (mode)
{
    case "main":
        QuantizedModelTransformer? native = null;
        List<Scored>? nativeScores = null;
        Check("ptq-native", () =>
        {
            native = context.Quantization.PostTraining(Ptq(QuantizedBackend.Native, allowFallback: false)).Fit(calibration);
            Require(native.Backend == QuantizedBackend.Native, $"backend is {native.Backend}, expected Native");
            double accuracy = Accuracy(native.Transform(test));
            Console.WriteLine($"  INT8 (native engine) accuracy on {testRows.Count} test images: {accuracy:P1}, native library {NativeRuntime.LibraryVersion} ({NativeRuntime.ActiveIsa})");
            Require(accuracy > 0.85, $"accuracy {accuracy:P1} is not above 85%");
            nativeScores = context.Data.CreateEnumerable<Scored>(native.Transform(test), reuseRowObject: false).ToList();
        });
        Check("save-load", () =>
        {
            Require(native is not null, "no model from ptq-native");
            string zip = Path.Combine(work, "fmnistnet_int8.zip"), onnx = Path.Combine(work, "fmnistnet_int8.onnx");
            context.Model.Save(native!, test.Schema, zip);
            native!.SaveAsOnnx(onnx);
            using var restored = (QuantizedModelTransformer)context.Quantization.LoadModel(zip, out _);
            Require(restored.Backend == QuantizedBackend.Native, $"restored backend is {restored.Backend}");
            var again = context.Data.CreateEnumerable<Scored>(restored.Transform(test), reuseRowObject: false).ToList();
            Require(again.Zip(nativeScores!).All(p => p.First.Logits.SequenceEqual(p.Second.Logits)), "LoadModel scores differ from the saved model's");
            // ML.NET's own loader restores an OnnxTransformer over the same QDQ model (ONNX Runtime).
            ITransformer plain = context.Model.Load(zip, out _);
            double accuracy = Accuracy(plain.Transform(test));
            Require(accuracy > 0.85, $"mlContext.Model.Load accuracy {accuracy:P1}");
            Require(new FileInfo(onnx).Length > 0, "SaveAsOnnx wrote nothing");
        });
        Check("qat-torchsharp", () =>
        {
            var options = new AwareTrainingOptions
            {
                ModelPath = fmnistBn, Epochs = 1, TrainingBatchSize = 64, CalibrationSampleCount = 128,
                ValidationData = context.Data.LoadFromEnumerable(testRows.Take(500)),
            };
            using QuantizedModelTransformer qat = context.Quantization.AwareTraining(options).Fit(calibration);
            Require(qat.AwareTraining?.Path == "AwareTraining", $"path {qat.AwareTraining?.Path}");
            Console.WriteLine($"  QAT: 1 epoch on 256 images, deployed accuracy {qat.AwareTraining!.DeployedAccuracy:P1}");
            Require(qat.AwareTraining.DeployedAccuracy > 0.8, $"deployed accuracy {qat.AwareTraining.DeployedAccuracy:P1}");
        });
        // One row per Predict (the row-to-row path), on the fitted model and on the one LoadModel restores: Transform's values.
        Check("prediction-engine", () =>
        {
            Require(native is not null, "no model from ptq-native");
            using var restored = (QuantizedModelTransformer)context.Quantization.LoadModel(Path.Combine(work, "fmnistnet_int8.zip"), out _);
            foreach (ITransformer model in new ITransformer[] { native!, restored })
            {
                using var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, Scored>(model, new PredictionEngineOptions { OwnsTransformer = false });
                for (int i = 0; i < 20; i++)
                {
                    Scored one = engine.Predict(testRows[i]);
                    Require(one.Logits.SequenceEqual(nativeScores![i].Logits), $"row {i}: PredictionEngine differs from Transform");
                }
            }
        });
        native?.Dispose();
        break;

    case "no-native":
        Check("native-missing-falls-back", () =>
        {
            using var model = context.Quantization.PostTraining(Ptq(QuantizedBackend.Native, allowFallback: true)).Fit(calibration);
            Require(model.Backend == QuantizedBackend.OnnxRuntime, $"backend is {model.Backend}, expected the ONNX Runtime fall-back");
            Require(model.BackendFallbackReason?.Contains("libqatml_native") == true, $"reason: {model.BackendFallbackReason}");
            Require(warnings.Any(w => w.Contains("Running with ONNX Runtime instead")), "no fall-back warning on mlContext.Log");
            Require(Accuracy(model.Transform(test)) > 0.85, "fall-back accuracy");
        });
        Check("native-missing-no-fallback-throws", () =>
        {
            try
            {
                context.Quantization.PostTraining(Ptq(QuantizedBackend.Native, allowFallback: false)).Fit(calibration).Dispose();
            }
            catch (NotSupportedException e) when (e.Message.Contains("libqatml_native") && e.Message.Contains("AllowBackendFallback"))
            {
                Console.WriteLine($"  {e.Message[..Math.Min(160, e.Message.Length)]}...");
                return;
            }
            throw new InvalidOperationException("no NotSupportedException naming the missing library");
        });
        break;

    case "no-ort":
        Check("onnxruntime-missing-names-package", () =>
        {
            try
            {
                context.Quantization.PostTraining(Ptq(QuantizedBackend.OnnxRuntime, allowFallback: true)).Fit(calibration).Dispose();
            }
            catch (InvalidOperationException e) when (e.Message.Contains("add the package Microsoft.ML.OnnxRuntime (CPU) or Microsoft.ML.OnnxRuntime.Gpu"))
            {
                Console.WriteLine($"  {e.Message}");
                return;
            }
            throw new InvalidOperationException("no error naming Microsoft.ML.OnnxRuntime");
        });
        break;

    default:
        throw new ArgumentException($"unknown mode '{mode}'");
}

Console.WriteLine($"{mode}: {(failed == 0 ? "all checks passed" : $"{failed} check(s) failed")}");
return failed == 0 ? 0 : 1;

internal sealed class Scored
{
    [ColumnName("logits")]
    public float[] Logits { get; set; } = [];

    public uint Label { get; set; }
}

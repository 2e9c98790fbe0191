// QatMl benchmarks. Each prints figures measured in one run, so ratios compare like with like.
//   dotnet run --project benchmarks/QatMl.Benchmarks -c Release -- <name> [--data <fashion-mnist folder>] [--repeat N]
// Names: scoring (issue 3: batched scoring vs ApplyOnnxModel vs a hand-written ONNX Runtime loop);
//        calibration [--no-resnet] (issue 4: calibration time over float inference, FmnistNet and ResNet18);
//        calibration-memory (issue 4: peak RSS calibrating ResNet18 over 50 vs 500 images, child processes);
//        ptq-accuracy [--no-resnet] (issue 5: FmnistNet accuracy per scheme, ResNet18 cosine, file sizes);
//        ptq-speed (issue 5: ORT INT8 vs FP32 on ResNet18, batch 1 and 16);
//        qat --train <folder> [--seeds 3] [--epochs 2] (issue 6: QAT figures on FmnistNet);
//        qat-speed --train <folder> [--rows 20000] (issue 6: QAT vs float epoch cost, with and without allocator settings);
//        engine [--no-resnet] [--batch 1,16] [--zoo <zoo folder> [--only a,b] [--rows N]] (native INT8 engine vs ORT INT8
//        and FP32, W4A8 vs INT8, LSB differences, resident memory; the zoo models beside FmnistNet and ResNet18);
//        engine-profile [--fmnistnet | --zoo FOLDER --only NAME] [--batch N] [--runs N] (per-node times: ORT's profiler and, with
//        QATML_ENGINE_PROFILE=1, the engine's per-op table);
//        zoo <zoo folder> [--rows N] [--only a,b] (issue 15: public models of several families on real rows, INT8 and
//        W4A8: fits or why not, cosine, SQNR, task metric, float nodes, size, ORT time, native engine; build/zoo-fetch.md).
//        write-plan-fixtures OUTDIR [--resnet] (engine plans, inputs and CPU outputs for the native and GPU tests).
//        ptq-scaling [--sizes 10000,30000,100000] [--ops Identity,Relu,Flatten,Add] (issue 13: PostTraining time against node count).
//        single-row [--rows N] (issue 14: PredictionEngine latency per row vs a direct ONNX Runtime / native engine call on one row).
//        adaround [--no-resnet] [--iterations N] [--resnet-rows N (32)] [--resnet-iterations N (500)] [--scheme W4A8-MinMax] [--verbose] [--one-layer] (issue 16: FmnistNet W4A4/W4A8 and ResNet18 W4A8 with AdaRound vs round-to-nearest).
//        auto [--zoo FOLDER] [--rows N] [--only fmnistnet,resnet18,<zoo names>] [--no-resnet] [--max-trials N] [--adaround] [--trials] (issue 16: mlContext.Quantization.Auto per model beside the best plain scheme).
// Data: defaults to tests/data/fashion-mnist (the repo ships the 10k test set); the full
// Fashion-MNIST comes from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) or
// github.com/zalandoresearch/fashion-mnist.
using QatMl.Benchmarks;

string name = args.Length > 0 ? args[0] : "";
if (name == "engine-memory-child")
    return EngineBenchmark.MemoryChildMain(args.Skip(1).ToArray());
if (name == "ptq-scaling")
    return ScalingBenchmark.Run(args.Skip(1).ToArray());
var settings = name is "calibration-memory-child" or "qat-speed" ? null! : BenchmarkSettings.Parse(args.Skip(1).ToArray());
switch (name)
{
    case "scoring":
        ScoringBenchmark.Run(settings);
        break;
    case "calibration":
        CalibrationBenchmark.Run(settings, resnet: !args.Contains("--no-resnet"));
        break;
    case "ptq-accuracy":
        PostTrainingBenchmark.Accuracy(settings, resnet: !args.Contains("--no-resnet"));
        break;
    case "ptq-speed":
        PostTrainingBenchmark.Speed(settings);
        break;
    case "qat":
        AwareTrainingBenchmark.Accuracy(settings, args);
        break;
    case "qat-speed":
        return AwareTrainingBenchmark.Speed(args.Skip(1).ToArray());
    case "qat-speed-child":
        AwareTrainingBenchmark.SpeedChild(BenchmarkSettings.Parse(args.Skip(1).ToArray()), args);
        break;
    case "engine":
        return EngineBenchmark.Run(settings, args);
    case "engine-profile":
        return EngineProfile.Run(settings, args);
    case "zoo":
        return QatMl.Benchmarks.Zoo.ZooBenchmark.Run(settings, args);
    case "auto":
        return AutoBenchmark.Run(settings, args);
    case "adaround":
        return AdaRoundBenchmark.Run(settings, args);
    case "single-row":
        return SingleRowBenchmark.Run(settings, args);
    case "write-plan-fixtures":
        return PlanFixtures.Run(settings, args);
    case "calibration-memory":
        return CalibrationBenchmark.Memory(settings, args.Skip(1).ToArray());
    case "calibration-memory-child":
        CalibrationBenchmark.MemoryChild(BenchmarkSettings.Parse(args.Skip(2).ToArray()), int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture));
        break;
    default:
        Console.Error.WriteLine("usage: QatMl.Benchmarks <scoring|calibration|calibration-memory|ptq-accuracy|ptq-speed|ptq-scaling|qat|qat-speed|engine|engine-profile|single-row|zoo|adaround|auto|write-plan-fixtures> [--data <folder>] [--repeat N] [--model <onnx>]");
        return 2;
}
return 0;

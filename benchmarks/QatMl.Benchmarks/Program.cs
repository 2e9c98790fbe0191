// QatMl benchmarks. Each prints figures measured in one run, so ratios compare like with like.
//   dotnet run --project benchmarks/QatMl.Benchmarks -c Release -- <name> [--data <fashion-mnist folder>] [--repeat N]
// Names: scoring (issue 3: batched scoring vs ApplyOnnxModel vs a hand-written ONNX Runtime loop).
// Data: defaults to tests/data/fashion-mnist (the repo ships the 10k test set); the full
// Fashion-MNIST comes from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) or
// github.com/zalandoresearch/fashion-mnist.
using QatMl.Benchmarks;

string name = args.Length > 0 ? args[0] : "";
var settings = BenchmarkSettings.Parse(args.Skip(1).ToArray());
switch (name)
{
    case "scoring":
        ScoringBenchmark.Run(settings);
        break;
    default:
        Console.Error.WriteLine("usage: QatMl.Benchmarks <scoring> [--data <folder>] [--repeat N] [--model <onnx>]");
        return 2;
}
return 0;

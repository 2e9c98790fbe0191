// QatMl.Fuzz: coverage-guided fuzzing of the ONNX parser and validator (OnnxModel.Parse + OnnxValidator.Validate).
//   build/fuzz-managed.sh [minutes]   builds this program, instruments Microsoft.ML.Quantization.dll and
//                                     Google.Protobuf.dll with SharpFuzz, and runs the loop below.
//   QatMl.Fuzz fuzz <corpus> <findings> <seconds>   the loop (coverage feedback only when the assemblies are instrumented)
//   QatMl.Fuzz replay <file>...                      runs inputs once, printing what each did (regression checks)
// The contract fuzzed: any byte string either parses and validates, or ends in InvalidOnnxModelException. Any other
// exception, a crash or a hang is a finding.
using QatMl.Fuzz;

return args.FirstOrDefault() switch
{
    "fuzz" when args.Length == 4 => CoverageFuzzer.Run(args[1], args[2], TimeSpan.FromSeconds(double.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture))),
    "replay" when args.Length >= 2 => Target.Replay(args[1..]),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: QatMl.Fuzz fuzz <corpus> <findings> <seconds> | replay <file>...");
    return 2;
}

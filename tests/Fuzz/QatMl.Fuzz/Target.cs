using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Onnx;

namespace QatMl.Fuzz;

/// <summary>What is fuzzed, and how one input is judged.</summary>
internal static class Target
{
    /// <summary>Runs one input; returns null when it behaved (parsed and validated, or refused clearly), else the finding.</summary>
    public static Exception? Run(byte[] input)
    {
        try
        {
            var model = OnnxModel.Parse(input, sourceName: "fuzz.onnx");
            OnnxValidator.Validate(model);
            return null;
        }
        catch (InvalidOnnxModelException e) when (e.Message.Contains("'fuzz.onnx'", StringComparison.Ordinal))
        {
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    public static int Replay(string[] files)
    {
        int findings = 0;
        foreach (string file in files)
        {
            Exception? e = Run(File.ReadAllBytes(file));
            Console.WriteLine($"{file}: {(e is null ? "ok" : e.ToString())}");
            findings += e is null ? 0 : 1;
        }
        return findings == 0 ? 0 : 1;
    }
}

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Microsoft.ML.Quantization.Tests.Onnx;

/// <summary>Runs a model's first input/output in ONNX Runtime, the reference the rewrites must agree with.</summary>
internal static class OrtRunner
{
    public static float[] Run(byte[] model, float[] input, int[] dims, out int[] outputDims)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
        using var session = new InferenceSession(model, options);
        string inputName = session.InputMetadata.Keys.First();
        string outputName = session.OutputMetadata.Keys.First();
        var feed = new[] { NamedOnnxValue.CreateFromTensor(inputName, new DenseTensor<float>(input, dims)) };
        using var results = session.Run(feed, [outputName]);
        var tensor = results.First().AsTensor<float>();
        outputDims = tensor.Dimensions.ToArray();
        return tensor.ToArray();
    }

    public static float[] Run(byte[] model, float[] input, int[] dims) => Run(model, input, dims, out _);

    public static float[] RandomInput(int count, int seed)
    {
        var random = new Random(seed);
        var data = new float[count];
        for (int i = 0; i < count; i++)
            data[i] = (float)(random.NextDouble() * 2 - 1);
        return data;
    }

    /// <summary>Cosine similarity of two outputs, over all their values.</summary>
    public static double Cosine(float[] a, float[] b)
    {
        double dot = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            aa += (double)a[i] * a[i];
            bb += (double)b[i] * b[i];
        }
        return dot / Math.Sqrt(aa * bb);
    }

    /// <summary>Asserts max|a-b| &lt;= tolerance * max|a|.</summary>
    public static void AssertClose(float[] expected, float[] actual, double relativeTolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxA = expected.Max(v => Math.Abs((double)v));
        double maxDiff = 0;
        for (int i = 0; i < expected.Length; i++)
            maxDiff = Math.Max(maxDiff, Math.Abs((double)expected[i] - actual[i]));
        Assert.True(maxDiff <= relativeTolerance * maxA, $"max|a-b| = {maxDiff:g4} > {relativeTolerance:g2} * max|a| = {relativeTolerance * maxA:g4}");
    }
}

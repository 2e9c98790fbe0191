using System.Reflection;

namespace QatMl.Tool;

/// <summary>Facts about this build of the tool (versions of what generated projects reference).</summary>
internal static class ToolInfo
{
    private static string Metadata(string key)
        => typeof(ToolInfo).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == key)?.Value
           ?? throw new InvalidOperationException($"The tool was built without assembly metadata '{key}'.");

    /// <summary>The QatMl packages' version (library and tool are packed together).</summary>
    public static string PackageVersion => Metadata("QatMl.PackageVersion");

    public static string OnnxRuntimeVersion => Metadata("QatMl.OnnxRuntimeVersion");

    public static string MLNetVersion => Metadata("QatMl.MLNetVersion");

    public const string LibraryPackageId = "QatMl.ML.Quantization";
}

using QatMl.Tool.Cli;
using Spectre.Console.Cli.Testing;
using Spectre.Console.Testing;

namespace QatMl.Tool.Tests;

/// <summary>Runs qatml in-process (Spectre.Console.Cli.Testing) with a wide test console: plain output, as in a CI log.</summary>
internal static class ToolRunner
{
    public static CommandAppResult Run(params string[] args) => Run(CancellationToken.None, args);

    public static CommandAppResult Run(CancellationToken cancel, params string[] args)
    {
        var console = new TestConsole().Width(220);
        var app = new CommandAppTester(null, new CommandAppTesterSettings(), console);
        var environment = new ToolEnvironment(console, interactive: false);
        app.Configure(config => ToolApp.Configure(config, environment));
        return app.RunAsync(args, cancel).GetAwaiter().GetResult();
    }

    public static string Data(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "data", .. parts]);

    public static string FmnistNet => Data("models", "fmnistnet_fp32.onnx");

    public static string TestImages => Data("fashion-mnist", "t10k-images-idx3-ubyte.gz");

    public static string TestLabels => Data("fashion-mnist", "t10k-labels-idx1-ubyte.gz");

    public static string RepoRoot
    {
        get
        {
            for (string? dir = AppContext.BaseDirectory; dir is not null; dir = Path.GetDirectoryName(dir))
                if (File.Exists(Path.Combine(dir, "QatMl.sln")))
                    return dir;
            throw new DirectoryNotFoundException("No QatMl.sln above " + AppContext.BaseDirectory);
        }
    }

    public static string LibraryProject => Path.Combine(RepoRoot, "src", "Microsoft.ML.Quantization", "Microsoft.ML.Quantization.csproj");

    /// <summary>FmnistNet's preprocessing as options.</summary>
    public static readonly string[] FmnistPreprocessing = ["--scale", "255", "--mean", "0.2860", "--std", "0.3530"];
}

/// <summary>A temporary folder deleted with the test class.</summary>
public sealed class TempFolder : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "qatml-tool-tests-" + Guid.NewGuid().ToString("N"));

    public TempFolder() => Directory.CreateDirectory(Path);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

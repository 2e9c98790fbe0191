using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Onnx;
using QatMl.Tool.Commands;
using Spectre.Console;
using Spectre.Console.Cli;

namespace QatMl.Tool.Cli;

/// <summary>The command tree and how failures become exit codes (tests run it in-process with their own console).</summary>
internal static class ToolApp
{
    public const int UsageErrorExitCode = 2;
    public const int CancelledExitCode = 130;

    public static int Run(string[] args, ToolEnvironment environment, CancellationToken cancel)
    {
        var app = new CommandApp();
        app.Configure(config => Configure(config, environment));
        return app.Run(args, cancel);
    }

    public static void Configure(IConfigurator config, ToolEnvironment environment)
    {
        config.SetApplicationName("qatml");
        config.SetApplicationVersion(ToolInfo.PackageVersion);
        config.Settings.Console = environment.Console;
        config.Settings.Registrar.RegisterInstance(environment);
        config.Settings.CancellationExitCode = CancelledExitCode;
        config.AddCommand<InspectCommand>("inspect")
            .WithDescription("What a float ONNX model is, what would be quantized and why, what ONNX Runtime fuses, what the native engine runs, and a 5-second float vs INT8 timing.")
            .WithExample("inspect", "model.onnx");
        config.AddCommand<QuantizeCommand>("quantize")
            .WithDescription("Quantize a float ONNX model on your data: QDQ model, ML.NET zip, calibration table, report.html and a consumer project.")
            .WithExample("quantize", "fmnistnet.onnx", "--data", "images/", "--scale", "255", "--mean", "0.2860", "--std", "0.3530", "--precision", "auto", "--budget", "0.5", "--out", "out");
        config.AddCommand<CompareCommand>("compare")
            .WithDescription("Compare a float ONNX model with a quantized model.zip on the same data.")
            .WithExample("compare", "fmnistnet.onnx", "out/model.zip", "--data", "images/");
        config.AddCommand<BenchmarkCommand>("benchmark")
            .WithDescription("Latency and throughput of a float ONNX model and its INT8 version per backend, batch size and thread count.")
            .WithExample("benchmark", "model.onnx", "--batches", "1,64", "--thread-counts", "1,0");
        config.AddBranch("data", data =>
        {
            data.SetDescription("Data helpers.");
            data.AddCommand<ExportIdxCommand>("export-idx")
                .WithDescription("Write IDX images (Fashion-MNIST's format) as PNG files, one subfolder per label: an image folder for quantize.")
                .WithExample("data", "export-idx", "t10k-images-idx3-ubyte.gz", "--labels", "t10k-labels-idx1-ubyte.gz", "--out", "images");
        });
        config.SetExceptionHandler((exception, _) => Fail(environment.Console, exception));
    }

    private static int Fail(IAnsiConsole console, Exception exception)
    {
        Exception e = exception is TypeInitializationException { InnerException: { } inner } ? inner : exception;
        switch (e)
        {
            case OperationCanceledException:
                console.MarkupLine("[yellow]cancelled[/]: nothing was written.");
                return CancelledExitCode;
            case ToolException or InvalidOnnxModelException or CommandAppException or FileNotFoundException or InvalidDataException:
                console.MarkupLine($"[red]error:[/] {Markup.Escape(e.Message)}");
                return UsageErrorExitCode;
            default:
                console.MarkupLine($"[red]error:[/] {Markup.Escape(e.GetType().Name)}: {Markup.Escape(e.Message)}");
                if (Environment.GetEnvironmentVariable("QATML_DEBUG") is "1")
                    console.WriteLine(e.ToString());
                return 1;
        }
    }
}

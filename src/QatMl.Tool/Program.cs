using QatMl.Tool;
using QatMl.Tool.Cli;
using Spectre.Console;

// qatml: inspect, quantize, compare and benchmark ONNX models for ML.NET (see docs/tool.md).
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    // First Ctrl-C: cancel cleanly (the command stops between batches and removes what it was writing); a second one exits.
    if (cancel.IsCancellationRequested)
        return;
    e.Cancel = true;
    cancel.Cancel();
};
return ToolApp.Run(args, new ToolEnvironment(AnsiConsole.Console), cancel.Token);

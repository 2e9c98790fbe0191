using System.Diagnostics;
using System.Reflection;

namespace Microsoft.ML.Quantization.Tests.Reliability;

/// <summary>Marks a static method <c>int Name(string[] args)</c> the test assembly runs as a child process mode.</summary>
[AttributeUsage(AttributeTargets.Method)]
internal sealed class ChildModeAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

/// <summary>What a child process did.</summary>
internal sealed record ChildResult(int ExitCode, bool TimedOut, string Output, string Error)
{
    /// <summary>Everything it printed, for assertion messages.</summary>
    public string Transcript => $"exit code {ExitCode}{(TimedOut ? " (killed: timed out)" : "")}\n--- stdout\n{Output}\n--- stderr\n{Error}";

    /// <summary>Asserts a clean exit (no crash, no hang, no unhandled exception).</summary>
    public ChildResult AssertSucceeded()
    {
        Assert.False(TimedOut, Transcript);
        Assert.True(ExitCode == 0, Transcript);
        return this;
    }
}

/// <summary>
/// Runs a part of a test in a child process: the test assembly itself, started with <c>dotnet exec</c> in a mode
/// (<see cref="ChildModeAttribute"/>). A native crash, a hang or an out-of-memory then fails the test with the
/// child's output instead of killing the test host.
/// </summary>
internal static class ChildProcess
{
    /// <summary>The test assembly's entry point (<c>GenerateProgramFile</c> is off): <c>child &lt;mode&gt; [args]</c>.</summary>
    public static int Main(string[] args)
    {
        if (args.Length < 2 || args[0] != "child")
        {
            Console.Error.WriteLine("usage: dotnet exec Microsoft.ML.Quantization.Tests.dll child <mode> [args...] (run the tests with dotnet test)");
            return 2;
        }
        MethodInfo? mode = typeof(ChildProcess).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic))
            .FirstOrDefault(m => m.GetCustomAttribute<ChildModeAttribute>()?.Name == args[1]);
        if (mode is null)
        {
            Console.Error.WriteLine($"unknown child mode '{args[1]}'");
            return 2;
        }
        try
        {
            return (int)mode.Invoke(null, [args[2..]])!;
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            Console.Error.WriteLine(e.InnerException);
            return 3;
        }
    }

    /// <summary>Runs <paramref name="mode"/> and waits at most <paramref name="timeout"/> (then kills it).</summary>
    /// <param name="mode">The child mode.</param>
    /// <param name="args">Its arguments.</param>
    /// <param name="timeout">Wall-clock limit.</param>
    /// <param name="heapLimitBytes">A GC heap limit for the child (an out-of-memory then fails fast instead of swapping), or null.</param>
    /// <param name="environment">Extra environment variables.</param>
    /// <param name="workingDirectory">The child's working directory (default: the test output folder).</param>
    /// <param name="fileSizeLimitKiB">
    /// The largest file the child may write (RLIMIT_FSIZE, with SIGXFSZ ignored so a write past it fails with EFBIG): a
    /// full disk without root or a small file system.
    /// </param>
    public static ChildResult Run(string mode, string[] args, TimeSpan timeout, long? heapLimitBytes = null, IDictionary<string, string>? environment = null,
        string? workingDirectory = null, int? fileSizeLimitKiB = null)
    {
        var start = new ProcessStartInfo(fileSizeLimitKiB is null ? DotnetHost() : "bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? AppContext.BaseDirectory,
        };
        string[] command = ["exec", typeof(ChildProcess).Assembly.Location, "child", mode, .. args];
        if (fileSizeLimitKiB is int kib)
        {
            command = ["-c", $"ulimit -f {kib} && trap '' XFSZ && exec \"$0\" \"$@\"", DotnetHost(), .. command];
            // The runtime's double-mapped code heap is a file too (memfd): without W^X it needs none.
            start.Environment["DOTNET_EnableWriteXorExecute"] = "0";
        }
        foreach (string a in command)
            start.ArgumentList.Add(a);
        if (heapLimitBytes is long limit)
            start.Environment["DOTNET_GCHeapHardLimit"] = "0x" + limit.ToString("X");
        foreach (var kv in environment ?? new Dictionary<string, string>())
            start.Environment[kv.Key] = kv.Value;
        using var process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        bool exited = process.WaitForExit(timeout);
        if (!exited)
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        return new ChildResult(exited ? process.ExitCode : -1, !exited, output.Result, error.Result);
    }

    /// <summary>The dotnet host that runs this test host (the SDK sets DOTNET_HOST_PATH for tools it starts).</summary>
    private static string DotnetHost()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host))
            return host;
        string? self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet")
            return self;
        return "dotnet";
    }
}

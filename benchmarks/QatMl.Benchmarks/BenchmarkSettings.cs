using System.Globalization;

namespace QatMl.Benchmarks;

/// <summary>Command-line settings shared by the benchmarks.</summary>
internal sealed record BenchmarkSettings(string DataFolder, string ModelsFolder, int Repeat, bool Verbose = false)
{
    internal static BenchmarkSettings Parse(string[] args)
    {
        string root = RepoRoot();
        string data = Arg(args, "--data") ?? Path.Combine(root, "tests", "data", "fashion-mnist");
        string models = Arg(args, "--models") ?? Path.Combine(root, "tests", "data", "models");
        int repeat = Arg(args, "--repeat") is { } r ? int.Parse(r, CultureInfo.InvariantCulture) : 5;
        if (!args.Contains("--all-cores") && (OperatingSystem.IsLinux() || OperatingSystem.IsWindows()))
        {
            // One core for the whole process: every contender gets the same single core, whatever
            // thread pools it starts (ML.NET's ApplyOnnxModel ignores a one-thread setting).
            System.Diagnostics.Process.GetCurrentProcess().ProcessorAffinity = 1;
            Console.WriteLine("(process pinned to one core; --all-cores to lift)");
        }
        return new BenchmarkSettings(data, models, repeat, args.Contains("--verbose"));
    }

    /// <summary>The value after <paramref name="name"/> on the command line, or null.</summary>
    internal static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    private static string RepoRoot()
    {
        for (string? dir = AppContext.BaseDirectory; dir is not null; dir = Path.GetDirectoryName(dir))
            if (File.Exists(Path.Combine(dir, "QatMl.sln")))
                return dir;
        return Directory.GetCurrentDirectory();
    }

    /// <summary>
    /// Best (minimum) of <see cref="Repeat"/> runs after one warm-up, in seconds: wall time, and the
    /// process CPU time of the same run (CPU above wall means more than one thread worked).
    /// </summary>
    internal (double Wall, double Cpu) Best(Action action)
    {
        action();
        var process = System.Diagnostics.Process.GetCurrentProcess();
        (double Wall, double Cpu) best = (double.MaxValue, double.MaxValue);
        for (int i = 0; i < Repeat; i++)
        {
            process.Refresh();
            TimeSpan cpu0 = process.TotalProcessorTime;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            action();
            double wall = clock.Elapsed.TotalSeconds;
            process.Refresh();
            double cpu = (process.TotalProcessorTime - cpu0).TotalSeconds;
            if (wall < best.Wall)
                best = (wall, cpu);
        }
        return best;
    }
}

using Spectre.Console;

namespace QatMl.Tool.Cli;

/// <summary>What every command shares: the console it writes to and whether it may draw live progress.</summary>
internal sealed class ToolEnvironment
{
    public ToolEnvironment(IAnsiConsole console, bool? interactive = null)
    {
        Console = console;
        // Live bars only on a terminal; CI logs and pipes get one plain line per step.
        Interactive = interactive ?? (console.Profile.Capabilities.Interactive && !System.Console.IsOutputRedirected
                                      && Environment.GetEnvironmentVariable("CI") is not "true"
                                      && Environment.GetEnvironmentVariable("QATML_PLAIN") is null or "" or "0");
    }

    public IAnsiConsole Console { get; }

    public bool Interactive { get; private set; }

    /// <summary>Forces plain output (the --plain option).</summary>
    public void UsePlainOutput() => Interactive = false;

    /// <summary>One progress session: a live Spectre.Console display, or plain lines.</summary>
    public ToolProgress Progress() => new(this);
}

namespace QatMl.Tool;

/// <summary>A problem with the user's input (a file, an option, a shape): printed as one line, exit code 2.</summary>
internal sealed class ToolException(string message) : Exception(message);

namespace QatMl.Tool.Cli;

/// <summary>
/// An output folder written whole or not at all: everything goes to a hidden sibling folder, which replaces the
/// target only in <see cref="Commit"/>; on an error or Ctrl-C, <see cref="Dispose"/> deletes it.
/// </summary>
internal sealed class StagingDirectory : IDisposable
{
    private bool _committed;

    public StagingDirectory(string target, bool overwrite)
    {
        Target = Path.GetFullPath(target);
        if (File.Exists(Target))
            throw new ToolException($"--out '{target}' is a file, not a folder.");
        if (Directory.Exists(Target) && Directory.EnumerateFileSystemEntries(Target).Any() && !overwrite)
            throw new ToolException($"--out '{target}' exists and is not empty; give --force to replace it.");
        string parent = Path.GetDirectoryName(Target) ?? throw new ToolException($"--out '{target}' has no parent folder.");
        Directory.CreateDirectory(parent);
        Folder = System.IO.Path.Combine(parent, $".{System.IO.Path.GetFileName(Target)}.qatml-{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(Folder);
    }

    /// <summary>The folder the results land in after <see cref="Commit"/>.</summary>
    public string Target { get; }

    /// <summary>Where to write now.</summary>
    public string Folder { get; }

    public string FilePath(string name) => System.IO.Path.Combine(Folder, name);

    /// <summary>Moves the written folder into place (replacing an older one).</summary>
    public void Commit()
    {
        string? old = null;
        if (Directory.Exists(Target))
        {
            old = Target + $".qatml-old-{Guid.NewGuid():N}";
            Directory.Move(Target, old);
        }
        Directory.Move(Folder, Target);
        _committed = true;
        if (old is not null)
            Directory.Delete(old, recursive: true);
    }

    public void Dispose()
    {
        if (_committed)
            return;
        try
        {
            Directory.Delete(Folder, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

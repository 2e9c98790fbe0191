namespace Microsoft.ML.Quantization.Internal;

/// <summary>
/// A fresh folder under the temp path that only this user can enter (mode 0700 on Unix, as mkdtemp makes it), removed
/// with everything in it on <see cref="Dispose"/>: for files a library insists on writing (ML.NET's copy of a model).
/// </summary>
internal sealed class PrivateTempDirectory : IDisposable
{
    internal PrivateTempDirectory(string prefix) => Path = Directory.CreateTempSubdirectory(prefix).FullName;

    internal string Path { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A file still open where open files cannot be deleted (Windows): nothing more can be done here.
        }
    }
}

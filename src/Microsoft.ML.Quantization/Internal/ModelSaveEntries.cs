using System.Reflection;

namespace Microsoft.ML.Quantization.Internal;

/// <summary>
/// Writes an extra entry into the zip <c>mlContext.Model.Save</c> is writing, beside the entries of the transformer
/// being saved. <see cref="ModelSaveContext"/> exposes no public members in ML.NET 5.0.1, so its repository is reached
/// by reflection; <c>Model.Load</c> ignores entries it does not know, and <c>mlContext.Quantization.LoadModel</c>
/// reads them back. If ML.NET's internals change shape, saving fails with a clear error rather than writing a
/// zip that cannot be restored.
/// </summary>
internal static class ModelSaveEntries
{
    private const BindingFlags Instance = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;

    internal static void Write(ModelSaveContext ctx, string name, ReadOnlySpan<byte> content)
    {
        try
        {
            object repository = typeof(ModelSaveContext).GetField("Repository", Instance)!.GetValue(ctx)!;
            string directory = (string?)typeof(ModelSaveContext).GetField("Directory", Instance)!.GetValue(ctx) ?? "";
            MethodInfo create = repository.GetType().GetMethod("CreateEntry", Instance, [typeof(string), typeof(string)])!;
            object entry = create.Invoke(repository, [directory, name])!;
            var stream = (Stream)(entry.GetType().GetField("Stream", Instance)?.GetValue(entry)
                                  ?? entry.GetType().GetProperty("Stream", Instance)!.GetValue(entry))!;
            stream.Write(content);
            ((IDisposable)entry).Dispose();
        }
        catch (Exception e) when (e is NullReferenceException or TargetInvocationException or MissingMemberException or InvalidCastException)
        {
            throw new NotSupportedException(
                $"Cannot write QatMl's settings into this ML.NET model zip (ML.NET {typeof(ModelSaveContext).Assembly.GetName().Version}): {e.GetBaseException().Message}", e);
        }
    }

    /// <summary>The folder of <paramref name="ctx"/> inside the zip ("Model" for the root transformer).</summary>
    internal static string Directory(ModelSaveContext ctx)
        => (string?)typeof(ModelSaveContext).GetField("Directory", Instance)?.GetValue(ctx) ?? "";
}

using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization;

/// <summary>
/// <c>LoadModel</c>: the load half of QatMl's model zips (the save half is <see cref="ModelSaving"/>, beside the
/// transformers). ML.NET cannot save a third-party transformer type, so each QatMl transformer saves what ML.NET can load
/// on its own plus a JSON entry with its settings and the SHA-256 of its ONNX bytes; <c>mlContext.Model.Load</c> ignores
/// those entries, <see cref="Load"/> checks them (sizes capped, settings validated like options, hashes matching) before
/// ML.NET reads the zip, then restores the QatMl types.
/// </summary>
internal static class ModelPersistence
{
    /// <summary>The largest settings entry LoadModel reads (a calibration table with histograms is the biggest).</summary>
    internal const int MaxSettingsBytes = 256 << 20;

    /// <summary>The largest ONNX entry LoadModel reads (protobuf's own limit).</summary>
    internal static readonly int MaxModelBytes = Array.MaxLength;

    /// <summary>
    /// Checks QatMl's entries, loads with ML.NET, then puts QatMl's own transformers back wherever the zip has their
    /// entries. Every problem is an <see cref="InvalidDataException"/> naming the zip and the entry, raised before ML.NET
    /// reads a byte of a tampered QatMl model.
    /// </summary>
    internal static ITransformer Load(MLContext context, string path, out DataViewSchema inputSchema)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Dictionary<string, Func<ITransformer>> restorers;
        using (FileStream file = RegularFile.TryOpenRead(Path.GetFullPath(path), requireSingleLink: false, out string problem)
            ?? throw (problem == "does not exist" ? new FileNotFoundException($"Model '{path}' does not exist.", path) : new InvalidDataException($"Model '{path}' {problem}.")))
        {
            ZipArchive zip;
            try
            {
                zip = new ZipArchive(file, ZipArchiveMode.Read);
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"Model '{path}' is not a model zip: {e.Message}", e);
            }
            using (zip)
                restorers = zip.Entries.Where(e => e.Name is ModelSaving.ScoringEntry or ModelSaving.QuantizedEntry or ModelSaving.CalibrationEntry)
                    .ToDictionary(e => e.FullName[..^(e.Name.Length + 1)], e => Prepare(context, zip, e, path), StringComparer.Ordinal);
        }
        ITransformer loaded;
        try
        {
            loaded = context.Model.Load(path, out inputSchema);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // ML.NET reports most failures as "Error during class instantiation": the cause is at the bottom.
            throw new InvalidDataException($"Model '{path}' could not be loaded by ML.NET: {e.GetBaseException().Message}", e);
        }
        if (restorers.Count == 0)
            return loaded;
        return Restore(restorers, loaded, "TransformerChain");
    }

    private static ITransformer Restore(Dictionary<string, Func<ITransformer>> restorers, ITransformer loaded, string folder)
    {
        if (restorers.TryGetValue(folder, out var restore))
        {
            ITransformer restored = restore();
            (loaded as IDisposable)?.Dispose();
            return restored;
        }
        if (loaded is TransformerChain<ITransformer> chain)
        {
            var children = chain.Select((t, i) => Restore(restorers, t, $"{folder}/Transform_{i:000}")).ToList();
            return new TransformerChain<ITransformer>(children.ToArray());
        }
        return loaded;
    }

    /// <summary>Reads and checks one QatMl entry (and its ONNX model); returns what creates the transformer.</summary>
    private static Func<ITransformer> Prepare(MLContext context, ZipArchive zip, ZipArchiveEntry settingsEntry, string path)
    {
        string folder = settingsEntry.FullName[..^(settingsEntry.Name.Length + 1)];
        byte[] json = ReadEntry(settingsEntry, MaxSettingsBytes, path);
        string where = $"Model '{path}': QatMl entry '{settingsEntry.FullName}'";
        try
        {
            switch (settingsEntry.Name)
            {
                case ModelSaving.CalibrationEntry:
                {
                    var state = JsonSerializer.Deserialize<CalibrationTransformer.SavedState>(json, ModelSaving.JsonOptions);
                    if (state?.Table is null || state.Inputs is null || state.Inputs.Any(i => i?.Name is null) || state.RowsObserved < 0)
                        throw new InvalidDataException($"{where} lacks its table or input columns, or has a negative row count.");
                    var table = CalibrationTable.FromJson(state.Table);
                    return () => new CalibrationTransformer(table, state.RowsObserved, state.Inputs);
                }
                case ModelSaving.ScoringEntry:
                {
                    var settings = JsonSerializer.Deserialize<ScoringSettings>(json, ModelSaving.JsonOptions)
                        ?? throw new InvalidDataException($"{where} holds no settings.");
                    settings.Validate();
                    byte[] model = ReadOnnx(zip, folder, settings, path);
                    settings = settings with { ModelName = $"{path}:{folder}" };
                    return () => new OnnxModelScoringTransformer(context, settings.ToScoringOptions(model));
                }
                default:
                {
                    var state = JsonSerializer.Deserialize<QuantizedModelTransformer.SavedState>(json, ModelSaving.JsonOptions);
                    if (state?.Settings is null)
                        throw new InvalidDataException($"{where} holds no Settings.");
                    if (state.Nodes is null || state.Nodes.Any(n => n?.Name is null || n.OpType is null))
                        throw new InvalidDataException($"{where} lacks its node list (Nodes), or a node's name or op type.");
                    foreach (var n in state.Nodes)
                        n.Precision?.Validate($"Node '{n.Name}'");
                    state.Sensitivity?.Validate();
                    PostTrainingOptions.ValidateRestored(state.Settings);
                    byte[] model = ReadOnnx(zip, folder, state.Settings, path);
                    var settings = state.Settings with { ModelName = $"{path}:{folder}" };
                    return () => new QuantizedModelTransformer(context, model, settings, state.Nodes) { Sensitivity = state.Sensitivity };
                }
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{where} is not valid: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{where} holds settings the options refuse: {e.Message}", e);
        }
    }

    /// <summary>
    /// The ONNX bytes ML.NET's OnnxTransformer saved in <paramref name="folder"/> (with QatMl's tensor names restored), or
    /// QatMl's exact copy; each must match the SHA-256 QatMl saved beside it, so ML.NET and QatMl run the same model.
    /// </summary>
    private static byte[] ReadOnnx(ZipArchive zip, string folder, ScoringSettings settings, string path)
    {
        var hashEntry = zip.GetEntry($"{folder}/{ModelSaving.HashEntry}")
            ?? throw new InvalidDataException($"Model '{path}' has QatMl settings in '{folder}' but no '{ModelSaving.HashEntry}' entry beside them (saved by an older QatMl, or modified).");
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in Encoding.UTF8.GetString(ReadEntry(hashEntry, 4096, path)).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] parts = line.Split("  ", 2);
            if (parts.Length != 2)
                throw new InvalidDataException($"Model '{path}': '{hashEntry.FullName}' is not a list of SHA-256 hashes.");
            hashes[parts[1]] = parts[0];
        }
        byte[] Verified(string name)
        {
            var entry = zip.GetEntry($"{folder}/{name}")
                ?? throw new InvalidDataException($"Model '{path}' has QatMl settings in '{folder}' but no '{name}' entry beside them.");
            byte[] bytes = ReadEntry(entry, MaxModelBytes, path);
            ReadOnlySpan<byte> model = bytes;
            if (name == ModelSaving.OnnxModelEntry)
            {
                if (bytes.Length < 4 || BitConverter.ToInt32(bytes, 0) != bytes.Length - 4)
                    throw new InvalidDataException($"Model '{path}': '{entry.FullName}' is not an ONNX model saved by ML.NET's OnnxTransformer (length prefix mismatch).");
                model = model[4..];
            }
            if (!hashes.TryGetValue(name, out string? expected) || expected != ModelSaving.Sha256(model))
                throw new InvalidDataException($"Model '{path}': '{entry.FullName}' is not the model QatMl saved ({(expected is null ? "no SHA-256 recorded" : "its SHA-256 differs")} in '{hashEntry.FullName}'); the zip was modified.");
            return bytes;
        }
        byte[] mlnet = Verified(ModelSaving.OnnxModelEntry);
        if (zip.GetEntry($"{folder}/{ModelSaving.ExactModelEntry}") is not null)
        {
            byte[] exact = Verified(ModelSaving.ExactModelEntry);
            OnnxModel.Parse(exact, sourceName: $"{path}:{folder}/{ModelSaving.ExactModelEntry}");
            return exact;
        }
        var parsed = OnnxModel.Parse(mlnet.AsSpan(4), sourceName: $"{path}:{folder}/{ModelSaving.OnnxModelEntry}");
        foreach (var b in settings.Inputs.Concat(settings.Outputs).Where(b => b.ColumnName != b.TensorName))
            parsed.Graph.RenameTensor(b.ColumnName, b.TensorName);
        return parsed.ToBytes();
    }

    /// <summary>An entry's bytes, refused when its declared size or what it actually inflates to passes <paramref name="limit"/>.</summary>
    private static byte[] ReadEntry(ZipArchiveEntry entry, int limit, string path)
    {
        string tooLarge = $"Model '{path}': entry '{entry.FullName}' is larger than the {limit} bytes QatMl reads for it";
        if (entry.Length > limit)
            throw new InvalidDataException($"{tooLarge} (it declares {entry.Length}).");
        using var stream = entry.Open();
        using var buffer = new MemoryStream((int)Math.Min(entry.Length, limit));
        var chunk = new byte[81920];
        int read;
        while ((read = stream.Read(chunk)) > 0)
        {
            if (buffer.Length + read > limit)
                throw new InvalidDataException($"{tooLarge} (it inflates past that while declaring {entry.Length}).");
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }
}

using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization;

/// <summary>
/// How QatMl transformers travel in ML.NET model zips. ML.NET 5.0.1 cannot save a third-party transformer type, so
/// each saves what ML.NET can load on its own (an OnnxTransformer over its ONNX bytes; an empty TransformerChain for
/// the pass-through calibration transform) plus a JSON entry with its own settings in the same folder, and the SHA-256
/// of the ONNX bytes (<see cref="HashEntry"/>). <c>mlContext.Model.Load</c> ignores those entries; <see cref="Load"/>
/// checks them (sizes capped, settings validated like options, hashes matching) before ML.NET reads the zip, then
/// restores the QatMl types.
/// </summary>
internal static class ModelPersistence
{
    internal const string ScoringEntry = "QatMl.OnnxScoring.json";
    internal const string QuantizedEntry = "QatMl.QuantizedModel.json";
    internal const string CalibrationEntry = "QatMl.Calibration.json";
    internal const string HashEntry = "QatMl.Model.sha256"; // "<sha256 hex>  <entry>" per ONNX entry, as sha256sum writes
    internal const string OnnxModelEntry = "OnnxModel"; // ML.NET OnnxTransformer: int32 length, then the model bytes
    internal const string ExactModelEntry = "QatMl.Model.onnx"; // only when ML.NET's copy had to be widened (int4)

    /// <summary>The largest settings entry LoadModel reads (a calibration table with histograms is the biggest).</summary>
    internal const int MaxSettingsBytes = 256 << 20;

    /// <summary>The largest ONNX entry LoadModel reads (protobuf's own limit).</summary>
    internal static readonly int MaxModelBytes = Array.MaxLength;

    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Saves <paramref name="scoring"/> as ML.NET's OnnxTransformer (graph inputs/outputs renamed to the columns) plus <paramref name="settings"/>.</summary>
    internal static void SaveOnnx(ModelSaveContext ctx, MLContext context, OnnxModelScoringTransformer scoring, string entry, byte[] settings)
    {
        var model = OnnxModel.Parse(scoring.ModelBytes);
        FillOutputShapes(model, scoring);
        var (inputs, outputs) = Bindings(model, scoring.Options.Inputs, scoring.Options.Outputs);
        foreach (var b in inputs.Concat(outputs).Where(b => b.ColumnName != b.TensorName))
            model.Graph.RenameTensor(b.TensorName, b.ColumnName);
        // ML.NET's OnnxModel knows no 4-bit types. Its copy gets the same values widened to 8 bits (DequantizeLinear
        // gives identical floats), and the exact model travels in a QatMl entry for LoadModel.
        model.Graph.Proto.ValueInfo.Clear();
        bool widened = WidenInt4(model);
        var keep = outputs.Select(o => o.ColumnName).ToHashSet(StringComparer.Ordinal);
        for (int i = model.Graph.Proto.Output.Count - 1; i >= 0; i--)
            if (!keep.Contains(model.Graph.Proto.Output[i].Name))
                model.Graph.Proto.Output.RemoveAt(i);

        byte[] mlnetBytes = model.ToBytes();
        // ML.NET's OnnxTransformer copies the model to a file in MLContext.TempFilePath, and the estimator's own copy is
        // deleted only when the GC finalizes it (never, at process exit): give it a private folder and remove that.
        using var scratch = new PrivateTempDirectory("qatml-save-");
        var mlnet = new MLContext(seed: 0) { TempFilePath = scratch.Path };
        using var stream = new MemoryStream(mlnetBytes);
        var estimator = mlnet.Transforms.ApplyOnnxModel(
            outputs.Select(o => o.ColumnName).ToArray(), inputs.Select(i => i.ColumnName).ToArray(), stream,
            scoring.Options.GpuDeviceId, scoring.Options.FallbackToCpu ?? false);
        var schema = new DataViewSchema.Builder();
        foreach (var spec in scoring.Scorer.Inputs)
            schema.AddColumn(spec.ColumnName, new VectorDataViewType(BatchScorerSchema.ItemType(spec.ElementType), spec.RowDims));
        var inner = estimator.Fit(new EmptyDataView(schema.ToSchema()));
        try
        {
            ((ICanSaveModel)inner).Save(ctx);
        }
        finally
        {
            (inner as IDisposable)?.Dispose();
        }
        ModelSaveEntries.Write(ctx, entry, settings);
        var hashes = new StringBuilder().Append(Sha256(mlnetBytes)).Append("  ").Append(OnnxModelEntry).Append('\n');
        if (widened)
        {
            ModelSaveEntries.Write(ctx, ExactModelEntry, scoring.ModelBytes);
            hashes.Append(Sha256(scoring.ModelBytes)).Append("  ").Append(ExactModelEntry).Append('\n');
        }
        ModelSaveEntries.Write(ctx, HashEntry, Encoding.UTF8.GetBytes(hashes.ToString()));
    }

    private static string Sha256(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    private static bool WidenInt4(OnnxModel model)
    {
        bool any = false;
        foreach (var t in model.Graph.Initializers.Where(t => t.ElementType is OnnxElementType.Int4 or OnnxElementType.UInt4).ToList())
        {
            model.Graph.SetInitializer(t.ElementType == OnnxElementType.Int4
                ? OnnxTensor.FromInt8(t.Name, t.Dims, t.ToInt4Array())
                : OnnxTensor.FromUInt8(t.Name, t.Dims, t.ToUInt4Array()));
            any = true;
        }
        return any;
    }

    /// <summary>
    /// ML.NET's OnnxTransformer needs a shape on every output; intermediate tensors QatMl exposes may have none, so one
    /// row of zeros is run to learn them (the batch dimension stays symbolic).
    /// </summary>
    private static void FillOutputShapes(OnnxModel model, OnnxModelScoringTransformer scoring)
    {
        var outputs = model.Graph.Proto.Output;
        if (outputs.All(o => o.Type?.TensorType?.Shape is not null))
            return;
        var scorer = scoring.Scorer;
        using var batch = new OrtBatchScorer.Batch(scorer, Enumerable.Repeat(true, scorer.Outputs.Length).ToArray(), capacity: 1);
        batch.Run(1);
        foreach (var o in outputs.Where(o => o.Type?.TensorType is { Shape: null }))
        {
            int k = Array.FindIndex(scorer.Outputs, s => s.TensorName == o.Name);
            if (k < 0 || batch.RunRowDims[k] is not { } dims)
                continue;
            var shape = new Onnx.Proto.TensorShapeProto();
            shape.Dim.Add(new Onnx.Proto.TensorShapeProto.Types.Dimension { DimParam = "batch" });
            foreach (int d in dims)
                shape.Dim.Add(new Onnx.Proto.TensorShapeProto.Types.Dimension { DimValue = d });
            o.Type.TensorType.Shape = shape;
        }
    }

    /// <summary>Saves a pass-through transformer: an empty TransformerChain plus <paramref name="settings"/>.</summary>
    internal static void SavePassThrough(ModelSaveContext ctx, string entry, byte[] settings)
    {
        ((ICanSaveModel)new TransformerChain<ITransformer>()).Save(ctx);
        ModelSaveEntries.Write(ctx, entry, settings);
    }

    private static (List<OnnxColumnBinding> Inputs, List<OnnxColumnBinding> Outputs) Bindings(OnnxModel model, IList<OnnxColumnBinding> inputs, IList<OnnxColumnBinding> outputs)
        => (inputs.Count > 0 ? [.. inputs] : model.Graph.RuntimeInputs.Select(i => new OnnxColumnBinding(i.Name, i.Name)).ToList(),
            outputs.Count > 0 ? [.. outputs] : model.Graph.Outputs.Select(o => new OnnxColumnBinding(o.Name, o.Name)).ToList());

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
                restorers = zip.Entries.Where(e => e.Name is ScoringEntry or QuantizedEntry or CalibrationEntry)
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
                case CalibrationEntry:
                {
                    var state = JsonSerializer.Deserialize<CalibrationTransformer.SavedState>(json, JsonOptions);
                    if (state?.Table is null || state.Inputs is null || state.Inputs.Any(i => i?.Name is null) || state.RowsObserved < 0)
                        throw new InvalidDataException($"{where} lacks its table or input columns, or has a negative row count.");
                    var table = CalibrationTable.FromJson(state.Table);
                    return () => new CalibrationTransformer(table, state.RowsObserved, state.Inputs);
                }
                case ScoringEntry:
                {
                    var settings = JsonSerializer.Deserialize<ScoringSettings>(json, JsonOptions)
                        ?? throw new InvalidDataException($"{where} holds no settings.");
                    settings.Validate();
                    byte[] model = ReadOnnx(zip, folder, settings, path);
                    settings = settings with { ModelName = $"{path}:{folder}" };
                    return () => new OnnxModelScoringTransformer(context, settings.ToScoringOptions(model));
                }
                default:
                {
                    var state = JsonSerializer.Deserialize<QuantizedModelTransformer.SavedState>(json, JsonOptions);
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
        var hashEntry = zip.GetEntry($"{folder}/{HashEntry}")
            ?? throw new InvalidDataException($"Model '{path}' has QatMl settings in '{folder}' but no '{HashEntry}' entry beside them (saved by an older QatMl, or modified).");
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
            if (name == OnnxModelEntry)
            {
                if (bytes.Length < 4 || BitConverter.ToInt32(bytes, 0) != bytes.Length - 4)
                    throw new InvalidDataException($"Model '{path}': '{entry.FullName}' is not an ONNX model saved by ML.NET's OnnxTransformer (length prefix mismatch).");
                model = model[4..];
            }
            if (!hashes.TryGetValue(name, out string? expected) || expected != Sha256(model))
                throw new InvalidDataException($"Model '{path}': '{entry.FullName}' is not the model QatMl saved ({(expected is null ? "no SHA-256 recorded" : "its SHA-256 differs")} in '{hashEntry.FullName}'); the zip was modified.");
            return bytes;
        }
        byte[] mlnet = Verified(OnnxModelEntry);
        if (zip.GetEntry($"{folder}/{ExactModelEntry}") is not null)
        {
            byte[] exact = Verified(ExactModelEntry);
            OnnxModel.Parse(exact, sourceName: $"{path}:{folder}/{ExactModelEntry}");
            return exact;
        }
        var parsed = OnnxModel.Parse(mlnet.AsSpan(4), sourceName: $"{path}:{folder}/{OnnxModelEntry}");
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

    /// <summary>A schema with no rows: what Fit of ApplyOnnxModel needs to open the model.</summary>
    private sealed class EmptyDataView(DataViewSchema schema) : IDataView
    {
        public bool CanShuffle => false;
        public DataViewSchema Schema { get; } = schema;
        public long? GetRowCount() => 0;
        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
            => throw new NotSupportedException("This view only carries a schema.");
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
            => throw new NotSupportedException("This view only carries a schema.");
    }
}

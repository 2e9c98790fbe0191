using System.IO.Compression;
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
/// the pass-through calibration transform) plus a JSON entry with its own settings in the same folder.
/// <c>mlContext.Model.Load</c> ignores that entry; <see cref="Load"/> reads it and restores the QatMl type.
/// </summary>
internal static class ModelPersistence
{
    internal const string ScoringEntry = "QatMl.OnnxScoring.json";
    internal const string QuantizedEntry = "QatMl.QuantizedModel.json";
    internal const string CalibrationEntry = "QatMl.Calibration.json";
    private const string OnnxModelEntry = "OnnxModel"; // ML.NET OnnxTransformer: int32 length, then the model bytes
    private const string ExactModelEntry = "QatMl.Model.onnx"; // only when ML.NET's copy had to be widened (int4)

    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Saves <paramref name="scoring"/> as ML.NET's OnnxTransformer (graph inputs/outputs renamed to the columns) plus <paramref name="settings"/>.</summary>
    internal static void SaveOnnx(ModelSaveContext ctx, MLContext context, OnnxScoringTransformer scoring, string entry, byte[] settings)
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

        using var stream = new MemoryStream(model.ToBytes());
        var estimator = context.Transforms.ApplyOnnxModel(
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
        if (widened)
            ModelSaveEntries.Write(ctx, ExactModelEntry, scoring.ModelBytes);
    }

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
    private static void FillOutputShapes(OnnxModel model, OnnxScoringTransformer scoring)
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

    /// <summary>Loads with ML.NET, then puts QatMl's own transformers back wherever the zip has their entries.</summary>
    internal static ITransformer Load(MLContext context, string path, out DataViewSchema inputSchema)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ITransformer loaded = context.Model.Load(path, out inputSchema);
        using ZipArchive zip = ZipFile.OpenRead(path);
        var folders = zip.Entries.Where(e => e.Name is ScoringEntry or QuantizedEntry or CalibrationEntry)
            .ToDictionary(e => e.FullName[..^(e.Name.Length + 1)], e => e, StringComparer.Ordinal);
        if (folders.Count == 0)
            return loaded;
        return Restore(context, zip, folders, loaded, "TransformerChain", path);
    }

    private static ITransformer Restore(MLContext context, ZipArchive zip, Dictionary<string, ZipArchiveEntry> folders, ITransformer loaded, string folder, string path)
    {
        if (folders.TryGetValue(folder, out var settings))
        {
            ITransformer restored = RestoreOne(context, zip, folder, settings, path);
            (loaded as IDisposable)?.Dispose();
            return restored;
        }
        if (loaded is TransformerChain<ITransformer> chain)
        {
            var children = chain.Select((t, i) => Restore(context, zip, folders, t, $"{folder}/Transform_{i:000}", path)).ToList();
            return new TransformerChain<ITransformer>(children.ToArray());
        }
        return loaded;
    }

    private static ITransformer RestoreOne(MLContext context, ZipArchive zip, string folder, ZipArchiveEntry settingsEntry, string path)
    {
        byte[] json = ReadAll(settingsEntry);
        try
        {
            switch (settingsEntry.Name)
            {
                case CalibrationEntry:
                {
                    var state = JsonSerializer.Deserialize<CalibrationTransformer.SavedState>(json, JsonOptions)!;
                    return new CalibrationTransformer(CalibrationTable.FromJson(state.Table), state.RowsObserved, state.Inputs);
                }
                case ScoringEntry:
                {
                    var settings = JsonSerializer.Deserialize<ScoringSettings>(json, JsonOptions)!;
                    return new OnnxScoringTransformer(context, settings.ToScoringOptions(ReadOnnx(zip, folder, settings, path)));
                }
                default:
                {
                    var state = JsonSerializer.Deserialize<QuantizedModelTransformer.SavedState>(json, JsonOptions)!;
                    return new QuantizedModelTransformer(context, ReadOnnx(zip, folder, state.Settings, path), state.Settings, state.Nodes);
                }
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Model '{path}': QatMl entry '{settingsEntry.FullName}' is not valid: {e.Message}", e);
        }
    }

    /// <summary>The ONNX bytes ML.NET's OnnxTransformer saved in <paramref name="folder"/>, with QatMl's tensor names restored.</summary>
    private static byte[] ReadOnnx(ZipArchive zip, string folder, ScoringSettings settings, string path)
    {
        if (zip.GetEntry($"{folder}/{ExactModelEntry}") is { } exact)
            return ReadAll(exact);
        var entry = zip.GetEntry($"{folder}/{OnnxModelEntry}")
            ?? throw new InvalidDataException($"Model '{path}' has QatMl settings in '{folder}' but no '{OnnxModelEntry}' entry beside them.");
        byte[] raw = ReadAll(entry);
        if (raw.Length < 4 || BitConverter.ToInt32(raw, 0) != raw.Length - 4)
            throw new InvalidDataException($"Model '{path}': '{entry.FullName}' is not an ONNX model saved by ML.NET's OnnxTransformer (length prefix mismatch).");
        var model = OnnxModel.Parse(raw.AsSpan(4), sourceName: $"{path}:{entry.FullName}");
        foreach (var b in settings.Inputs.Concat(settings.Outputs).Where(b => b.ColumnName != b.TensorName))
            model.Graph.RenameTensor(b.ColumnName, b.TensorName);
        return model.ToBytes();
    }

    private static byte[] ReadAll(ZipArchiveEntry entry)
    {
        using var stream = entry.Open();
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
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

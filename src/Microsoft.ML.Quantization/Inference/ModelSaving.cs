using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// The save half of QatMl's model zips, used by each transformer's <c>Save</c> (scoring, quantized, calibration): what
/// ML.NET loads on its own (an OnnxTransformer over the ONNX bytes, or an empty TransformerChain) plus QatMl's settings
/// entry and the SHA-256 of the ONNX bytes (<see cref="HashEntry"/>). The load half, <c>LoadModel</c>, is
/// <c>ModelPersistence</c> in the catalog, above every transformer it restores.
/// </summary>
internal static class ModelSaving
{
    internal const string ScoringEntry = "QatMl.OnnxScoring.json";
    internal const string QuantizedEntry = "QatMl.QuantizedModel.json";
    internal const string CalibrationEntry = "QatMl.Calibration.json";
    internal const string HashEntry = "QatMl.Model.sha256"; // "<sha256 hex>  <entry>" per ONNX entry, as sha256sum writes
    internal const string OnnxModelEntry = "OnnxModel"; // ML.NET OnnxTransformer: int32 length, then the model bytes
    internal const string ExactModelEntry = "QatMl.Model.onnx"; // only when ML.NET's copy had to be widened (int4)

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

    internal static string Sha256(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

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
        => ([.. OnnxColumnBinding.OrSameNames(inputs, model.Graph.RuntimeInputs.Select(i => i.Name))],
            [.. OnnxColumnBinding.OrSameNames(outputs, model.Graph.Outputs.Select(o => o.Name))]);

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

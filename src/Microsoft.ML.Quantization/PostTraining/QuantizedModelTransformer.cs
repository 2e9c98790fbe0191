using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// A quantized ONNX model scoring an IDataView through ONNX Runtime in batches (CPU; CUDA or TensorRT with the GPU
/// package). Made by <see cref="PostTrainingEstimator"/>. Exports a standard QDQ ONNX file (<see cref="SaveAsOnnx"/>),
/// saves with <c>mlContext.Model.Save</c> (the zip loads with <c>mlContext.Model.Load</c> as ML.NET's own
/// OnnxTransformer over the same bytes) and is restored whole, options included, by
/// <c>mlContext.Quantization.LoadModel</c>.
/// </summary>
public sealed class QuantizedModelTransformer : ITransformer, IDisposable
{
    internal const string SettingsEntry = "QatMl.QuantizedModel.json";
    internal const string ModelEntry = "QatMl.QuantizedModel.onnx";

    private readonly OnnxScoringTransformer _scoring;

    internal QuantizedModelTransformer(MLContext context, byte[] quantizedModel, QuantizedModelSettings settings, IReadOnlyList<QuantizedNodeInfo> nodes)
    {
        Context = context;
        QuantizedModel = quantizedModel;
        Settings = settings;
        Nodes = nodes;
        _scoring = new OnnxScoringTransformer(context, settings.ToScoringOptions(quantizedModel));
    }

    internal MLContext Context { get; }

    internal QuantizedModelSettings Settings { get; }

    /// <summary>The quantized ONNX model (QDQ form) this transformer runs.</summary>
    public byte[] QuantizedModel { get; }

    /// <summary>Every node of the prepared float graph: its precision when quantized, the reason when it stayed float.</summary>
    public IReadOnlyList<QuantizedNodeInfo> Nodes { get; }

    /// <summary>Nodes that stayed float, with the reason.</summary>
    public IReadOnlyList<QuantizedNodeInfo> FloatNodes => Nodes.Where(n => n.Precision is null).ToList();

    /// <summary>The execution provider that runs the model (CPU after a fall-back).</summary>
    public OnnxExecutionProvider ExecutionProvider => _scoring.ExecutionProvider;

    /// <summary>The execution provider requested.</summary>
    public OnnxExecutionProvider RequestedExecutionProvider => Settings.ExecutionProvider;

    /// <summary>Rows per ONNX Runtime call.</summary>
    public int BatchSize => Settings.BatchSize;

    /// <summary>Threads ONNX Runtime uses inside one operator (0: its own choice).</summary>
    public int IntraOpNumThreads => Settings.IntraOpNumThreads;

    /// <summary>The columns this transformer adds.</summary>
    public IReadOnlyList<string> OutputColumnNames => _scoring.OutputColumnNames;

    /// <summary>The columns it reads.</summary>
    public IReadOnlyList<string> InputColumnNames => _scoring.InputColumnNames;

    bool ITransformer.IsRowToRowMapper => false;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => _scoring.GetOutputSchema(inputSchema);

    /// <summary>A lazy view: the quantized model runs when a cursor reads an output column.</summary>
    public IDataView Transform(IDataView input) => _scoring.Transform(input);

    IRowToRowMapper ITransformer.GetRowToRowMapper(DataViewSchema inputSchema)
        => throw new NotSupportedException("QuantizedModelTransformer scores batches of rows; use Transform.");

    /// <summary>Writes the quantized model as a standard ONNX file (atomically: a temporary file, then a rename).</summary>
    public void SaveAsOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        OnnxModel.Parse(QuantizedModel, sourceName: path).Save(path);
    }

    /// <summary>
    /// Saves as an ML.NET OnnxTransformer over the quantized bytes (what <c>mlContext.Model.Load</c> restores), plus
    /// this transformer's settings and model as extra entries for <c>mlContext.Quantization.LoadModel</c>.
    /// </summary>
    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        var inner = CreateOnnxTransformer();
        ((ICanSaveModel)inner).Save(ctx);
        ModelSaveEntries.Write(ctx, SettingsEntry, JsonSerializer.SerializeToUtf8Bytes(new SavedState(Settings, Nodes), SavedState.JsonOptions));
        ModelSaveEntries.Write(ctx, ModelEntry, QuantizedModel);
    }

    /// <summary>ML.NET's own OnnxTransformer over the same model; graph inputs and outputs renamed to this transformer's columns.</summary>
    private ITransformer CreateOnnxTransformer()
    {
        var model = OnnxModel.Parse(_scoring.ModelBytes);
        var outputs = _scoring.Options.Outputs.Count > 0 ? _scoring.Options.Outputs : model.Graph.Outputs.Select(o => new OnnxColumnBinding(o.Name, o.Name)).ToList();
        var inputs = _scoring.Options.Inputs.Count > 0 ? _scoring.Options.Inputs : model.Graph.RuntimeInputs.Select(i => new OnnxColumnBinding(i.Name, i.Name)).ToList();
        foreach (var b in inputs.Concat(outputs).Where(b => b.ColumnName != b.TensorName))
            model.Graph.RenameTensor(b.TensorName, b.ColumnName);
        var keep = outputs.Select(o => o.ColumnName).ToHashSet();
        for (int i = model.Graph.Proto.Output.Count - 1; i >= 0; i--)
            if (!keep.Contains(model.Graph.Proto.Output[i].Name))
                model.Graph.Proto.Output.RemoveAt(i);
        using var stream = new MemoryStream(model.ToBytes());
        var estimator = Context.Transforms.ApplyOnnxModel(
            outputs.Select(o => o.ColumnName).ToArray(), inputs.Select(i => i.ColumnName).ToArray(), stream,
            Settings.GpuDeviceId, Settings.FallbackToCpu ?? false);
        var schema = new DataViewSchema.Builder();
        foreach (var spec in _scoring.Scorer.Inputs)
            schema.AddColumn(spec.ColumnName, new VectorDataViewType(NumberDataViewType.Single, spec.RowDims));
        return estimator.Fit(new EmptyDataView(schema.ToSchema()));
    }

    /// <summary>Releases the ONNX Runtime session.</summary>
    public void Dispose() => _scoring.Dispose();

    internal sealed record SavedState(QuantizedModelSettings Settings, IReadOnlyList<QuantizedNodeInfo> Nodes)
    {
        internal static readonly JsonSerializerOptions JsonOptions = new()
        {
            WriteIndented = true,
            Converters = { new JsonStringEnumConverter() },
        };
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

/// <summary>The settings a quantized transformer runs with, saved beside it and restored by LoadModel.</summary>
internal sealed record QuantizedModelSettings
{
    public OnnxExecutionProvider ExecutionProvider { get; init; }
    public int? GpuDeviceId { get; init; }
    public bool? FallbackToCpu { get; init; }
    public int IntraOpNumThreads { get; init; }
    public OnnxGraphOptimization GraphOptimization { get; init; } = OnnxGraphOptimization.All;
    public int BatchSize { get; init; } = 64;
    public List<OnnxColumnBinding> Inputs { get; init; } = [];
    public List<OnnxColumnBinding> Outputs { get; init; } = [];
    public Dictionary<string, int[]> InputShapes { get; init; } = [];

    public static QuantizedModelSettings From(PostTrainingOptions o) => new()
    {
        ExecutionProvider = o.ExecutionProvider,
        GpuDeviceId = o.GpuDeviceId,
        FallbackToCpu = o.FallbackToCpu,
        IntraOpNumThreads = o.IntraOpNumThreads,
        GraphOptimization = o.GraphOptimization,
        BatchSize = o.BatchSize,
        Inputs = [.. o.Inputs],
        Outputs = [.. o.Outputs],
        InputShapes = o.InputShapes.ToDictionary(kv => kv.Key, kv => kv.Value),
    };

    public OnnxScoringOptions ToScoringOptions(byte[] model)
    {
        var s = new OnnxScoringOptions
        {
            ModelBytes = model,
            ExecutionProvider = ExecutionProvider,
            GpuDeviceId = GpuDeviceId,
            FallbackToCpu = FallbackToCpu,
            IntraOpNumThreads = IntraOpNumThreads,
            GraphOptimization = GraphOptimization,
            BatchSize = BatchSize,
        };
        foreach (var b in Inputs) s.Inputs.Add(b);
        foreach (var b in Outputs) s.Outputs.Add(b);
        foreach (var kv in InputShapes) s.InputShapes[kv.Key] = kv.Value;
        return s;
    }
}

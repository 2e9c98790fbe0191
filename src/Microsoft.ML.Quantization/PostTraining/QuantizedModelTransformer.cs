using System.Text.Json;
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
    private readonly OnnxScoringTransformer _scoring;

    internal QuantizedModelTransformer(MLContext context, byte[] quantizedModel, ScoringSettings settings, IReadOnlyList<QuantizedNodeInfo> nodes)
    {
        Context = context;
        QuantizedModel = quantizedModel;
        Settings = settings;
        Nodes = nodes;
        _scoring = new OnnxScoringTransformer(context, settings.ToScoringOptions(quantizedModel));
    }

    internal MLContext Context { get; }

    internal ScoringSettings Settings { get; }

    /// <summary>What quantization-aware training did, when this model came from <c>AwareTraining</c> (not saved with the model).</summary>
    public AwareTraining.AwareTrainingReport? AwareTraining { get; internal set; }

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
        => ModelPersistence.SaveOnnx(ctx, Context, _scoring, ModelPersistence.QuantizedEntry,
            JsonSerializer.SerializeToUtf8Bytes(new SavedState(Settings, Nodes), ModelPersistence.JsonOptions));

    /// <summary>Releases the ONNX Runtime session.</summary>
    public void Dispose() => _scoring.Dispose();

    internal sealed record SavedState(ScoringSettings Settings, IReadOnlyList<QuantizedNodeInfo> Nodes);
}

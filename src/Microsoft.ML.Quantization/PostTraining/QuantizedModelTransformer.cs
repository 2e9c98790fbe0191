using System.Text.Json;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.NativeEngine;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// A quantized ONNX model scoring an IDataView in batches, through ONNX Runtime (CPU; CUDA or TensorRT with the GPU
/// package) or QatMl's native INT8 engine (<see cref="PostTrainingOptions.Backend"/>). Made by
/// <see cref="PostTrainingEstimator"/>. Exports a standard QDQ ONNX file (<see cref="SaveAsOnnx"/>), saves with
/// <c>mlContext.Model.Save</c> (the zip loads with <c>mlContext.Model.Load</c> as ML.NET's own OnnxTransformer over the
/// same bytes) and is restored whole, options and backend included, by <c>mlContext.Quantization.LoadModel</c>.
/// <see cref="Dispose"/> while cursors score does not wait: batches already running finish (the session or engine is
/// freed after the last), and any later batch, <see cref="Transform"/> or save throws <see cref="ObjectDisposedException"/>.
/// </summary>
public sealed class QuantizedModelTransformer : ITransformer, IDisposable
{
    private readonly Lazy<OnnxModelScoringTransformer> _onnxRuntime;   // the ORT backend, the fall-back, and what Save writes
    private readonly NativeBatchScorer? _native;
    private int _disposed;

    /// <summary>Runs <paramref name="quantizedModel"/>, serialised once here; with ONNX Runtime it is not parsed again.</summary>
    internal QuantizedModelTransformer(MLContext context, OnnxModel quantizedModel, ScoringSettings settings, IReadOnlyList<QuantizedNodeInfo> nodes)
        : this(context, quantizedModel.ToBytes(), settings, nodes, quantizedModel)
    {
    }

    /// <param name="context">The ML.NET context.</param>
    /// <param name="quantizedModel">The QDQ model's bytes.</param>
    /// <param name="settings">How it runs.</param>
    /// <param name="nodes">What became of each node of the float graph.</param>
    /// <param name="parsed"><paramref name="quantizedModel"/> parsed, when the caller has it (the ONNX Runtime backend uses it as it is).</param>
    internal QuantizedModelTransformer(MLContext context, byte[] quantizedModel, ScoringSettings settings, IReadOnlyList<QuantizedNodeInfo> nodes,
        OnnxModel? parsed = null)
    {
        Context = context;
        QuantizedModel = quantizedModel;
        settings = settings with
        {
            ModelName = settings.ModelName ?? "(quantized model)",
            InputsOption = settings.InputsOption ?? nameof(PostTrainingOptions) + "." + nameof(PostTrainingOptions.Inputs),
        };
        Settings = settings;
        Nodes = nodes;
        // Only the ONNX Runtime backend, created right here, takes the parsed model: a fall-back or a Save after the native
        // engine reads the bytes again rather than keep a second copy of the model alive.
        OnnxModel? parsedForOnnxRuntime = settings.Backend == QuantizedBackend.Native ? null : parsed;
        _onnxRuntime = new Lazy<OnnxModelScoringTransformer>(() =>
        {
            ThrowIfDisposed();
            OnnxModel? model = parsedForOnnxRuntime;
            parsedForOnnxRuntime = null;
            return new OnnxModelScoringTransformer(context, settings.ToScoringOptions(quantizedModel), nameof(QuantizedModelTransformer), model);
        });
        if (settings.Backend == QuantizedBackend.Native)
        {
            ComputeDevice device = settings.NativeDevice ?? (context.GpuDeviceId is int gpu ? ComputeDevice.Cuda(gpu) : ComputeDevice.Cpu);
            NativeInt8Engine? engine = NativeInt8Engine.TryLoad(quantizedModel, settings.ModelName, settings.Inputs, settings.Outputs, settings.InputShapes,
                settings.IntraOpNumThreads, device, message =>
                {
                    using IChannel ch = ((IChannelProvider)context).Start("QatMl.NativeEngine");
                    ch.Warning(MessageSensitivity.None, "{0}", message);
                }, out IReadOnlyList<string> unsupported);
            if (engine is not null)
            {
                try
                {
                    BatchScorerSchema.CheckBatchCapacity(engine.Inputs, engine.Outputs, settings.BatchSize, settings.ModelName);
                }
                catch
                {
                    engine.Dispose();
                    throw;
                }
                _native = new NativeBatchScorer(engine, settings.BatchSize, nameof(QuantizedModelTransformer));
            }
            else
            {
                BackendFallbackReason = "the native INT8 engine cannot run " + string.Join("; ", unsupported);
                if (!settings.AllowBackendFallback)
                    throw new NotSupportedException($"Backend Native: {BackendFallbackReason}. Set AllowBackendFallback = true to run the model with ONNX Runtime instead.");
                using IChannel ch = ((IChannelProvider)context).Start("QatMl.NativeEngine");
                ch.Warning(MessageSensitivity.None, "{0}", $"Backend Native: {BackendFallbackReason}. Running with ONNX Runtime instead.");
            }
        }
        if (_native is null)
            _ = _onnxRuntime.Value;
    }

    internal MLContext Context { get; }

    internal ScoringSettings Settings { get; }

    /// <summary>
    /// What the sensitivity analysis of PostTraining measured and which nodes it left float (null when it did not run);
    /// saved with the model and restored by <c>mlContext.Quantization.LoadModel</c>.
    /// </summary>
    public SensitivityReport? Sensitivity { get; internal set; }

    /// <summary>What quantization-aware training did, when this model came from <c>AwareTraining</c> (not saved with the model).</summary>
    public AwareTrainingReport? AwareTraining { get; internal set; }

    private IBatchScorer Scorer => _native ?? (IBatchScorer)_onnxRuntime.Value.Scorer;

    /// <summary>The batch scorer of the backend that runs (benchmarks time it without the IDataView cursor).</summary>
    internal IBatchScorer BatchScorer => Scorer;

    /// <summary>The quantized ONNX model (QDQ form) this transformer runs.</summary>
    public byte[] QuantizedModel { get; }

    /// <summary>Every node of the prepared float graph: its precision when quantized, the reason when it stayed float.</summary>
    public IReadOnlyList<QuantizedNodeInfo> Nodes { get; }

    /// <summary>Nodes that stayed float, with the reason.</summary>
    public IReadOnlyList<QuantizedNodeInfo> FloatNodes => Nodes.Where(n => n.Precision is null).ToList();

    /// <summary>What runs the model: the requested backend, or ONNX Runtime after a fall-back.</summary>
    public QuantizedBackend Backend => _native is null ? QuantizedBackend.OnnxRuntime : QuantizedBackend.Native;

    /// <summary>The backend requested.</summary>
    public QuantizedBackend RequestedBackend => Settings.Backend;

    /// <summary>Where the native engine runs (null with ONNX Runtime): the CPU, or the CUDA GPU asked for when it is available.</summary>
    public ComputeDevice? NativeDevice => _native?.Engine.Device;

    /// <summary>Whether a Native backend may fall back to ONNX Runtime.</summary>
    public bool AllowBackendFallback => Settings.AllowBackendFallback;

    /// <summary>Why the native engine did not take the model (the nodes it cannot run), or null.</summary>
    public string? BackendFallbackReason { get; }

    /// <summary>The execution provider that runs the model (CPU after a fall-back, and for the native engine).</summary>
    public OnnxExecutionProvider ExecutionProvider => _native is null ? _onnxRuntime.Value.ExecutionProvider : OnnxExecutionProvider.Cpu;

    /// <summary>The execution provider requested.</summary>
    public OnnxExecutionProvider RequestedExecutionProvider => Settings.ExecutionProvider;

    /// <summary>Rows per ONNX Runtime or native engine call.</summary>
    public int BatchSize => Settings.BatchSize;

    /// <summary>Threads ONNX Runtime uses inside one operator, or the native engine per batch (0: one per core).</summary>
    public int IntraOpNumThreads => Settings.IntraOpNumThreads;

    /// <summary>Native memory the loaded native engine holds for weights (null with ONNX Runtime).</summary>
    public long? NativeWeightBytes => _native?.Engine.WeightBytes;

    /// <summary>The columns this transformer adds.</summary>
    public IReadOnlyList<string> OutputColumnNames => Scorer.Outputs.Select(o => o.ColumnName).ToArray();

    /// <summary>The columns it reads.</summary>
    public IReadOnlyList<string> InputColumnNames => Scorer.Inputs.Select(i => i.ColumnName).ToArray();

    internal NativeInt8Engine? NativeEngine => _native?.Engine;

    bool ITransformer.IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        if (_native is null)
            return _onnxRuntime.Value.GetOutputSchema(inputSchema);
        ArgumentNullException.ThrowIfNull(inputSchema);
        BatchScorerSchema.ValidateInputSchema(_native.Inputs, inputSchema, nameof(inputSchema), Settings.InputsOption!);
        return BatchScorerSchema.OutputSchema(inputSchema, _native.Outputs);
    }

    /// <summary>A lazy view: the quantized model runs when a cursor reads an output column.</summary>
    public IDataView Transform(IDataView input)
    {
        ThrowIfDisposed();
        if (_native is null)
            return _onnxRuntime.Value.Transform(input);
        ArgumentNullException.ThrowIfNull(input);
        BatchScorerSchema.ValidateInputSchema(_native.Inputs, input.Schema, nameof(input), Settings.InputsOption!);
        return new BatchScoringDataView(input, _native);
    }

    /// <summary>
    /// One row per run of the backend that runs the model (one ONNX Runtime call, or one native engine call), sharing its
    /// session or engine (PredictionEngine); the schema is checked here, not per row.
    /// </summary>
    IRowToRowMapper ITransformer.GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ThrowIfDisposed();
        return new ScoringRowMapper(Scorer, inputSchema, GetOutputSchema(inputSchema));
    }

    /// <summary>Writes the quantized model as a standard ONNX file (atomically: a temporary file, then a rename).</summary>
    public void SaveAsOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        OnnxModel.Parse(QuantizedModel, sourceName: path).Save(path);
    }

    /// <summary>
    /// Saves as an ML.NET OnnxTransformer over the quantized bytes (what <c>mlContext.Model.Load</c> restores), plus
    /// this transformer's settings (backend included) and model as extra entries for <c>mlContext.Quantization.LoadModel</c>.
    /// </summary>
    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ThrowIfDisposed();
        ModelSaving.SaveOnnx(ctx, Context, _onnxRuntime.Value, ModelSaving.QuantizedEntry,
            JsonSerializer.SerializeToUtf8Bytes(new SavedState(Settings, Nodes) { Sensitivity = Sensitivity }, ModelSaving.JsonOptions));
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0)
            throw SharedResources.Disposed(nameof(QuantizedModelTransformer));
    }

    /// <summary>Releases the native engine and the ONNX Runtime session (after the batches running on them, if any).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _native?.Dispose();
        if (_onnxRuntime.IsValueCreated)
            _onnxRuntime.Value.Dispose();
    }

    internal sealed record SavedState(ScoringSettings Settings, IReadOnlyList<QuantizedNodeInfo> Nodes)
    {
        /// <summary>The sensitivity analysis's report (absent in zips of models made without it).</summary>
        public SensitivityReport? Sensitivity { get; init; }
    }
}

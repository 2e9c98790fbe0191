namespace Microsoft.ML.Quantization.Inference;

/// <summary>How a QatMl transformer runs its ONNX model; saved beside it and restored by <c>LoadModel</c>.</summary>
internal sealed record ScoringSettings
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
    public QuantizedBackend Backend { get; init; }
    public bool AllowBackendFallback { get; init; } = true;
    public ComputeDevice? NativeDevice { get; init; }

    /// <summary>What messages call the model (not saved: a restored model is named by its zip).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? ModelName { get; init; }

    /// <summary>The option a missing input column's error names (not saved).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? InputsOption { get; init; }

    /// <summary>The session settings and bindings of <paramref name="o"/>, with <paramref name="outputs"/>.</summary>
    public static ScoringSettings From(OnnxBindingOptions o, IEnumerable<OnnxColumnBinding> outputs) => new()
    {
        ExecutionProvider = o.ExecutionProvider,
        GpuDeviceId = o.GpuDeviceId,
        FallbackToCpu = o.FallbackToCpu,
        IntraOpNumThreads = o.IntraOpNumThreads,
        GraphOptimization = o.GraphOptimization,
        BatchSize = o.BatchSize,
        Inputs = [.. o.Inputs],
        Outputs = [.. outputs],
        InputShapes = o.InputShapes.ToDictionary(kv => kv.Key, kv => kv.Value),
        InputsOption = o.InputsOptionName,
    };

    public static ScoringSettings From(OnnxModelScoringOptions o) => From(o, o.Outputs);

    /// <summary>
    /// Checks settings restored from a model zip exactly as the scoring options they came from are checked at construction
    /// (same messages): nulls a hand-edited JSON may hold, batch size, threads, enums, declared shapes. A quantized model's
    /// settings are checked by <c>PostTrainingOptions.ValidateRestored</c>.
    /// </summary>
    public void Validate()
    {
        ValidateBindings();
        ToScoringOptions([]).Validate();
    }

    /// <summary>Throws when a hand-edited JSON left a binding list, a binding or its names null.</summary>
    public void ValidateBindings()
    {
        if (Inputs is null || Outputs is null || InputShapes is null)
            throw new ArgumentException($"{(Inputs is null ? nameof(Inputs) : Outputs is null ? nameof(Outputs) : nameof(InputShapes))} is null.");
        if (Inputs.Concat(Outputs).Any(b => b?.ColumnName is null || b.TensorName is null))
            throw new ArgumentException("A column binding (or its column or tensor name) is null.");
    }

    public OnnxModelScoringOptions ToScoringOptions(byte[] model)
    {
        var s = new OnnxModelScoringOptions
        {
            ModelBytes = model,
            ExecutionProvider = ExecutionProvider,
            GpuDeviceId = GpuDeviceId,
            FallbackToCpu = FallbackToCpu,
            IntraOpNumThreads = IntraOpNumThreads,
            GraphOptimization = GraphOptimization,
            BatchSize = BatchSize,
            ModelSource = ModelName,
            InputsOption = InputsOption,
        };
        foreach (var b in Inputs) s.Inputs.Add(b);
        foreach (var b in Outputs) s.Outputs.Add(b);
        foreach (var kv in InputShapes) s.InputShapes[kv.Key] = kv.Value;
        return s;
    }
}

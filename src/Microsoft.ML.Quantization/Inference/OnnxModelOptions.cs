namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// The ONNX model a QatMl stage reads, a file or its bytes, beside the session settings of <see cref="OnnxRuntimeOptions"/>:
/// the base of every stage's options (AwareTraining's directly; Calibrate's, PostTraining's and ScoreOnnxModel's through
/// <see cref="OnnxBindingOptions"/>, which adds the column bindings).
/// </summary>
public abstract class OnnxModelOptions : OnnxRuntimeOptions
{
    private protected OnnxModelOptions() { }

    /// <summary>Path of the ONNX model (a float model for Calibrate, PostTraining and AwareTraining). Set this or <see cref="ModelBytes"/>.</summary>
    public string? ModelPath { get; set; }

    /// <summary>The ONNX model itself. Set this or <see cref="ModelPath"/>.</summary>
    public byte[]? ModelBytes { get; set; }

    /// <summary>What messages call the model: <see cref="ModelPath"/>, the file its bytes came from, or "(model bytes)".</summary>
    internal string ModelName() => ModelPath ?? ModelSource ?? "(model bytes)";

    internal override void Validate()
    {
        base.Validate();
        if (ModelPath is null && ModelBytes is null)
            throw new ArgumentException($"Set {GetType().Name}.ModelPath or ModelBytes.");
    }
}

/// <summary>
/// <see cref="OnnxModelOptions"/> plus how the model's inputs are bound to columns and shaped per row: the base of the
/// options of Calibrate, PostTraining and ScoreOnnxModel.
/// </summary>
public abstract class OnnxBindingOptions : OnnxModelOptions
{
    private protected OnnxBindingOptions() { }

    /// <summary>
    /// Graph inputs and the columns that feed them. Empty (default): every graph input is fed by the column of the same
    /// name (a vector of Single, Int64, Int32 or Boolean whose size is the input's per-row element count).
    /// </summary>
    public IList<OnnxColumnBinding> Inputs { get; } = new List<OnnxColumnBinding>();

    /// <summary>
    /// Per-row shapes (without the batch dimension) for inputs whose graph shape has symbolic dimensions other than the
    /// batch, keyed by tensor name; a shape of the input's full rank declares a whole tensor per row (BatchSize 1).
    /// Variable-size vector columns need one.
    /// </summary>
    public IDictionary<string, int[]> InputShapes { get; } = new Dictionary<string, int[]>();

    internal override void Validate()
    {
        base.Validate();
        ValidateInputShapes(InputShapes);
    }

    /// <summary>Copies the session settings (<see cref="OnnxRuntimeOptions.CopyTo"/>), the input bindings and the declared shapes.</summary>
    internal void CopyBindingsTo(OnnxBindingOptions other)
    {
        CopyTo(other);
        foreach (OnnxColumnBinding b in Inputs) other.Inputs.Add(b);
        foreach (var kv in InputShapes) other.InputShapes[kv.Key] = kv.Value;
    }
}

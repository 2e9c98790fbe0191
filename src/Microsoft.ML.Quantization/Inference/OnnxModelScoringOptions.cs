namespace Microsoft.ML.Quantization.Inference;

/// <summary>Binds an ML.NET column to an ONNX graph tensor.</summary>
/// <param name="ColumnName">The IDataView column.</param>
/// <param name="TensorName">The ONNX tensor (graph input, graph output, or any intermediate tensor).</param>
public sealed record OnnxColumnBinding(string ColumnName, string TensorName);

/// <summary>Options of <see cref="OnnxModelScoringEstimator"/>: batched float inference of an ONNX model over an IDataView.</summary>
public sealed class OnnxModelScoringOptions : OnnxRuntimeOptions
{
    /// <summary>Path of the ONNX model. Set this or <see cref="ModelBytes"/>.</summary>
    public string? ModelPath { get; set; }

    /// <summary>The ONNX model itself. Set this or <see cref="ModelPath"/>.</summary>
    public byte[]? ModelBytes { get; set; }

    /// <summary>
    /// Graph inputs and the columns that feed them. Empty (default): every graph input is fed by the
    /// column of the same name. Columns are vectors of Single whose size is the input's per-row element count.
    /// </summary>
    public IList<OnnxColumnBinding> Inputs { get; } = new List<OnnxColumnBinding>();

    /// <summary>
    /// Tensors exposed as output columns (vectors of Single). Empty (default): every graph output, as a
    /// column of the same name. Intermediate tensors may be listed too: the graph is extended to output them.
    /// </summary>
    public IList<OnnxColumnBinding> Outputs { get; } = new List<OnnxColumnBinding>();

    /// <summary>
    /// Per-row shapes (without the batch dimension) for inputs whose graph shape has symbolic
    /// dimensions other than the batch, keyed by tensor name. Variable-size vector columns need one.
    /// </summary>
    public IDictionary<string, int[]> InputShapes { get; } = new Dictionary<string, int[]>();

    internal new void Validate()
    {
        base.Validate();
        ValidateInputShapes(InputShapes);
    }
}

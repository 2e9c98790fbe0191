namespace Microsoft.ML.Quantization.Inference;

/// <summary>Binds an ML.NET column to an ONNX graph tensor.</summary>
/// <param name="ColumnName">The IDataView column.</param>
/// <param name="TensorName">The ONNX tensor (graph input, graph output, or any intermediate tensor).</param>
public sealed record OnnxColumnBinding(string ColumnName, string TensorName)
{
    /// <summary>
    /// The bindings a transformer uses: <paramref name="given"/>, or when none are given, each of <paramref name="tensors"/>
    /// (the graph's inputs or outputs) bound to the column of the same name. Every backend resolves defaults through this.
    /// </summary>
    internal static IList<OnnxColumnBinding> OrSameNames(IList<OnnxColumnBinding> given, IEnumerable<string> tensors)
        => given.Count > 0 ? given : tensors.Select(t => new OnnxColumnBinding(t, t)).ToList();
}

/// <summary>Options of <see cref="OnnxModelScoringEstimator"/>: batched float inference of an ONNX model over an IDataView.</summary>
public sealed class OnnxModelScoringOptions : OnnxBindingOptions
{
    /// <summary>
    /// Tensors exposed as output columns (vectors of Single). Empty (default): every graph output, as a
    /// column of the same name. Intermediate tensors may be listed too: the graph is extended to output them.
    /// </summary>
    public IList<OnnxColumnBinding> Outputs { get; } = new List<OnnxColumnBinding>();
}

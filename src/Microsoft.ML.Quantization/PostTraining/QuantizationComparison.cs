namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>Options of <c>mlContext.Quantization.Compare</c>.</summary>
public sealed class ComparisonOptions
{
    /// <summary>The graph output compared (the scores/logits). Null (default): the model's first output.</summary>
    public string? OutputTensorName { get; set; }

    /// <summary>
    /// A label column (UInt32, Int32, Int64, Single or a key type) for accuracy; classes are the output's argmax.
    /// Null (default): no accuracy, the budget applies to top-1 disagreement.
    /// </summary>
    public string? LabelColumnName { get; set; }

    /// <summary>Key-typed labels count from 1 in ML.NET; set to 1 to compare argmax with label - 1. Default 0.</summary>
    public int LabelOffset { get; set; }

    /// <summary>
    /// The allowed loss, in percentage points: of accuracy when a label is given, else of top-1 agreement
    /// (100 - agreement%). Null (default): no verdict.
    /// </summary>
    public double? MaxAccuracyDrop { get; set; }

    /// <summary>Compute the SQNR of every quantized activation (runs both graphs with their intermediate tensors as outputs). Default true.</summary>
    public bool PerLayer { get; set; } = true;

    /// <summary>Time both models (best of <see cref="LatencyRepeats"/> passes over the data). Default true.</summary>
    public bool MeasureLatency { get; set; } = true;

    /// <summary>Timed passes per model. Default 3.</summary>
    public int LatencyRepeats { get; set; } = 3;

    /// <summary>Receives progress while rows are compared (every <c>BatchSize</c> rows of the quantized model, and at the end). Default null.</summary>
    public IProgress<ComparisonProgress>? Progress { get; set; }
}

/// <summary>Comparison progress.</summary>
/// <param name="RowsCompared">Rows run through both models so far.</param>
/// <param name="RowsPlanned">Rows in the data, when the data knows its row count.</param>
/// <param name="Elapsed">Time since the comparison started.</param>
public readonly record struct ComparisonProgress(long RowsCompared, long? RowsPlanned, TimeSpan Elapsed);

/// <summary>Error of one quantized activation: signal-to-quantization-noise ratio of its quantized value against the float model's.</summary>
/// <param name="TensorName">The float graph's tensor.</param>
/// <param name="SqnrDb">10 log10(Σx² / Σ(x - x̂)²) over every element of every row, in dB (higher is better).</param>
public sealed record LayerError(string TensorName, double SqnrDb);

/// <summary>Float vs quantized on the same rows: what <c>mlContext.Quantization.Compare</c> reports.</summary>
public sealed class QuantizationComparison
{
    internal QuantizationComparison() { }

    /// <summary>Rows compared.</summary>
    public long Rows { get; internal init; }

    /// <summary>Float model accuracy (0..1) when a label column was given.</summary>
    public double? FloatAccuracy { get; internal init; }

    /// <summary>Quantized model accuracy (0..1) when a label column was given.</summary>
    public double? QuantizedAccuracy { get; internal init; }

    /// <summary>Float minus quantized accuracy, in percentage points (negative: the quantized model is better).</summary>
    public double? AccuracyDrop => FloatAccuracy is { } f && QuantizedAccuracy is { } q ? (f - q) * 100 : null;

    /// <summary>Share of rows whose argmax is the same in both models (0..1).</summary>
    public double Top1Agreement { get; internal init; }

    /// <summary>Mean over rows of the cosine similarity of the two outputs.</summary>
    public double MeanCosineSimilarity { get; internal init; }

    /// <summary>SQNR of the compared output over all rows, in dB.</summary>
    public double OutputSqnrDb { get; internal init; }

    /// <summary>Per quantized activation, worst (lowest SQNR) first; empty when not computed.</summary>
    public IReadOnlyList<LayerError> Layers { get; internal init; } = [];

    /// <summary>Size of the float ONNX model in bytes (as given).</summary>
    public long FloatModelBytes { get; internal init; }

    /// <summary>Size of the quantized ONNX model in bytes.</summary>
    public long QuantizedModelBytes { get; internal init; }

    /// <summary>Best time for one pass of the float model over the rows (null when not measured).</summary>
    public TimeSpan? FloatTime { get; internal init; }

    /// <summary>Best time for one pass of the quantized model over the rows (null when not measured).</summary>
    public TimeSpan? QuantizedTime { get; internal init; }

    /// <summary>Float time over quantized time.</summary>
    public double? Speedup => FloatTime is { } f && QuantizedTime is { } q && q > TimeSpan.Zero ? f / q : null;

    /// <summary>The budget checked, in percentage points (null when none was given).</summary>
    public double? MaxAccuracyDrop { get; internal init; }

    /// <summary>
    /// Whether the quantized model is within <see cref="MaxAccuracyDrop"/>: the accuracy drop when a label was given,
    /// else 100 - top-1 agreement%. Null when no budget was given.
    /// </summary>
    public bool? WithinBudget => MaxAccuracyDrop is { } budget ? (AccuracyDrop ?? (1 - Top1Agreement) * 100) <= budget : null;

    /// <summary>A one-screen summary.</summary>
    public override string ToString()
    {
        var lines = new List<string> { $"rows {Rows}" };
        if (FloatAccuracy is { } fa && QuantizedAccuracy is { } qa)
            lines.Add($"accuracy float {fa:P2}, quantized {qa:P2}, drop {AccuracyDrop:F2} points");
        lines.Add($"top-1 agreement {Top1Agreement:P2}, mean cosine {MeanCosineSimilarity:F5}, output SQNR {OutputSqnrDb:F1} dB");
        lines.Add($"size float {FloatModelBytes:N0} B, quantized {QuantizedModelBytes:N0} B ({(double)QuantizedModelBytes / FloatModelBytes:F3}x)");
        if (Speedup is { } s)
            lines.Add($"time float {FloatTime!.Value.TotalMilliseconds:F1} ms, quantized {QuantizedTime!.Value.TotalMilliseconds:F1} ms ({s:F2}x)");
        foreach (var l in Layers.Take(5))
            lines.Add($"  SQNR {l.SqnrDb,6:F1} dB  {l.TensorName}");
        if (WithinBudget is { } ok)
            lines.Add($"within the {MaxAccuracyDrop:F2}-point budget: {(ok ? "yes" : "no")}");
        return string.Join(Environment.NewLine, lines);
    }
}

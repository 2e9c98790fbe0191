namespace QatMl.Tool.Report;

/// <summary>One trial as the report shows it.</summary>
internal sealed record TrialSummary(string Name, string Why, string Precision, string Calibration, int FloatNodeCount, long Bytes,
    double Quality, double Loss, double Agreement, double Cosine, double OutputSqnrDb, double MillisecondsPerRow, string Backend, bool? WithinBudget, bool Chosen);

/// <summary>A latency figure of one backend (null milliseconds: not measured, with the reason).</summary>
internal sealed record BackendLatency(string Backend, double? MillisecondsPerRow, double? RowsPerSecond, int Rows, string? Note);

/// <summary>Values of one activation seen on the rows, binned, and the clipping range calibration chose.</summary>
internal sealed record TensorHistogram(string Tensor, double SqnrDb, double[] BinEdges, long[] Counts, double ClipMin, double ClipMax, double DataMin, double DataMax);

/// <summary>Float and quantized confusion matrices (rows: true class, columns: predicted).</summary>
internal sealed record ConfusionPair(IReadOnlyList<string> Classes, int[,] Float, int[,] Quantized);

/// <summary>A node left in float and why.</summary>
internal sealed record FloatNode(string Name, string OpType, string Reason);

/// <summary>Everything report.html shows; filled by the quantize command.</summary>
internal sealed class ReportModel
{
    public required string ModelName { get; init; }
    public required string ModelPath { get; init; }
    public required long FloatBytes { get; init; }
    public required string DataDescription { get; init; }
    public required string Preprocessing { get; init; }
    public required int CalibrationRows { get; init; }
    public required int EvaluationRows { get; init; }
    public required bool HasLabels { get; init; }
    public string? LabelNote { get; init; }
    public required double? Budget { get; init; }
    public required string Strategy { get; init; }
    public required string ChoiceReason { get; init; }
    public required string RequestedBackend { get; init; }
    public required string Backend { get; init; }
    public string? BackendNote { get; init; }
    public required string Cpu { get; init; }
    public double? FloatAccuracy { get; init; }
    public required string MetricName { get; init; }
    public required IReadOnlyList<TrialSummary> Trials { get; init; }
    public required IReadOnlyList<(string Tensor, double SqnrDb)> Layers { get; init; }
    public required IReadOnlyList<BackendLatency> Latencies { get; init; }
    public required IReadOnlyList<TensorHistogram> Histograms { get; init; }
    public ConfusionPair? Confusion { get; init; }
    public required IReadOnlyList<FloatNode> FloatNodes { get; init; }
    public required int QuantizedNodeCount { get; init; }
    public required IReadOnlyList<(string File, string What)> Files { get; init; }
    public required string ToolVersion { get; init; }
    public required DateTimeOffset Created { get; init; }

    public TrialSummary Chosen => Trials.Single(t => t.Chosen);
}

namespace Microsoft.ML.Quantization.PostTraining;

// What AwareTraining reports lives beside the transformer that carries it (QuantizedModelTransformer.AwareTraining), so the
// PostTraining layer does not depend on the AwareTraining layer above it.

/// <summary>One finished epoch.</summary>
/// <param name="Epoch">0-based epoch.</param>
/// <param name="MeanLoss">Mean training loss.</param>
/// <param name="ValidationAccuracy">Accuracy of the (fake-quantized) model on the validation rows, if any.</param>
/// <param name="RowsPerSecond">Training throughput: the epoch's rows over its training time (a resumed epoch adds the checkpoint's time to this run's).</param>
public sealed record EpochReport(int Epoch, double MeanLoss, double? ValidationAccuracy, double RowsPerSecond);

/// <summary>What <c>AwareTraining</c> did: which path it took and why, and how training went.</summary>
public sealed class AwareTrainingReport
{
    internal AwareTrainingReport() { }

    /// <summary>"PostTraining" (PTQ met the budget), "AwareTraining", or "FloatFineTune" (<c>AwareTrainingOptions.FloatFineTune</c>).</summary>
    public string Path { get; internal init; } = "AwareTraining";

    /// <summary>Why that path.</summary>
    public string Reason { get; internal init; } = "";

    /// <summary>Validation accuracy of the float model, when PTQ was tried first.</summary>
    public double? FloatAccuracy { get; internal init; }

    /// <summary>Validation accuracy of the PTQ model, when PTQ was tried first.</summary>
    public double? PostTrainingAccuracy { get; internal init; }

    /// <summary>Validation accuracy of the fake-quantized training model after the last epoch (null for a float fine-tune).</summary>
    public double? FakeQuantizedAccuracy { get; internal init; }

    /// <summary>Validation accuracy of the deployed model (the transformer's: QDQ, or float after a float fine-tune).</summary>
    public double? DeployedAccuracy { get; internal init; }

    /// <summary>Per epoch.</summary>
    public IReadOnlyList<EpochReport> Epochs { get; internal init; } = [];
}

using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Runtime;
using Microsoft.ML.Quantization.Internal;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// What a training run starts from, prepared without libtorch: the trainable float graph (and its bytes), the graph
/// as deployed (BN folded) with its calibrated ranges, and the training, validation and calibration rows.
/// </summary>
internal sealed record TrainingSetup(string Name, OnnxModel FloatGraph, byte[] FloatBytes, OnnxModel Deployed, CalibrationTable InitialRanges,
    TrainingRows Train, TrainingRows Validation, TrainingRows CalibrationRows);

/// <summary>
/// Quantization-aware fine-tuning, the orchestration: prepare the graph and rows, calibrate the deployed graph, try
/// PTQ first when there is an accuracy budget, and otherwise train (<see cref="AwareTrainingRun"/>: the float graph
/// as a TorchSharp module with fake quantization at exactly the tensors the QDQ writer quantizes, trained with Adam,
/// exported through the same writer). Everything up to the training itself runs without libtorch.
/// </summary>
internal static class AwareTrainer
{
    public static (QuantizedModelTransformer Model, AwareTrainingReport Report) Fit(MLContext context, AwareTrainingOptions options, IDataView data)
    {
        options.Validate();
        TrainingSetup setup = Prepare(context, options, data);
        // mlContext.Log messages and ML.NET's progress channel (epochs, steps, loss, validation accuracy), besides options.Progress.
        using var progress = new OperationProgress(context, "QatMl.AwareTraining", ["epochs", "steps"], ["Loss", "Validation Accuracy"]);
        IChannel channel = progress.Channel;
        if (options.FloatFineTune)
            return AwareTrainingRun.Train(context, options, setup, progress, "A float fine-tune was requested (FloatFineTune): the same training without quantization, the baseline for QAT.", null, null);
        if (options.MaxAccuracyDrop is not double budget)
            return AwareTrainingRun.Train(context, options, setup, progress, "Quantization-aware training was requested.", null, null);

        if (setup.Validation.Count == 0)
            throw new ArgumentException("MaxAccuracyDrop needs validation rows: set ValidationData or ValidationFraction.");
        double floatAccuracy = setup.Validation.Accuracy(setup.FloatBytes);
        var ptqOptions = options.ToPostTraining(setup.FloatBytes, setup.FloatGraph.Graph.RuntimeInputs[0].Name);
        QdqResult ptq = QdqWriter.Quantize(setup.Deployed.Clone(), setup.InitialRanges, ptqOptions);
        byte[] ptqModel = ptq.Model.ToBytes();
        double ptqAccuracy = setup.Validation.Accuracy(ptqModel);
        double drop = (floatAccuracy - ptqAccuracy) * 100;
        channel.Info(MessageSensitivity.None, "{0}", $"PTQ first: float {floatAccuracy:P2}, PTQ {ptqAccuracy:P2} on {setup.Validation.Count} validation rows (drop {drop:F2} points, budget {budget:F2}).");
        if (drop > budget)
            return AwareTrainingRun.Train(context, options, setup, progress,
                $"PTQ lost {drop:F2} points of validation accuracy, more than the {budget:F2}-point budget.", floatAccuracy, ptqAccuracy);

        var report = new AwareTrainingReport
        {
            Path = "PostTraining",
            Reason = $"PTQ lost {drop:F2} points of validation accuracy, within the {budget:F2}-point budget, so no training was needed.",
            FloatAccuracy = floatAccuracy,
            PostTrainingAccuracy = ptqAccuracy,
            DeployedAccuracy = ptqAccuracy,
        };
        return (new QuantizedModelTransformer(context, ptqModel, ptqOptions.ToScoringSettings(), ptq.Nodes, ptq.Model) { AwareTraining = report }, report);
    }

    /// <summary>The graph (checked before any row is read), the rows, and the initial ranges: the deployed graph calibrated on the calibration rows.</summary>
    private static TrainingSetup Prepare(MLContext context, AwareTrainingOptions options, IDataView data)
    {
        string name = options.ModelName();
        OnnxModel floatGraph = TrainableGraph.Load(options);
        long[] rowDims = TrainableGraph.RowDims(floatGraph);
        string featureColumn = options.FeatureColumnName ?? floatGraph.Graph.RuntimeInputs[0].Name;

        TrainingRows all = TrainingRows.Load(data, featureColumn, options.LabelColumnName, rowDims, nameof(data));
        if (all.Count == 0)
            throw new InvalidOperationException("The training data is empty: the input IDataView returned no rows.");
        var (train, validation) = options.ValidationData is { } v
            ? (all, TrainingRows.Load(v, featureColumn, options.LabelColumnName, rowDims, nameof(options.ValidationData)))
            : all.SplitAt(all.Count - (int)(all.Count * options.ValidationFraction));
        TrainingRows calibration = options.CalibrationData is { } c
            ? TrainingRows.Load(c, featureColumn, options.LabelColumnName, rowDims, nameof(options.CalibrationData))
            : train;

        // Initial ranges: calibrate the graph as it will be deployed (BN folded).
        byte[] floatBytes = floatGraph.ToBytes();
        OnnxModel deployed = PostTrainingEstimator.Prepare(options.ToPostTraining(floatBytes, floatGraph.Graph.RuntimeInputs[0].Name), name, floatGraph.Clone());
        CalibrationTable initial = Calibrate(context, options, deployed, calibration, options.CalibrationSampleCount);
        return new TrainingSetup(name, floatGraph, floatBytes, deployed, initial, train, validation, calibration);
    }

    /// <summary>Calibrates a prepared (deployed) graph on the first <paramref name="sampleCount"/> rows.</summary>
    internal static CalibrationTable Calibrate(MLContext context, AwareTrainingOptions options, OnnxModel deployGraph, TrainingRows rows, int sampleCount)
    {
        int n = Math.Min(rows.Count, sampleCount);
        // The options name the float model the graph came from (for messages); the calibrator runs deployGraph itself.
        var calibration = new CalibrationEstimatorOptions
        {
            ModelPath = options.ModelPath, ModelBytes = options.ModelBytes, PrepareGraph = false, SampleCount = n, IntraOpNumThreads = options.IntraOpNumThreads,
            ModelSource = options.ModelName(),
        };
        string inputName = deployGraph.Graph.RuntimeInputs[0].Name;
        return ModelCalibrator.Run(context, calibration, rows.ToDataView(context, inputName, n), deployGraph).Table;
    }
}

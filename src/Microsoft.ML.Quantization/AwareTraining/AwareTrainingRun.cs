using System.Runtime.CompilerServices;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Quantization.Internal;
using TorchSharp;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// The libtorch part of <c>AwareTraining</c>: the module with its simulated quantization (none for a float
/// fine-tune), the optional teacher, the training loop with its checkpoint, and the export. Only reached when
/// training runs: the PTQ-first path never JIT-compiles this class, so it needs no libtorch.
/// </summary>
internal static class AwareTrainingRun
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static (QuantizedModelTransformer Model, AwareTrainingReport Report) Train(MLContext context, AwareTrainingOptions options, TrainingSetup setup, OperationProgress progress, string reason, double? floatAccuracy, double? ptqAccuracy)
    {
        TorchSharpRuntime.EnsureLoaded();
        torch.manual_seed(options.Seed).Dispose();   // libtorch draws nothing random here today (Dropout is removed); seeded all the same
        if (options.IntraOpNumThreads > 0)
            torch.set_num_threads(options.IntraOpNumThreads);   // libtorch's pool is process-wide
        using var module = new OnnxTorchModule(setup.FloatGraph.Clone());
        using var quantization = options.FloatFineTune ? SimulatedQuantization.None()
            : SimulatedQuantization.Attach(module, setup.FloatGraph, setup.Deployed, setup.InitialRanges, options);
        using var teacher = options.DistillationWeight > 0 ? new OnnxTorchModule(setup.FloatGraph.Clone()) : null;
        teacher?.eval();

        var checkpoint = options.CheckpointPath is { } path
            ? new TrainingCheckpoint(path, TrainingFingerprint.Of(options, setup.FloatBytes, setup.Train, setup.CalibrationRows))
            : null;
        var loop = new TrainingLoop(options, module, quantization, setup.Train, setup.Validation, progress);
        List<EpochReport> epochs = loop.Run(teacher, checkpoint);
        checkpoint?.Delete();

        // The training model as deployed: BN folded, ranges frozen, every quantizer at its own width.
        module.FoldBatchNorm = true;
        quantization.SetDeployed();
        bool validating = setup.Validation.Count > 0;
        double? trainedAccuracy = validating ? TrainingLoop.Accuracy(module, setup.Validation) : null;
        QuantizedModelTransformer result = TrainedModelExport.Export(context, options, setup, module, quantization);
        double? deployed = validating ? setup.Validation.Accuracy(result.QuantizedModel) : null;
        var report = new AwareTrainingReport
        {
            Path = options.FloatFineTune ? "FloatFineTune" : "AwareTraining",
            Reason = reason,
            FloatAccuracy = floatAccuracy,
            PostTrainingAccuracy = ptqAccuracy,
            FakeQuantizedAccuracy = options.FloatFineTune ? null : trainedAccuracy,
            DeployedAccuracy = deployed,
            Epochs = epochs,
        };
        if (trainedAccuracy is { } trainedValue && deployed is { } deployedValue)
            progress.Info($"{(options.FloatFineTune ? "Trained float" : "Fake-quantized")} accuracy {trainedValue:P2}, deployed {(options.FloatFineTune ? "float" : "QDQ")} model {deployedValue:P2}.");
        result.AwareTraining = report;
        return (result, report);
    }
}

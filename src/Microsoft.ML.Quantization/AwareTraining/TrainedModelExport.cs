using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// The trained model as deployed: the trained weights and BatchNormalization statistics written back into the float
/// graph, prepared exactly as PTQ prepares it (BN folded); quantized, the QDQ writer with the trained ranges in place
/// of calibrated ones; a float fine-tune, that float graph itself (on ONNX Runtime).
/// </summary>
internal static class TrainedModelExport
{
    /// <summary>Rows the export calibrates the deployed graph on, only for its table's structure (the ranges are the trained ones).</summary>
    private const int StructureSampleCount = 64;

    public static QuantizedModelTransformer Export(MLContext context, AwareTrainingOptions options, TrainingSetup setup, OnnxTorchModule module, SimulatedQuantization quantization)
    {
        OnnxModel trained = setup.FloatGraph.Clone();
        foreach (var init in trained.Graph.Initializers.Where(i => i.ElementType == OnnxElementType.Float).ToList())
        {
            using var scope = torch.NewDisposeScope();
            Tensor value = module.Value(init.Name).detach().cpu().contiguous();
            trained.Graph.SetInitializer(OnnxTensor.FromFloats(init.Name, init.Dims, value.data<float>().ToArray()));
        }
        var exportOptions = options.ToPostTraining(trained.ToBytes(), trained.Graph.RuntimeInputs[0].Name);
        OnnxModel deployGraph = PostTrainingEstimator.Prepare(exportOptions, setup.Name, trained);
        if (options.FloatFineTune)
        {
            exportOptions.Backend = QuantizedBackend.OnnxRuntime;   // the native engine runs quantized graphs
            return new QuantizedModelTransformer(context, deployGraph, exportOptions.ToScoringSettings(), []);
        }
        CalibrationTable structure = AwareTrainer.Calibrate(context, options, deployGraph, setup.Train, StructureSampleCount);
        QdqResult written = QdqWriter.Quantize(deployGraph, quantization.TrainedRanges(structure), exportOptions);
        return new QuantizedModelTransformer(context, written.Model, exportOptions.ToScoringSettings(), written.Nodes);
    }
}

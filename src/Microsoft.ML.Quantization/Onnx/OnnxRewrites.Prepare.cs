namespace Microsoft.ML.Quantization.Onnx;

/// <summary>What <see cref="OnnxRewrites.PrepareForQuantization"/> changed.</summary>
internal sealed record GraphPreparation(int IdentitiesRemoved, int ConstantsFolded, int BatchNormsFolded);

internal static partial class OnnxRewrites
{
    /// <summary>
    /// The float graph the quantizer works on: Identity/Dropout removed, initializer-only subgraphs folded,
    /// BatchNormalization folded into the preceding Conv/Gemm/MatMul. Calibration and PostTraining both run it,
    /// in this order, so their tensor names agree.
    /// </summary>
    public static GraphPreparation PrepareForQuantization(OnnxModel model)
    {
        int identities = RemoveIdentityAndDropout(model);
        int constants = FoldConstants(model);
        int batchNorms = FoldBatchNormalization(model);
        return new GraphPreparation(identities, constants, batchNorms);
    }
}

using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// The float graph quantization-aware training runs, prepared and checked without libtorch: Identity and Dropout
/// removed, constants folded, opset 13 or later, a symbolic batch, and only what <see cref="OnnxTorchModule"/>
/// runs (so an unsupported model fails before any row is read, and the PTQ-first path never loads TorchSharp).
/// </summary>
internal static class TrainableGraph
{
    internal static readonly HashSet<string> SupportedOps =
    [
        "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
        "HardSigmoid", "HardSwish", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape",
        "Transpose", "Concat", "Squeeze", "Unsqueeze", "Softmax", "Dropout", "Identity", "Constant",
    ];

    private static readonly HashSet<OnnxElementType> SupportedInitializerTypes = [OnnxElementType.Float, OnnxElementType.Int64, OnnxElementType.Int32];

    /// <summary>Reads the options' model and prepares it for training; throws <see cref="NotSupportedException"/> naming what cannot be trained.</summary>
    public static OnnxModel Load(AwareTrainingOptions options)
    {
        OnnxModel model = OnnxModelSource.Load(options.ModelPath, options.ModelBytes);
        OnnxRewrites.RemoveIdentityAndDropout(model);
        OnnxRewrites.FoldConstants(model);
        if (model.DefaultOpset < 13)
            OnnxRewrites.UpgradeOpset(model, 13);
        Check(model);
        // Training batches (and the last, shorter one) need a batch dimension that can vary.
        return OnnxRewrites.TryMakeBatchSymbolic(model, out InvalidOnnxModelException? failure)
            ?? throw new NotSupportedException($"{model.Describe} cannot be trained: its batch dimension cannot be made symbolic. {failure!.Message}", failure);
    }

    /// <summary>Throws <see cref="NotSupportedException"/> when a node, the inputs or an initializer type cannot be trained.</summary>
    public static void Check(OnnxModel model)
    {
        var g = model.Graph;
        foreach (var node in g.Nodes)
            if (node.Domain.Length != 0 || !SupportedOps.Contains(node.OpType))
                throw new NotSupportedException($"{model.Describe}: {node.Describe} cannot be trained: op {node.OpType} is not supported (supported: {string.Join(", ", SupportedOps.Order())}).");
        if (g.RuntimeInputs.Count != 1 || g.Outputs.Count < 1)
            throw new NotSupportedException($"{model.Describe}: training needs exactly one graph input and an output (it has {g.RuntimeInputs.Count} inputs, {g.Outputs.Count} outputs).");
        foreach (var init in g.Initializers)
            if (!SupportedInitializerTypes.Contains(init.ElementType))
                throw new NotSupportedException($"{model.Describe}: initializer '{init.Name}' of type {init.ElementType} cannot be used in training (float, int64 and int32 can).");
    }

    /// <summary>The dimensions of one row of the single input (all but the batch), which must be fixed.</summary>
    public static long[] RowDims(OnnxModel model)
    {
        var input = model.Graph.RuntimeInputs[0];
        return (input.Shape ?? throw new NotSupportedException($"{model.Describe}: input '{input.Name}' has no shape."))
            .Skip(1).Select(d => d.Value ?? throw new NotSupportedException($"{model.Describe}: input '{input.Name}' has a symbolic dimension other than the batch.")).ToArray();
    }
}

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
        NameNodes(model);
        return new GraphPreparation(identities, constants, batchNorms);
    }

    /// <summary>
    /// Gives every node of the main graph a unique name (unnamed ones: op type and index; repeated ones: a suffix), so
    /// reports and per-node options can name each. Returns how many were renamed.
    /// </summary>
    public static int NameNodes(OnnxModel model)
    {
        var graph = model.Graph;
        var used = new HashSet<string>(StringComparer.Ordinal);
        int renamed = 0, index = 0;
        foreach (var node in graph.Nodes)
        {
            if (node.Name.Length > 0 && used.Add(node.Name))
            {
                index++;
                continue;
            }
            string stem = node.Name.Length > 0 ? node.Name : $"{node.OpType}_{index}";
            string name = stem;
            for (int k = 1; !used.Add(name); k++)
                name = $"{stem}_{k}";
            node.Name = name;
            renamed++;
            index++;
        }
        return renamed;
    }

    /// <summary>
    /// Writes the element type ONNX Runtime infers for every main-graph tensor that has no typed value info (no shape:
    /// a shape written here would pin dims that vary with the batch), so the quantizer tells float data from integer
    /// and boolean tensors (token ids, masks, shape arithmetic) without guessing. Nothing changes when ONNX Runtime
    /// cannot load the model. Returns how many tensors were annotated.
    /// </summary>
    public static int AnnotateElementTypes(OnnxModel model)
    {
        var graph = model.Graph;
        var typed = graph.Proto.ValueInfo.Concat(graph.Proto.Input).Concat(graph.Proto.Output)
            .Where(v => v.Type?.TensorType is { ElemType: > 0 }).Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        var initializers = graph.Initializers.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var wanted = graph.Nodes.SelectMany(n => n.Outputs).Where(o => o.Length > 0 && !typed.Contains(o) && !initializers.Contains(o)).Distinct().ToList();
        if (wanted.Count == 0)
            return 0;
        var types = OnnxShapeInference.InferElementTypes(model, wanted);
        foreach (var (name, type) in types)
            graph.Proto.ValueInfo.Add(OnnxValueInfo.Create(name, type, null).Proto);
        return types.Count;
    }
}

using Microsoft.ML.OnnxRuntime;

namespace Microsoft.ML.Quantization.Onnx;

/// <summary>
/// Shapes of intermediate tensors from ONNX shape inference, as ONNX Runtime runs it when it loads a model: the
/// tensors are exposed as graph outputs without a declared shape, a session is created (nothing is run, no graph
/// optimization), and the shapes ONNX Runtime inferred for those outputs are read back. This is the model's own
/// opset's inference for every standard op, which a hand-written pass would have to repeat op by op.
/// </summary>
internal static class OnnxShapeInference
{
    /// <summary>
    /// The inferred dims of each requested tensor of the main graph (-1 for a dim inference left symbolic); tensors
    /// whose rank inference could not establish are absent. Returns an empty map when ONNX Runtime cannot load the
    /// model at all (callers then fall back to rank-free rewrites).
    /// </summary>
    public static IReadOnlyDictionary<string, long[]> InferShapes(OnnxModel model, IEnumerable<string> tensors)
        => Infer(model, tensors).Shapes;

    /// <summary>The element type ONNX Runtime infers for each requested main-graph tensor (absent when it cannot tell).</summary>
    public static IReadOnlyDictionary<string, OnnxElementType> InferElementTypes(OnnxModel model, IEnumerable<string> tensors)
        => Infer(model, tensors).Types;

    private static (Dictionary<string, long[]> Shapes, Dictionary<string, OnnxElementType> Types) Infer(OnnxModel model, IEnumerable<string> tensors)
    {
        var types = new Dictionary<string, OnnxElementType>(StringComparer.Ordinal);
        var wanted = tensors.Where(t => t.Length > 0).Distinct().ToList();
        var result = new Dictionary<string, long[]>(StringComparer.Ordinal);
        if (wanted.Count == 0)
            return (result, types);
        var probe = model.Clone();
        var graph = probe.Graph;
        var names = graph.TensorNames().ToHashSet(StringComparer.Ordinal);
        var index = graph.Index();
        var exposed = new HashSet<string>(StringComparer.Ordinal);
        foreach (string name in wanted)
        {
            if (!names.Contains(name))
                continue;
            if (index.FindValueInfo(name)?.Shape is { } known)
            {
                result[name] = [.. known.Select(d => d.Value ?? -1)];
                continue;
            }
            if (index.IsGraphOutput(name))
                continue;
            // An output without type or shape: ONNX Runtime fills in what it infers (a guessed type that was wrong
            // would make the whole model fail to load).
            graph.Proto.Output.Add(new Proto.ValueInfoProto { Name = name });
            exposed.Add(name);
        }
        // A value_info without a shape would not add anything; one with a partial shape is re-inferred.
        if (exposed.Count > 0 && graph.Proto.ValueInfo.Any(v => exposed.Contains(v.Name)))
        {
            var kept = graph.Proto.ValueInfo.Where(v => !exposed.Contains(v.Name)).ToList();
            graph.Proto.ValueInfo.Clear();
            graph.Proto.ValueInfo.AddRange(kept);
        }
        try
        {
            using var options = new SessionOptions
            {
                GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL,
                IntraOpNumThreads = 1,
                InterOpNumThreads = 1,
                LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL,
            };
            using var session = new InferenceSession(probe.ToBytes(), options);
            var wantedSet = wanted.ToHashSet(StringComparer.Ordinal);
            foreach (var (name, meta) in session.OutputMetadata)
            {
                if (!wantedSet.Contains(name) || !meta.IsTensor)
                    continue;
                if (ElementType(meta.ElementDataType) is { } type)
                    types[name] = type;
                if (result.ContainsKey(name))
                    continue;
                // An absent shape reads as rank 0; a true scalar has no axis a rewrite would need, so skip both.
                if (meta.Dimensions.Length > 0)
                    result[name] = [.. meta.Dimensions.Select(d => (long)d)];
            }
        }
        catch (Exception e) when (e is OnnxRuntimeException or InvalidOnnxModelException or DllNotFoundException or TypeInitializationException or EntryPointNotFoundException)
        {
            // ONNX Runtime could not load the model (an op it lacks at this opset, a type clash): no inferred shapes.
        }
        return (result, types);
    }

    private static OnnxElementType? ElementType(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType type) => type switch
    {
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float => OnnxElementType.Float,
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Double => OnnxElementType.Double,
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16 => OnnxElementType.Float16,
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int64 => OnnxElementType.Int64,
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int32 => OnnxElementType.Int32,
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int8 => OnnxElementType.Int8,
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.UInt8 => OnnxElementType.UInt8,
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Bool => OnnxElementType.Bool,
        _ => null,
    };
}

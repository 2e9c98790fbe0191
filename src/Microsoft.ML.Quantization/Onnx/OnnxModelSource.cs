namespace Microsoft.ML.Quantization.Onnx;

/// <summary>
/// Where every stage gets its model: reads the model an options object names (once; a path through
/// <see cref="OnnxModel.ReadFile"/>'s checks, its external data confined to the model's folder) and adapts a loaded model for
/// batched scoring. Stages hand each other the <see cref="OnnxModel"/>, and only ONNX Runtime gets bytes.
/// </summary>
internal static class OnnxModelSource
{
    /// <summary>
    /// Reads the model: <paramref name="bytes"/> as given (external data resolved against <paramref name="path"/>'s folder
    /// when both are set, else refused), else the file at <paramref name="path"/>. <paramref name="sourceName"/> is what
    /// messages call the model (default: the path).
    /// </summary>
    internal static OnnxModel Load(string? path, byte[]? bytes, string? sourceName = null) => Load(path, bytes, sourceName, out _);

    /// <summary>
    /// <see cref="Load(string, byte[], string)"/>, and the bytes ONNX Runtime can run as they are when there are such bytes
    /// (the given bytes; the file's, without external data), else null: ONNX Runtime given the file's own bytes would resolve
    /// its external data against the working directory, so the loaded (self-contained) model is serialised instead.
    /// </summary>
    internal static OnnxModel Load(string? path, byte[]? bytes, string? sourceName, out byte[]? runnableBytes)
    {
        string? folder = path is null ? null : Path.GetDirectoryName(Path.GetFullPath(path));
        if (bytes is not null)
        {
            runnableBytes = bytes;
            return OnnxModel.Parse(bytes, folder, sourceName ?? path);
        }
        if (string.IsNullOrEmpty(path))
            throw new ArgumentException("Set ModelPath or ModelBytes.");
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"ONNX model file '{path}' does not exist.", path);
        byte[] file = OnnxModel.ReadFile(path);
        var model = OnnxModel.Parse(file, folder, sourceName ?? path);
        runnableBytes = model.HadExternalData ? null : file;
        return model;
    }

    /// <summary>The bytes ONNX Runtime runs for the model at <paramref name="path"/> or in <paramref name="bytes"/> (self-contained).</summary>
    internal static byte[] ReadBytes(string? path, byte[]? bytes)
    {
        OnnxModel model = Load(path, bytes, null, out byte[]? runnable);
        return runnable ?? model.ToBytes();
    }

    /// <summary>
    /// The model to run for batched scoring: <paramref name="model"/> itself when it fits, else a copy (the caller's model
    /// never changes). A fixed batch dimension other than 1 = <paramref name="batchSize"/> is made symbolic
    /// (<see cref="OnnxRewrites.TryMakeBatchSymbolic"/>), so any batch size runs; where the graph pins its batch, a fixed
    /// batch equal to <paramref name="batchSize"/> is kept (the scorer pads the last batch) and any other is a clear error.
    /// Intermediate tensors in <paramref name="outputTensors"/> become graph outputs.
    /// </summary>
    internal static OnnxModel PrepareForScoring(OnnxModel model, IEnumerable<string> outputTensors, int batchSize, string modelName,
        IDictionary<string, int[]>? declaredShapes = null)
    {
        // A cycle named by its node (ONNX Runtime only says "the graph is not acyclic").
        _ = model.Graph.TopologicalOrder();
        OnnxModel? changed = null;

        // Inputs declared whole (their full rank) have no batch dimension and say nothing about the batch.
        long? fixedBatch = model.Graph.RuntimeInputs
            .Where(i => declaredShapes is null || !declaredShapes.TryGetValue(i.Name, out int[]? d) || i.Shape is not { } full || full.Count != d.Length)
            .Select(i => i.Shape is { Count: > 0 } s ? s[0].Value : null).FirstOrDefault(v => v is not null);
        if (fixedBatch is long batch && !(batch == 1 && batchSize == 1))
        {
            changed = OnnxRewrites.TryMakeBatchSymbolic(model.Clone(), out InvalidOnnxModelException? failure);
            if (changed is null && batch != batchSize)
                throw new InvalidOperationException(
                    $"Model '{modelName}' has a fixed batch dimension of {batch}, BatchSize is {batchSize}, and the batch cannot be made symbolic: {failure!.Message} Use BatchSize = {batch}.");
        }

        var graph = (changed ?? model).Graph;
        var graphOutputs = graph.Proto.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var missing = outputTensors.Where(t => !graphOutputs.Contains(t)).Distinct().ToList();
        if (missing.Count > 0)
        {
            var known = new HashSet<string>(graph.TensorNames());
            var inputs = graph.RuntimeInputs.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
            foreach (string tensor in missing)
            {
                if (!known.Contains(tensor))
                    throw new ArgumentException($"Model '{modelName}' has no tensor '{tensor}' to output.");
                if (inputs.Contains(tensor))
                    throw new ArgumentException($"Tensor '{tensor}' of model '{modelName}' is a graph input; read the column that feeds it instead of scoring it.");
            }
            changed ??= model.Clone();
            changed.Graph.AddOutputs(missing);
        }
        return changed ?? model;
    }
}

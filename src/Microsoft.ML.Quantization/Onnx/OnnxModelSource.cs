namespace Microsoft.ML.Quantization.Onnx;

/// <summary>Reads the model a transformer runs and adapts it for batched scoring.</summary>
internal static class OnnxModelSource
{
    /// <summary>
    /// The model bytes to parse or hand ONNX Runtime: <paramref name="bytes"/> as given, else the file at
    /// <paramref name="path"/>. A file with external data comes back self-contained, its data read (and checked) from
    /// the model's folder: ONNX Runtime given the file's own bytes would resolve the data against the working directory.
    /// </summary>
    internal static byte[] Read(string? path, byte[]? bytes)
    {
        if (bytes is not null)
            return bytes;
        if (string.IsNullOrEmpty(path))
            throw new ArgumentException("Set ModelPath or ModelBytes.");
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"ONNX model file '{path}' does not exist.", path);
        byte[] file = OnnxModel.ReadFile(path);
        var model = OnnxModel.Parse(file, Path.GetDirectoryName(Path.GetFullPath(path)), path);
        return model.HadExternalData ? model.ToBytes() : file;
    }

    /// <summary>
    /// Returns the bytes to run. A fixed batch dimension other than 1 = <paramref name="batchSize"/> is made
    /// symbolic (upgrading the opset to 13 first when an old Reshape form needs it), so any batch size runs;
    /// where the graph pins its batch, a fixed batch equal to <paramref name="batchSize"/> is kept (the scorer
    /// pads the last batch) and any other is a clear error. Intermediate tensors in <paramref name="outputTensors"/>
    /// become graph outputs.
    /// </summary>
    internal static byte[] PrepareForScoring(byte[] model, string? path, IEnumerable<string> outputTensors, int batchSize, string? modelName = null,
        IDictionary<string, int[]>? declaredShapes = null)
    {
        string name = modelName ?? path ?? "(model bytes)";
        var parsed = OnnxModel.Parse(model, path is null ? null : Path.GetDirectoryName(Path.GetFullPath(path)), path ?? modelName);
        // A cycle named by its node (ONNX Runtime only says "the graph is not acyclic").
        _ = parsed.Graph.TopologicalOrder();
        bool changed = false;

        // Inputs declared whole (their full rank) have no batch dimension and say nothing about the batch.
        long? fixedBatch = parsed.Graph.RuntimeInputs
            .Where(i => declaredShapes is null || !declaredShapes.TryGetValue(i.Name, out int[]? d) || i.Shape is not { } full || full.Count != d.Length)
            .Select(i => i.Shape is { Count: > 0 } s ? s[0].Value : null).FirstOrDefault(v => v is not null);
        if (fixedBatch is long batch && !(batch == 1 && batchSize == 1))
        {
            OnnxModel? symbolic = TryMakeBatchSymbolic(parsed, out string? reason);
            if (symbolic is not null)
            {
                parsed = symbolic;
                changed = true;
            }
            else if (batch != batchSize)
            {
                throw new InvalidOperationException(
                    $"Model '{name}' has a fixed batch dimension of {batch}, BatchSize is {batchSize}, and the batch cannot be made symbolic: {reason} Use BatchSize = {batch}.");
            }
        }

        var graphOutputs = parsed.Graph.Proto.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var missing = outputTensors.Where(t => !graphOutputs.Contains(t)).Distinct().ToList();
        if (missing.Count > 0)
        {
            var known = new HashSet<string>(parsed.Graph.TensorNames());
            var inputs = parsed.Graph.RuntimeInputs.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
            foreach (string tensor in missing)
            {
                if (!known.Contains(tensor))
                    throw new ArgumentException($"Model '{name}' has no tensor '{tensor}' to output.");
                if (inputs.Contains(tensor))
                    throw new ArgumentException($"Tensor '{tensor}' of model '{name}' is a graph input; read the column that feeds it instead of scoring it.");
            }
            parsed.Graph.AddOutputs(missing);
            changed = true;
        }
        return changed ? parsed.ToBytes() : model;
    }

    private static OnnxModel? TryMakeBatchSymbolic(OnnxModel model, out string? reason)
    {
        var work = model.Clone();
        try
        {
            OnnxRewrites.MakeBatchSymbolic(work);
            reason = null;
            return work;
        }
        catch (InvalidOnnxModelException first) when (work.DefaultOpset < 13)
        {
            // Opset 1-4 Reshape keeps its shape in an attribute: the upgrade moves it to an input.
            try
            {
                work = model.Clone();
                OnnxRewrites.UpgradeOpset(work, 13);
                OnnxRewrites.MakeBatchSymbolic(work);
                reason = null;
                return work;
            }
            catch (InvalidOnnxModelException)
            {
                reason = first.Message;
                return null;
            }
        }
        catch (InvalidOnnxModelException e)
        {
            reason = e.Message;
            return null;
        }
    }
}

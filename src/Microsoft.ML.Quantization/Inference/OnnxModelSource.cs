namespace Microsoft.ML.Quantization.Inference;

/// <summary>Reads the model a transformer runs and adapts it for batched scoring.</summary>
internal static class OnnxModelSource
{
    internal static byte[] Read(string? path, byte[]? bytes)
    {
        if (bytes is not null)
            return bytes;
        if (string.IsNullOrEmpty(path))
            throw new ArgumentException("Set ModelPath or ModelBytes.");
        if (!File.Exists(path))
            throw new FileNotFoundException($"ONNX model file '{path}' does not exist.", path);
        return File.ReadAllBytes(path);
    }

    /// <summary>Returns the bytes to run: intermediate tensors in <paramref name="outputTensors"/> become graph outputs.</summary>
    internal static byte[] PrepareForScoring(byte[] model, string? path, IEnumerable<string> outputTensors, int batchSize)
    {
        var parsed = Onnx.OnnxModel.Parse(model, path is null ? null : Path.GetDirectoryName(Path.GetFullPath(path)), path);
        var missing = outputTensors.Where(t => !parsed.Graph.IsGraphOutput(t)).Distinct().ToList();
        if (missing.Count == 0)
            return model;
        var known = new HashSet<string>(parsed.Graph.TensorNames());
        foreach (string tensor in missing)
        {
            if (!known.Contains(tensor))
                throw new ArgumentException($"Model '{path ?? "(model bytes)"}' has no tensor '{tensor}' to output.");
            parsed.Graph.AddOutput(tensor);
        }
        return parsed.ToBytes();
    }
}

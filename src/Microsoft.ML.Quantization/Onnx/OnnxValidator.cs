namespace Microsoft.ML.Quantization.Onnx;

/// <summary>
/// Structural checks before the quantizer edits a model: opset imports, dangling inputs, duplicate
/// producers and cycles. Each error names the file, the node and the problem.
/// </summary>
internal static class OnnxValidator
{
    /// <summary>Highest default-domain opset this code knows (ONNX 1.18 defines 23).</summary>
    public const long MaxKnownDefaultOpset = 23;

    private static readonly HashSet<string> KnownDomains = ["", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training", "com.microsoft.nchwc", "com.ms.internal.nhwc", "org.pytorch.aten"];

    public static void Validate(OnnxModel model)
    {
        string where = model.Describe;
        var g = model.Graph.Proto;
        var opsets = model.OpsetImports;
        if (!opsets.TryGetValue("", out long defaultOpset))
        {
            if (g.Node.Any(n => OnnxModel.NormalizeDomain(n.Domain).Length == 0))
                throw new InvalidOnnxModelException($"{where} does not import the default ONNX opset (ai.onnx) but uses its operators.");
        }
        else if (defaultOpset < 1 || defaultOpset > MaxKnownDefaultOpset)
            throw new InvalidOnnxModelException($"{where} imports ai.onnx opset {defaultOpset}, outside the known range 1..{MaxKnownDefaultOpset}.");
        foreach (var (domain, version) in opsets)
            if (domain.Length > 0 && version < 1)
                throw new InvalidOnnxModelException($"{where} imports opset {version} of domain '{domain}', which is not a valid version.");

        var defined = new HashSet<string>(g.Input.Select(v => v.Name));
        var initializers = new HashSet<string>();
        foreach (var t in g.Initializer)
        {
            if (t.Name.Length == 0)
                throw new InvalidOnnxModelException($"{where} has an initializer without a name.");
            if (!initializers.Add(t.Name))
                throw new InvalidOnnxModelException($"{where} has two initializers named '{t.Name}'.");
            defined.Add(t.Name);
        }
        var producers = new Dictionary<string, OnnxNode>();
        var nodeNames = new HashSet<string>();
        foreach (var proto in g.Node)
        {
            var node = new OnnxNode(proto);
            if (proto.OpType.Length == 0)
                throw new InvalidOnnxModelException($"{where}: {node.Describe} has no op_type.");
            if (!opsets.ContainsKey(node.Domain))
                throw new InvalidOnnxModelException($"{where}: {node.Describe} uses domain '{node.Domain}', which the model does not import (unknown domain or opset).");
            if (!KnownDomains.Contains(node.Domain) && node.Domain.Length > 0 && !model.Proto.OpsetImport.Any(o => o.Domain == proto.Domain))
                throw new InvalidOnnxModelException($"{where}: {node.Describe} uses unknown domain '{node.Domain}'.");
            if (proto.Name.Length > 0 && !nodeNames.Add(proto.Name))
                throw new InvalidOnnxModelException($"{where}: two nodes are named '{proto.Name}' ({proto.OpType}).");
            foreach (string output in proto.Output)
            {
                if (output.Length == 0)
                    continue;
                if (producers.TryGetValue(output, out var other))
                    throw new InvalidOnnxModelException($"{where}: {node.Describe} writes output '{output}', which {other.Describe} already produces (duplicate output).");
                if (defined.Contains(output))
                    throw new InvalidOnnxModelException($"{where}: {node.Describe} writes output '{output}', which is already a graph input or initializer (duplicate output).");
                producers[output] = node;
            }
        }
        foreach (var proto in g.Node)
            foreach (string input in proto.Input.Concat(OnnxGraph.SubgraphOuterInputs(proto)))
                if (input.Length > 0 && !defined.Contains(input) && !producers.ContainsKey(input))
                    throw new InvalidOnnxModelException($"{where}: {new OnnxNode(proto).Describe} reads '{input}', which no node, graph input or initializer defines (dangling input).");
        foreach (var output in g.Output)
            if (!defined.Contains(output.Name) && !producers.ContainsKey(output.Name))
                throw new InvalidOnnxModelException($"{where}: graph output '{output.Name}' is not produced by any node.");
        // Throws naming a node on a cycle.
        model.Graph.TopologicalOrder();
    }
}

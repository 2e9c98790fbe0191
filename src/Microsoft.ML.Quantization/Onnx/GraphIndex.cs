using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Onnx;

/// <summary>
/// A snapshot of a graph's lookups, built in one pass: producer and consumers of each tensor, value infos,
/// initializers, graph outputs, and element types inferred through producers (memoized). The <see cref="OnnxGraph"/>
/// methods of the same names scan the whole graph per call; passes that look up every tensor use an index instead, so
/// they stay linear in the graph size. The index does not follow later edits: build it after them, or keep it in step.
/// </summary>
internal sealed class GraphIndex
{
    private readonly OnnxGraph _graph;
    private readonly Dictionary<string, NodeProto> _producers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ValueInfoProto> _valueInfos = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorProto> _initializers = new(StringComparer.Ordinal);
    private readonly HashSet<string> _graphOutputs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, OnnxElementType> _types = new(StringComparer.Ordinal);
    private Dictionary<string, List<OnnxNode>>? _consumers;

    internal GraphIndex(OnnxGraph graph)
    {
        _graph = graph;
        var g = graph.Proto;
        foreach (var n in g.Node)
            foreach (string o in n.Output)
                if (o.Length > 0)
                    _producers.TryAdd(o, n);
        // The order OnnxGraph.FindValueInfo looks in: value_info, then inputs, then outputs.
        foreach (var v in g.ValueInfo.Concat(g.Input).Concat(g.Output))
            _valueInfos.TryAdd(v.Name, v);
        foreach (var t in g.Initializer)
            _initializers.TryAdd(t.Name, t);
        foreach (var o in g.Output)
            _graphOutputs.Add(o.Name);
    }

    public OnnxNode? Producer(string tensor) => _producers.TryGetValue(tensor, out var n) ? new OnnxNode(n) : null;

    /// <summary>Nodes reading <paramref name="tensor"/> (subgraph uses included), built on first use.</summary>
    public IReadOnlyList<OnnxNode> Consumers(string tensor)
    {
        _consumers ??= _graph.ConsumerMap();
        return _consumers.TryGetValue(tensor, out var list) ? list : [];
    }

    public bool IsGraphOutput(string tensor) => _graphOutputs.Contains(tensor);

    public bool TryGetInitializer(string name, out OnnxTensor tensor)
    {
        bool found = _initializers.TryGetValue(name, out var proto);
        tensor = found ? new OnnxTensor(proto!) : null!;
        return found;
    }

    public OnnxValueInfo? FindValueInfo(string name) => _valueInfos.TryGetValue(name, out var v) ? new OnnxValueInfo(v) : null;

    /// <summary>
    /// What <see cref="OnnxGraph.ElementTypeOf"/> answers, without its depth bound: the chain of producers a tensor's
    /// type is forwarded through is walked once, and every tensor on it remembers the answer. A cycle gives Undefined.
    /// </summary>
    public OnnxElementType ElementTypeOf(string name)
    {
        var chain = new List<string>();
        var onChain = new HashSet<string>(StringComparer.Ordinal);
        OnnxElementType answer;
        string current = name;
        while (true)
        {
            if (_types.TryGetValue(current, out answer))
                break;
            if (!onChain.Add(current))
            {
                answer = OnnxElementType.Undefined;
                break;
            }
            chain.Add(current);
            if (Step(current, out answer) is not { } next)
                break;
            current = next;
        }
        foreach (string t in chain)
            _types[t] = answer;
        return answer;
    }

    /// <summary>One step of the inference: the type (and null), or the tensor whose type this one has.</summary>
    private string? Step(string name, out OnnxElementType type)
    {
        type = OnnxElementType.Undefined;
        if (_valueInfos.TryGetValue(name, out var vi) && vi.Type?.TensorType?.ElemType is int known && known != 0)
        {
            type = (OnnxElementType)known;
            return null;
        }
        if (_initializers.TryGetValue(name, out var init))
        {
            type = (OnnxElementType)init.DataType;
            return null;
        }
        if (!_producers.TryGetValue(name, out var proto))
            return null;
        var producer = new OnnxNode(proto);
        switch (producer.OpType)
        {
            case "Cast":
                type = (OnnxElementType)producer.GetInt("to", 0);
                return null;
            case "QuantizeLinear" when producer.Inputs.Count > 2 && producer.Inputs[2].Length > 0:
                return producer.Inputs[2];
            case "QuantizeLinear":
                type = OnnxElementType.UInt8;
                return null;
            case "DequantizeLinear" when producer.Inputs.Count > 1:
                return producer.Inputs[1];
            case "DequantizeLinear":
                type = OnnxElementType.Float;
                return null;
            case "TopK" when producer.Outputs.Count > 1 && producer.Outputs[1] == name:
                type = OnnxElementType.Int64;
                return null;
            case "Shape" or "Size" or "ArgMax" or "ArgMin" or "NonZero" or "NonMaxSuppression":
                type = OnnxElementType.Int64;
                return null;
            case "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" or "IsNaN" or "IsInf":
                type = OnnxElementType.Bool;
                return null;
            case "Constant" when producer.GetTensor("value") is { } t:
                type = t.ElementType;
                return null;
            case "ConstantOfShape":
                type = producer.GetTensor("value")?.ElementType ?? OnnxElementType.Float;
                return null;
            case "Where" when producer.Inputs.Count > 1:
                return producer.Inputs[1];
            case "CastLike" when producer.Inputs.Count > 1:
                return producer.Inputs[1];
            case "If" or "Loop" or "Scan":
                return null;
            case "MaxPool" when producer.Outputs.Count > 1 && producer.Outputs[1] == name:
                type = OnnxElementType.Int64;
                return null;
            default:
                // Most ops keep their first input's type.
                return producer.Inputs.FirstOrDefault(i => i.Length > 0);
        }
    }
}

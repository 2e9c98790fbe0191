using System.Text;
using Google.Protobuf;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Onnx;

/// <summary>A node over a <see cref="NodeProto"/>; inputs and outputs are edited in place.</summary>
internal sealed class OnnxNode
{
    internal OnnxNode(NodeProto proto) => Proto = proto;

    internal NodeProto Proto { get; }

    public string Name { get => Proto.Name; set => Proto.Name = value; }

    public string OpType { get => Proto.OpType; set => Proto.OpType = value; }

    /// <summary>Domain with "ai.onnx" normalized to "".</summary>
    public string Domain { get => OnnxModel.NormalizeDomain(Proto.Domain); set => Proto.Domain = value; }

    /// <summary>Inputs; "" marks an omitted optional input.</summary>
    public IList<string> Inputs => Proto.Input;

    public IList<string> Outputs => Proto.Output;

    public string Describe => $"node '{Name}' ({(Domain.Length > 0 ? Domain + "." : "")}{OpType})";

    public bool HasAttribute(string name) => Proto.Attribute.Any(a => a.Name == name);

    internal AttributeProto? Attribute(string name) => Proto.Attribute.FirstOrDefault(a => a.Name == name);

    public long GetInt(string name, long defaultValue) => Attribute(name) is { } a ? a.I : defaultValue;

    public float GetFloat(string name, float defaultValue) => Attribute(name) is { } a ? a.F : defaultValue;

    public string? GetString(string name) => Attribute(name) is { } a ? a.S.ToStringUtf8() : null;

    public long[]? GetInts(string name) => Attribute(name) is { } a ? [.. a.Ints] : null;

    public float[]? GetFloats(string name) => Attribute(name) is { } a ? [.. a.Floats] : null;

    public OnnxTensor? GetTensor(string name) => Attribute(name) is { T: { } t } ? new OnnxTensor(t) : null;

    public void SetInt(string name, long value) => Replace(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });

    public void SetFloat(string name, float value) => Replace(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value });

    public void SetString(string name, string value) => Replace(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) });

    public void SetInts(string name, IEnumerable<long> values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        Replace(a);
    }

    public void SetFloats(string name, IEnumerable<float> values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Floats };
        a.Floats.AddRange(values);
        Replace(a);
    }

    public void SetTensor(string name, OnnxTensor value) => Replace(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = value.Proto });

    public bool RemoveAttribute(string name)
    {
        var a = Attribute(name);
        return a is not null && Proto.Attribute.Remove(a);
    }

    private void Replace(AttributeProto attribute)
    {
        RemoveAttribute(attribute.Name);
        Proto.Attribute.Add(attribute);
    }

    public override string ToString() => Describe;

    // Wrappers are created on the fly: equality follows the underlying proto.
    public override bool Equals(object? obj) => obj is OnnxNode n && ReferenceEquals(n.Proto, Proto);

    public override int GetHashCode() => System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(Proto);
}

/// <summary>A graph input, output or value_info: name, element type and shape (dims: value or symbol).</summary>
internal sealed class OnnxValueInfo
{
    internal OnnxValueInfo(ValueInfoProto proto) => Proto = proto;

    internal ValueInfoProto Proto { get; }

    public string Name { get => Proto.Name; set => Proto.Name = value; }

    public bool IsTensor => Proto.Type?.TensorType is not null;

    public OnnxElementType ElementType => (OnnxElementType)(Proto.Type?.TensorType?.ElemType ?? 0);

    /// <summary>The shape, null when unknown; each dim is a number, a symbol, or (null, null) when unknown.</summary>
    public IReadOnlyList<(long? Value, string? Param)>? Shape =>
        Proto.Type?.TensorType?.Shape is { } s
            ? [.. s.Dim.Select(d => (d.HasDimValue ? d.DimValue : (long?)null, d.HasDimParam ? d.DimParam : null))]
            : null;

    public static OnnxValueInfo Create(string name, OnnxElementType type, IEnumerable<long?>? dims)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = (int)type };
        if (dims is not null)
        {
            tensor.Shape = new TensorShapeProto();
            foreach (long? d in dims)
                tensor.Shape.Dim.Add(d is long v ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension());
        }
        return new OnnxValueInfo(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } });
    }

    public override string ToString()
    {
        var sb = new StringBuilder(Name).Append(": ").Append(ElementType);
        if (Shape is { } shape)
            sb.Append(" [").Append(string.Join(",", shape.Select(d => d.Value?.ToString() ?? d.Param ?? "?"))).Append(']');
        return sb.ToString();
    }
}

/// <summary>
/// The main graph of an <see cref="OnnxModel"/>: nodes, initializers, inputs/outputs/value infos and the
/// producer/consumer relations the quantizer walks. Edits go straight to the underlying GraphProto.
/// </summary>
internal sealed class OnnxGraph
{
    private readonly OnnxModel _model;

    internal OnnxGraph(GraphProto proto, OnnxModel model)
    {
        Proto = proto;
        _model = model;
    }

    internal GraphProto Proto { get; }

    public string Name { get => Proto.Name; set => Proto.Name = value; }

    public IReadOnlyList<OnnxNode> Nodes => [.. Proto.Node.Select(n => new OnnxNode(n))];

    public IReadOnlyList<OnnxValueInfo> Inputs => [.. Proto.Input.Select(v => new OnnxValueInfo(v))];

    public IReadOnlyList<OnnxValueInfo> Outputs => [.. Proto.Output.Select(v => new OnnxValueInfo(v))];

    public IReadOnlyList<OnnxValueInfo> ValueInfos => [.. Proto.ValueInfo.Select(v => new OnnxValueInfo(v))];

    public IReadOnlyList<OnnxTensor> Initializers => [.. Proto.Initializer.Select(t => new OnnxTensor(t))];

    /// <summary>Graph inputs that are not initializers (what a caller feeds).</summary>
    public IReadOnlyList<OnnxValueInfo> RuntimeInputs
    {
        get
        {
            var inits = Proto.Initializer.Select(t => t.Name).ToHashSet();
            return [.. Proto.Input.Where(v => !inits.Contains(v.Name)).Select(v => new OnnxValueInfo(v))];
        }
    }

    public bool TryGetInitializer(string name, out OnnxTensor tensor)
    {
        foreach (var t in Proto.Initializer)
            if (t.Name == name)
            {
                tensor = new OnnxTensor(t);
                return true;
            }
        tensor = null!;
        return false;
    }

    public bool IsInitializer(string name) => Proto.Initializer.Any(t => t.Name == name);

    /// <summary>Adds or replaces (by name) an initializer.</summary>
    public void SetInitializer(OnnxTensor tensor)
    {
        for (int i = 0; i < Proto.Initializer.Count; i++)
            if (Proto.Initializer[i].Name == tensor.Name)
            {
                Proto.Initializer[i] = tensor.Proto;
                return;
            }
        Proto.Initializer.Add(tensor.Proto);
    }

    /// <summary>Removes an initializer and the graph input of the same name (older IRs list initializers as inputs).</summary>
    public bool RemoveInitializer(string name)
    {
        bool removed = false;
        for (int i = Proto.Initializer.Count - 1; i >= 0; i--)
            if (Proto.Initializer[i].Name == name)
            {
                Proto.Initializer.RemoveAt(i);
                removed = true;
            }
        if (removed)
            for (int i = Proto.Input.Count - 1; i >= 0; i--)
                if (Proto.Input[i].Name == name)
                    Proto.Input.RemoveAt(i);
        return removed;
    }

    public OnnxNode? Producer(string tensorName)
    {
        if (tensorName.Length == 0)
            return null;
        foreach (var n in Proto.Node)
            if (n.Output.Contains(tensorName))
                return new OnnxNode(n);
        return null;
    }

    public IReadOnlyList<OnnxNode> Consumers(string tensorName) =>
        tensorName.Length == 0 ? [] : [.. Proto.Node.Where(n => n.Input.Contains(tensorName) || UsesInSubgraph(n, tensorName)).Select(n => new OnnxNode(n))];

    /// <summary>Producer of every tensor, built once (for passes that look up many).</summary>
    public Dictionary<string, OnnxNode> ProducerMap()
    {
        var map = new Dictionary<string, OnnxNode>();
        foreach (var n in Proto.Node)
            foreach (string o in n.Output)
                if (o.Length > 0)
                    map.TryAdd(o, new OnnxNode(n));
        return map;
    }

    /// <summary>Consumers of every tensor, built once.</summary>
    public Dictionary<string, List<OnnxNode>> ConsumerMap()
    {
        var map = new Dictionary<string, List<OnnxNode>>();
        foreach (var n in Proto.Node)
            foreach (string i in n.Input.Concat(SubgraphOuterInputs(n)).Distinct())
                if (i.Length > 0)
                {
                    if (!map.TryGetValue(i, out var list))
                        map[i] = list = [];
                    list.Add(new OnnxNode(n));
                }
        return map;
    }

    public bool IsGraphOutput(string name) => Proto.Output.Any(o => o.Name == name);

    public bool IsGraphInput(string name) => Proto.Input.Any(o => o.Name == name);

    /// <summary>All node input and output names (graph inputs/initializers too), without "".</summary>
    public IEnumerable<string> TensorNames()
    {
        var seen = new HashSet<string>();
        foreach (var v in Proto.Input)
            if (seen.Add(v.Name))
                yield return v.Name;
        foreach (var t in Proto.Initializer)
            if (seen.Add(t.Name))
                yield return t.Name;
        foreach (var n in Proto.Node)
            foreach (string s in n.Input.Concat(n.Output))
                if (s.Length > 0 && seen.Add(s))
                    yield return s;
    }

    /// <summary>A name no tensor, node, input, output or value info uses yet: the prefix itself, else prefix_1, prefix_2, ...</summary>
    public string FreshName(string prefix)
    {
        var used = new HashSet<string>(TensorNames());
        foreach (var n in Proto.Node)
            used.Add(n.Name);
        foreach (var v in Proto.Output.Concat(Proto.ValueInfo))
            used.Add(v.Name);
        if (!used.Contains(prefix))
            return prefix;
        for (long i = 1; ; i++)
            if (!used.Contains($"{prefix}_{i}"))
                return $"{prefix}_{i}";
    }

    public OnnxNode CreateNode(string opType, IEnumerable<string> inputs, IEnumerable<string> outputs, string? name = null, string domain = "")
    {
        var proto = new NodeProto { OpType = opType, Domain = domain, Name = name ?? FreshName(opType) };
        proto.Input.AddRange(inputs);
        proto.Output.AddRange(outputs);
        return new OnnxNode(proto);
    }

    /// <summary>Appends a node (call <see cref="SortTopologically"/> after a batch of insertions) or inserts it before <paramref name="before"/>.</summary>
    public OnnxNode InsertNode(OnnxNode node, OnnxNode? before = null)
    {
        if (before is null)
        {
            Proto.Node.Add(node.Proto);
            return node;
        }
        int index = Proto.Node.IndexOf(before.Proto);
        if (index < 0)
            throw new ArgumentException($"{before.Describe} is not in the graph.", nameof(before));
        Proto.Node.Insert(index, node.Proto);
        return node;
    }

    /// <summary>Creates and appends a node.</summary>
    public OnnxNode AddNode(string opType, IEnumerable<string> inputs, IEnumerable<string> outputs, string? name = null, string domain = "") =>
        InsertNode(CreateNode(opType, inputs, outputs, name, domain));

    public bool RemoveNode(OnnxNode node) => Proto.Node.Remove(node.Proto);

    /// <summary>Renames a tensor everywhere: its producer's output, every use, and graph inputs, outputs and value infos.</summary>
    public void RenameTensor(string oldName, string newName)
    {
        if (oldName == newName)
            return;
        if (TensorNames().Contains(newName))
            throw new ArgumentException($"Tensor '{newName}' already exists; cannot rename '{oldName}' to it.", nameof(newName));
        foreach (var n in Proto.Node)
            for (int i = 0; i < n.Output.Count; i++)
                if (n.Output[i] == oldName)
                    n.Output[i] = newName;
        ReplaceAllUses(oldName, newName);
        foreach (var v in Proto.Input.Concat(Proto.Output).Concat(Proto.ValueInfo).Where(v => v.Name == oldName))
            v.Name = newName;
        foreach (var t in Proto.Initializer.Where(t => t.Name == oldName))
            t.Name = newName;
    }

    /// <summary>Renames every use of a tensor as a node input, subgraph uses included (graph outputs: see RenameTensor).</summary>
    public void ReplaceAllUses(string oldName, string newName) => RenameInputs(Proto.Node, oldName, newName);

    private static void RenameInSubgraph(GraphProto g, string oldName, string newName)
    {
        // Names the subgraph defines itself shadow the outer one.
        if (g.Input.Any(v => v.Name == oldName) || g.Initializer.Any(t => t.Name == oldName) || g.Node.Any(n => n.Output.Contains(oldName)))
            return;
        RenameInputs(g.Node, oldName, newName);
    }

    /// <summary>Renames a tensor in the nodes' inputs and in their subgraphs (where not shadowed).</summary>
    private static void RenameInputs(IEnumerable<NodeProto> nodes, string oldName, string newName)
    {
        foreach (var n in nodes)
        {
            for (int i = 0; i < n.Input.Count; i++)
                if (n.Input[i] == oldName)
                    n.Input[i] = newName;
            foreach (var a in n.Attribute)
            {
                if (a.G is not null)
                    RenameInSubgraph(a.G, oldName, newName);
                foreach (var sub in a.Graphs)
                    RenameInSubgraph(sub, oldName, newName);
            }
        }
    }

    private static bool UsesInSubgraph(NodeProto n, string name) => SubgraphOuterInputs(n).Contains(name);

    /// <summary>Outer-scope names referenced by a node's subgraphs (If/Loop/Scan bodies).</summary>
    internal static IEnumerable<string> SubgraphOuterInputs(NodeProto n)
    {
        foreach (var a in n.Attribute)
        {
            if (a.G is not null)
                foreach (string s in OuterInputs(a.G))
                    yield return s;
            foreach (var g in a.Graphs)
                foreach (string s in OuterInputs(g))
                    yield return s;
        }
    }

    private static IEnumerable<string> OuterInputs(GraphProto g)
    {
        var defined = new HashSet<string>(g.Input.Select(v => v.Name).Concat(g.Initializer.Select(t => t.Name)));
        foreach (var n in g.Node)
            foreach (string o in n.Output)
                defined.Add(o);
        foreach (var n in g.Node)
            foreach (string i in n.Input.Concat(SubgraphOuterInputs(n)))
                if (i.Length > 0 && !defined.Contains(i))
                    yield return i;
    }

    public OnnxValueInfo? FindValueInfo(string name)
    {
        var v = Proto.ValueInfo.FirstOrDefault(x => x.Name == name) ?? Proto.Input.FirstOrDefault(x => x.Name == name) ?? Proto.Output.FirstOrDefault(x => x.Name == name);
        return v is null ? null : new OnnxValueInfo(v);
    }

    /// <summary>The element type of a tensor when the graph tells it (value info, input, output, initializer, producer).</summary>
    public OnnxElementType ElementTypeOf(string name) => ElementTypeOf(name, 0);

    private OnnxElementType ElementTypeOf(string name, int depth)
    {
        // Bounded walk: a cyclic or very deep chain gives "unknown", never a stack overflow.
        if (depth > 256)
            return OnnxElementType.Undefined;
        if (FindValueInfo(name) is { ElementType: not OnnxElementType.Undefined } vi)
            return vi.ElementType;
        if (TryGetInitializer(name, out var init))
            return init.ElementType;
        var producer = Producer(name);
        if (producer is null)
            return OnnxElementType.Undefined;
        switch (producer.OpType)
        {
            case "Cast":
                return (OnnxElementType)producer.GetInt("to", 0);
            case "QuantizeLinear" when producer.Inputs.Count > 2 && producer.Inputs[2].Length > 0:
                return ElementTypeOf(producer.Inputs[2], depth + 1);
            case "QuantizeLinear":
                return OnnxElementType.UInt8;
            case "DequantizeLinear":
                return producer.Inputs.Count > 1 ? ElementTypeOf(producer.Inputs[1], depth + 1) : OnnxElementType.Float;
            case "TopK":
                return producer.Outputs.Count > 1 && producer.Outputs[1] == name ? OnnxElementType.Int64 : ElementTypeOf(producer.Inputs[0], depth + 1);
            case "Shape" or "Size" or "ArgMax" or "ArgMin" or "NonZero" or "NonMaxSuppression":
                return OnnxElementType.Int64;
            case "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" or "IsNaN" or "IsInf":
                return OnnxElementType.Bool;
            case "Constant" when producer.GetTensor("value") is { } t:
                return t.ElementType;
            case "ConstantOfShape":
                return producer.GetTensor("value")?.ElementType ?? OnnxElementType.Float;
            case "Where" when producer.Inputs.Count > 1:
                return ElementTypeOf(producer.Inputs[1], depth + 1);
            case "CastLike" when producer.Inputs.Count > 1:
                return ElementTypeOf(producer.Inputs[1], depth + 1);
            case "If" or "Loop" or "Scan":
                return OnnxElementType.Undefined;
            case "MaxPool" when producer.Outputs.Count > 1 && producer.Outputs[1] == name:
                return OnnxElementType.Int64;
            default:
                // Most ops keep their first input's type.
                foreach (string input in producer.Inputs)
                    if (input.Length > 0)
                        return ElementTypeOf(input, depth + 1);
                return OnnxElementType.Undefined;
        }
    }

    /// <summary>
    /// Exposes an intermediate tensor as a graph output. The type and shape come from value_info, a graph input or an
    /// initializer when known; otherwise the element type is inferred through the producers and the shape left unknown
    /// (ORT needs a type); float when nothing tells.
    /// </summary>
    public void AddOutput(string tensorName)
    {
        if (IsGraphOutput(tensorName))
            return;
        if (!TensorNames().Contains(tensorName))
            throw new ArgumentException($"Tensor '{tensorName}' is not in the graph.", nameof(tensorName));
        var known = Proto.ValueInfo.FirstOrDefault(x => x.Name == tensorName) ?? Proto.Input.FirstOrDefault(x => x.Name == tensorName);
        if (known?.Type?.TensorType is { ElemType: > 0 })
        {
            Proto.Output.Add(known.Clone());
            return;
        }
        if (TryGetInitializer(tensorName, out var init))
        {
            Proto.Output.Add(OnnxValueInfo.Create(tensorName, init.ElementType, init.Dims.Select(d => (long?)d)).Proto);
            return;
        }
        var type = ElementTypeOf(tensorName);
        Proto.Output.Add(OnnxValueInfo.Create(tensorName, type == OnnxElementType.Undefined ? OnnxElementType.Float : type, null).Proto);
    }

    /// <summary>Nodes in an order where every producer comes before its consumers; throws naming a node on a cycle.</summary>
    public IReadOnlyList<OnnxNode> TopologicalOrder()
    {
        var nodes = Proto.Node;
        var producerIndex = new Dictionary<string, int>();
        for (int i = 0; i < nodes.Count; i++)
            foreach (string o in nodes[i].Output)
                if (o.Length > 0)
                    producerIndex.TryAdd(o, i);
        var pending = new int[nodes.Count];
        var dependents = new List<int>[nodes.Count];
        for (int i = 0; i < nodes.Count; i++)
        {
            dependents[i] = [];
        }
        for (int i = 0; i < nodes.Count; i++)
            foreach (string input in nodes[i].Input.Concat(SubgraphOuterInputs(nodes[i])).Distinct())
                if (input.Length > 0 && producerIndex.TryGetValue(input, out int p) && p != i)
                {
                    pending[i]++;
                    dependents[p].Add(i);
                }
                else if (input.Length > 0 && producerIndex.TryGetValue(input, out p) && p == i)
                    throw new InvalidOnnxModelException($"{_model.Describe}: {new OnnxNode(nodes[i]).Describe} consumes its own output '{input}' (a cycle).");
        // Kahn's algorithm, stable: ready nodes are taken in their file order.
        var ready = new SortedSet<int>();
        for (int i = 0; i < nodes.Count; i++)
            if (pending[i] == 0)
                ready.Add(i);
        var order = new List<OnnxNode>(nodes.Count);
        while (ready.Count > 0)
        {
            int i = ready.Min;
            ready.Remove(i);
            order.Add(new OnnxNode(nodes[i]));
            foreach (int d in dependents[i])
                if (--pending[d] == 0)
                    ready.Add(d);
        }
        if (order.Count != nodes.Count)
        {
            int stuck = Enumerable.Range(0, nodes.Count).First(i => pending[i] > 0);
            var cyc = new OnnxNode(nodes[stuck]);
            throw new InvalidOnnxModelException($"{_model.Describe}: the graph has a cycle through {cyc.Describe} ({nodes.Count - order.Count} nodes never become ready).");
        }
        return order;
    }

    /// <summary>Reorders the node list topologically (after insertions at the end).</summary>
    public void SortTopologically()
    {
        var order = TopologicalOrder().Select(n => n.Proto).ToList();
        Proto.Node.Clear();
        Proto.Node.AddRange(order);
    }

    /// <summary>Removes initializers, value infos and nodes nothing uses any more (nodes only when side-effect free and not producing outputs).</summary>
    public int RemoveUnused()
    {
        int removed = 0;
        bool changed = true;
        while (changed)
        {
            changed = false;
            var used = new HashSet<string>(Proto.Output.Select(o => o.Name));
            foreach (var n in Proto.Node)
                foreach (string s in n.Input.Concat(SubgraphOuterInputs(n)))
                    used.Add(s);
            for (int i = Proto.Node.Count - 1; i >= 0; i--)
                if (Proto.Node[i].Output.All(o => o.Length == 0 || !used.Contains(o)))
                {
                    Proto.Node.RemoveAt(i);
                    removed++;
                    changed = true;
                }
            foreach (var t in Proto.Initializer.ToList())
                if (!used.Contains(t.Name))
                {
                    RemoveInitializer(t.Name);
                    changed = true;
                }
        }
        var names = new HashSet<string>(TensorNames());
        for (int i = Proto.ValueInfo.Count - 1; i >= 0; i--)
            if (!names.Contains(Proto.ValueInfo[i].Name))
                Proto.ValueInfo.RemoveAt(i);
        return removed;
    }
}

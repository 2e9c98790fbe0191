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
    public string FreshName(string prefix) => Names().Fresh(prefix);

    /// <summary>
    /// Every name in use, for a pass that makes many fresh names: <see cref="NameScope.Fresh"/> is then constant time
    /// where <see cref="FreshName"/> scans the graph. Names the pass adds another way must be <see cref="NameScope.Reserve"/>d.
    /// </summary>
    public NameScope Names()
    {
        var used = new HashSet<string>(TensorNames(), StringComparer.Ordinal);
        foreach (var n in Proto.Node)
            used.Add(n.Name);
        foreach (var v in Proto.Output.Concat(Proto.ValueInfo))
            used.Add(v.Name);
        return new NameScope(used);
    }

    /// <summary>The names a graph uses, and fresh ones handed out so far.</summary>
    internal sealed class NameScope(HashSet<string> used)
    {
        private readonly Dictionary<string, long> _nextSuffix = new(StringComparer.Ordinal);

        /// <summary>The prefix itself when unused, else prefix_1, prefix_2, ... (the first free one); reserved from now on.</summary>
        public string Fresh(string prefix)
        {
            if (used.Add(prefix))
                return prefix;
            // Suffixes below the last one handed out for this prefix are taken already.
            for (long i = _nextSuffix.GetValueOrDefault(prefix, 1); ; i++)
            {
                string name = $"{prefix}_{i}";
                if (used.Add(name))
                {
                    _nextSuffix[prefix] = i + 1;
                    return name;
                }
            }
        }

        /// <summary>Marks a name as used.</summary>
        public void Reserve(string name) => used.Add(name);
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

    /// <summary>Removes many nodes in one pass over the node list (<see cref="RemoveNode"/> scans it per node).</summary>
    public int RemoveNodes(IEnumerable<NodeProto> nodes)
    {
        // By reference: protobuf messages compare by value, and two identical nodes are still two nodes.
        var remove = new HashSet<NodeProto>(nodes, ReferenceEqualityComparer.Instance);
        if (remove.Count == 0)
            return 0;
        var kept = Proto.Node.Where(n => !remove.Contains(n)).ToList();
        int removed = Proto.Node.Count - kept.Count;
        Proto.Node.Clear();
        Proto.Node.AddRange(kept);
        return removed;
    }

    /// <summary>Appends an initializer whose name is new (<see cref="SetInitializer"/> scans for one to replace).</summary>
    public void AddInitializer(OnnxTensor tensor) => Proto.Initializer.Add(tensor.Proto);

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
    public void ReplaceAllUses(string oldName, string newName) => ReplaceAllUses(new Dictionary<string, string> { [oldName] = newName });

    /// <summary>Renames every use of each key to its value in one pass (values are final: they are not renamed again).</summary>
    public void ReplaceAllUses(IReadOnlyDictionary<string, string> renames)
    {
        if (renames.Count > 0)
            RenameInputs(Proto.Node, renames);
    }

    private static void RenameInSubgraph(GraphProto g, IReadOnlyDictionary<string, string> renames)
    {
        // Names the subgraph defines itself shadow the outer ones.
        var defined = new HashSet<string>(g.Input.Select(v => v.Name).Concat(g.Initializer.Select(t => t.Name)).Concat(g.Node.SelectMany(n => n.Output)), StringComparer.Ordinal);
        var visible = defined.Overlaps(renames.Keys) ? renames.Where(kv => !defined.Contains(kv.Key)).ToDictionary() : renames;
        if (visible.Count > 0)
            RenameInputs(g.Node, visible);
    }

    /// <summary>Renames tensors in the nodes' inputs and in their subgraphs (where not shadowed).</summary>
    private static void RenameInputs(IEnumerable<NodeProto> nodes, IReadOnlyDictionary<string, string> renames)
    {
        foreach (var n in nodes)
        {
            for (int i = 0; i < n.Input.Count; i++)
                if (renames.TryGetValue(n.Input[i], out string? newName))
                    n.Input[i] = newName;
            foreach (var a in n.Attribute)
            {
                if (a.G is not null)
                    RenameInSubgraph(a.G, renames);
                foreach (var sub in a.Graphs)
                    RenameInSubgraph(sub, renames);
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
    public OnnxElementType ElementTypeOf(string name) => Index().ElementTypeOf(name);

    /// <summary>The graph's lookups in one pass, for passes that look up many tensors (see <see cref="GraphIndex"/>).</summary>
    public GraphIndex Index() => new(this);

    /// <summary>
    /// Exposes an intermediate tensor as a graph output. The type and shape come from value_info, a graph input or an
    /// initializer when known; otherwise the element type is inferred through the producers and the shape left unknown
    /// (ORT needs a type); float when nothing tells.
    /// </summary>
    public void AddOutput(string tensorName) => AddOutputs([tensorName]);

    /// <summary>Exposes several intermediate tensors as graph outputs (see <see cref="AddOutput"/>), in one pass over the graph.</summary>
    public void AddOutputs(IEnumerable<string> tensorNames)
    {
        var outputs = new HashSet<string>(Proto.Output.Select(o => o.Name), StringComparer.Ordinal);
        GraphIndex? index = null;
        HashSet<string>? names = null;
        foreach (string tensorName in tensorNames)
        {
            if (!outputs.Add(tensorName))
                continue;
            index ??= Index();
            names ??= new HashSet<string>(TensorNames(), StringComparer.Ordinal);
            if (!names.Contains(tensorName))
                throw new ArgumentException($"Tensor '{tensorName}' is not in the graph.", nameof(tensorNames));
            // Not a graph output yet, so what the index finds is its value_info or graph input.
            if (index.FindValueInfo(tensorName) is { Proto.Type.TensorType.ElemType: > 0 } known)
                Proto.Output.Add(known.Proto.Clone());
            else if (index.TryGetInitializer(tensorName, out var init))
                Proto.Output.Add(OnnxValueInfo.Create(tensorName, init.ElementType, init.Dims.Select(d => (long?)d)).Proto);
            else
            {
                var type = index.ElementTypeOf(tensorName);
                Proto.Output.Add(OnnxValueInfo.Create(tensorName, type == OnnxElementType.Undefined ? OnnxElementType.Float : type, null).Proto);
            }
        }
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

    /// <summary>
    /// Removes nodes no graph output depends on, then initializers and value infos nothing uses any more. Linear: one walk
    /// back from the graph outputs through the producers.
    /// </summary>
    public int RemoveUnused()
    {
        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in Proto.Node)
            foreach (string o in n.Output)
                if (o.Length > 0)
                    producers.TryAdd(o, n);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var live = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<string>(Proto.Output.Select(o => o.Name));
        while (pending.Count > 0)
        {
            string tensor = pending.Pop();
            if (!used.Add(tensor) || !producers.TryGetValue(tensor, out var node) || !live.Add(node))
                continue;
            foreach (string input in node.Input.Concat(SubgraphOuterInputs(node)))
                pending.Push(input);
        }
        int removed = RemoveNodes(Proto.Node.Where(n => !live.Contains(n)).ToList());
        var deadInitializers = Proto.Initializer.Where(t => !used.Contains(t.Name)).Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        if (deadInitializers.Count > 0)
        {
            var keep = Proto.Initializer.Where(t => !deadInitializers.Contains(t.Name)).ToList();
            Proto.Initializer.Clear();
            Proto.Initializer.AddRange(keep);
            // Older IRs list initializers as graph inputs too.
            var inputs = Proto.Input.Where(v => !deadInitializers.Contains(v.Name)).ToList();
            Proto.Input.Clear();
            Proto.Input.AddRange(inputs);
        }
        var names = new HashSet<string>(TensorNames());
        var valueInfos = Proto.ValueInfo.Where(v => names.Contains(v.Name)).ToList();
        Proto.ValueInfo.Clear();
        Proto.ValueInfo.AddRange(valueInfos);
        return removed;
    }
}

using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// The float graph of a <see cref="QdqPlan"/> with every quantization the plan would write simulated behind a switch:
/// a bool input <see cref="SwitchInput"/> holds one flag per compute node of the plan (<see cref="Switches"/>), and a
/// flag on makes the node read what it would read in the QDQ model (DequantizeLinear(QuantizeLinear(x)) of its
/// activations, the stored weights dequantized) and makes its quantized outputs reach every consumer that way. Flags
/// off give the float model. Pass-through ops and Concat follow their neighbours, as in the written model. One ONNX
/// Runtime session then measures any subset of quantized nodes without rebuilding anything.
/// </summary>
internal sealed class FakeQuantGraph
{
    public const string SwitchInput = "qatml_quantized_nodes";

    private readonly QdqPlan _plan;
    private readonly OnnxGraph _g;
    private readonly Dictionary<string, int> _index;
    private readonly Dictionary<string, string?> _switchOf = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _or = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _fakeQuantized = new(StringComparer.Ordinal);
    private readonly HashSet<string> _added = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _component = new(StringComparer.Ordinal);
    private readonly List<HashSet<string>> _componentNeighbours = [];

    private FakeQuantGraph(QdqPlan plan)
    {
        _plan = plan;
        _g = plan.Graph;
        Switches = [.. plan.ComputeNodes];
        _index = Switches.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i, StringComparer.Ordinal);
    }

    /// <summary>The compute nodes, in the order of the switch input's flags.</summary>
    public IReadOnlyList<string> Switches { get; }

    /// <summary>The switchable model.</summary>
    public required OnnxModel Model { get; init; }

    /// <summary>Rewrites the plan's (float) graph into the switchable one; the plan is not written afterwards.</summary>
    public static FakeQuantGraph Build(QdqPlan plan)
    {
        var fake = new FakeQuantGraph(plan) { Model = plan.Model };
        fake.Rewrite();
        return fake;
    }

    private void Rewrite()
    {
        _g.Proto.Input.Add(OnnxValueInfo.Create(SwitchInput, OnnxElementType.Bool, [Switches.Count]).Proto);
        FindFollowComponents();

        // Graph outputs a quantized node writes: the producer writes a raw tensor, the output selects.
        foreach (var (t, q) in _plan.Activations)
        {
            if (!_g.IsGraphOutput(t) || !_plan.Producers.TryGetValue(t, out string? producer) || SwitchOf(producer) is not { } s)
                continue;
            var writer = _g.Producer(t)!;
            string raw = _g.FreshName(t + "_raw");
            writer.Outputs[writer.Outputs.IndexOf(t)] = raw;
            Add("Where", [s, FakeQuantized(raw, q), raw], [t]);
        }

        // Every other edge into a quantized reader, or out of a quantized writer.
        foreach (var (t, q) in _plan.Activations)
        {
            string? producerSwitch = _plan.Producers.TryGetValue(t, out string? producer) ? SwitchOf(producer) : null;
            foreach (var consumer in _g.Consumers(t).Where(c => !_added.Contains(c.Name)).ToList())
            {
                string? readerSwitch = _plan.Precision.ContainsKey(consumer.Name) && _plan.ActivationInputs[consumer.Name].Contains(t) ? SwitchOf(consumer.Name) : null;
                if (Or(producerSwitch, readerSwitch) is not { } condition)
                    continue;
                string selected = Add("Where", [condition, FakeQuantized(t, q), t], [_g.FreshName(t + "_sel")]);
                for (int i = 0; i < consumer.Inputs.Count; i++)
                    if (consumer.Inputs[i] == t)
                        consumer.Inputs[i] = selected;
            }
        }

        // Constants: the stored integers dequantized once, selected by the node's flag.
        var dequantized = new Dictionary<object, string>(ReferenceEqualityComparer.Instance);
        foreach (var ((name, input), constant) in _plan.Constants)
            Select(name, input, constant, () => (constant.Source, constant.Dequantize()), dequantized);
        foreach (var ((name, input), bias) in _plan.Biases)
            Select(name, input, bias, () => (bias.Source, bias.Dequantize()), dequantized);

        _g.SortTopologically();
        if (_plan.NeedsOpset21)
            OnnxRewrites.UpgradeOpset(Model, 21);
    }

    private void Select(string node, int input, object key, Func<(OnnxTensor Source, float[] Values)> values, Dictionary<object, string> cache)
    {
        if (SwitchOf(node) is not { } s)
            return;
        var target = _plan.Node(node);
        if (!cache.TryGetValue(key, out string? name))
        {
            var (source, v) = values();
            name = _g.FreshName(source.Name + "_fq");
            _g.SetInitializer(OnnxTensor.FromFloats(name, source.Dims, v));
            cache[key] = name;
        }
        target.Inputs[input] = Add("Where", [s, name, target.Inputs[input]], [_g.FreshName(target.Inputs[input] + "_sel")]);
    }

    /// <summary>DequantizeLinear(Clip(QuantizeLinear(t))) with the plan's parameters, once per tensor.</summary>
    private string FakeQuantized(string t, ActivationQuantization q)
    {
        if (_fakeQuantized.TryGetValue(t, out string? fq))
            return fq;
        int before = _g.Proto.Node.Count;
        var (quantized, scale, zeroPoint) = QdqWriter.AddQuantize(_g, t, t, q);
        fq = _g.FreshName(t + "_fq");
        _g.AddNode("DequantizeLinear", [quantized, scale, zeroPoint], [fq], _g.FreshName(t + "_fq_DequantizeLinear"));
        for (int i = before; i < _g.Proto.Node.Count; i++)
            _added.Add(_g.Proto.Node[i].Name);
        _fakeQuantized[t] = fq;
        return fq;
    }

    /// <summary>
    /// A node's flag: its own for a compute node; for a pass-through or Concat node, the or of the compute nodes next
    /// to its chain of such nodes (it is quantized exactly when one of them is); none for a float node.
    /// </summary>
    private string? SwitchOf(string node)
    {
        if (_switchOf.TryGetValue(node, out string? s))
            return s;
        if (_index.TryGetValue(node, out int i))
        {
            string index = _g.FreshName("qatml_switch_index");
            _g.SetInitializer(OnnxTensor.FromInt64(index, [], [i]));
            s = Add("Gather", [SwitchInput, index], [_g.FreshName($"qatml_switch_{i}")]);
        }
        else if (_component.TryGetValue(node, out int c))
        {
            s = _componentNeighbours[c].Select(SwitchOf).Aggregate((string?)null, Or);
        }
        _switchOf[node] = s;
        return s;
    }

    private string? Or(string? a, string? b)
    {
        if (a is null || b is null || a == b)
            return a ?? b;
        string key = string.CompareOrdinal(a, b) < 0 ? a + "|" + b : b + "|" + a;
        if (!_or.TryGetValue(key, out string? result))
            _or[key] = result = Add("Or", [a, b], [_g.FreshName("qatml_or")]);
        return result;
    }

    private string Add(string opType, string[] inputs, string[] outputs)
    {
        var node = _g.AddNode(opType, inputs, outputs, _g.FreshName("qatml_" + opType));
        _added.Add(node.Name);
        return outputs[0];
    }

    /// <summary>Groups connected pass-through / Concat nodes and collects the compute nodes next to each group.</summary>
    private void FindFollowComponents()
    {
        var producers = _g.ProducerMap();
        var consumers = _g.ConsumerMap();
        string Owner(string tensor) => _plan.Producers.TryGetValue(tensor, out string? p) ? p : producers.TryGetValue(tensor, out var n) ? n.Name : "";
        foreach (string start in _plan.FollowNodes)
        {
            if (_component.ContainsKey(start))
                continue;
            int id = _componentNeighbours.Count;
            var neighbours = new HashSet<string>(StringComparer.Ordinal);
            _componentNeighbours.Add(neighbours);
            var stack = new Stack<string>([start]);
            _component[start] = id;
            while (stack.Count > 0)
            {
                string node = stack.Pop();
                var adjacent = _plan.ActivationInputs[node].Select(Owner)
                    .Concat(_plan.Node(node).Outputs.Where(o => o.Length > 0).SelectMany(o => consumers.TryGetValue(o, out var users)
                        ? users.Where(u => _plan.Precision.ContainsKey(u.Name) && _plan.ActivationInputs[u.Name].Contains(o)).Select(u => u.Name)
                        : []));
                foreach (string n in adjacent)
                {
                    if (_index.ContainsKey(n))
                        neighbours.Add(n);
                    else if (_plan.FollowNodes.Contains(n) && _component.TryAdd(n, id))
                        stack.Push(n);
                }
            }
        }
    }
}

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

    private readonly QdqPlan? _alternative;

    /// <summary>Fresh names for everything the rewrite adds (one scope: no scan of the graph per name).</summary>
    private readonly OnnxGraph.NameScope _names;

    /// <summary>The flag that is always on, for quantization the alternative mode applies unconditionally.</summary>
    private const string Always = "";

    private FakeQuantGraph(QdqPlan plan, QdqPlan? alternative)
    {
        _plan = plan;
        _alternative = alternative;
        _g = plan.Graph;
        if (alternative is null)
        {
            Switches = [.. plan.ComputeNodes];
        }
        else
        {
            var differing = plan.Constants.Where(c => alternative.Constants.TryGetValue(c.Key, out var other) && other.Bits != c.Value.Bits)
                .Select(c => c.Key.Node).ToHashSet(StringComparer.Ordinal);
            Switches = [.. plan.ComputeNodes.Where(differing.Contains)];
        }
        _names = _g.Names();
        _index = Switches.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i, StringComparer.Ordinal);
    }

    /// <summary>The compute nodes, in the order of the switch input's flags.</summary>
    public IReadOnlyList<string> Switches { get; }

    /// <summary>The switchable model.</summary>
    public required OnnxModel Model { get; init; }

    /// <summary>
    /// Rewrites the plan's (float) graph into the switchable one; the plan is not written afterwards. With an
    /// <paramref name="alternative"/> plan of the same graph whose activations are quantized alike (it differs in weight
    /// widths), every quantization is applied, and a flag chooses between the plan's and the alternative's constants of
    /// the nodes where they differ (4-bit or 8-bit weights).
    /// </summary>
    public static FakeQuantGraph Build(QdqPlan plan, QdqPlan? alternative = null)
    {
        if (alternative is not null && (alternative.Activations.Count != plan.Activations.Count
            || plan.Activations.Any(a => !alternative.Activations.TryGetValue(a.Key, out var other) || other != a.Value)))
            throw new ArgumentException("The alternative plan must quantize the same activations alike.", nameof(alternative));
        var fake = new FakeQuantGraph(plan, alternative) { Model = plan.Model };
        fake.Rewrite();
        return fake;
    }

    private void Rewrite()
    {
        _g.Proto.Input.Add(OnnxValueInfo.Create(SwitchInput, OnnxElementType.Bool, [Switches.Count]).Proto);
        _names.Reserve(SwitchInput);
        // The graph's producers and consumers before the rewrite: the nodes it adds read and write only new names.
        var producers = _g.ProducerMap();
        var consumers = _g.ConsumerMap();
        var graphOutputs = _g.Proto.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        FindFollowComponents(producers, consumers);

        // Graph outputs a quantized node writes: the producer writes a raw tensor, the output selects.
        foreach (var (t, q) in _plan.Activations)
        {
            if (!graphOutputs.Contains(t) || !_plan.Producers.TryGetValue(t, out string? producer) || SwitchOf(producer) is not { } s)
                continue;
            var writer = producers[t];
            string raw = _names.Fresh(t + "_raw");
            writer.Outputs[writer.Outputs.IndexOf(t)] = raw;
            if (s == Always)
                Add("Identity", [FakeQuantized(raw, q)], [t]);
            else
                Add("Where", [s, FakeQuantized(raw, q), raw], [t]);
        }

        // Every other edge into a quantized reader, or out of a quantized writer.
        foreach (var (t, q) in _plan.Activations)
        {
            string? producerSwitch = _plan.Producers.TryGetValue(t, out string? producer) ? SwitchOf(producer) : null;
            foreach (var consumer in (consumers.GetValueOrDefault(t) ?? []).Where(c => !_added.Contains(c.Name)))
            {
                string? readerSwitch = _plan.Precision.ContainsKey(consumer.Name) && _plan.ActivationInputs[consumer.Name].Contains(t) ? SwitchOf(consumer.Name) : null;
                if (Or(producerSwitch, readerSwitch) is not { } condition)
                    continue;
                string selected = condition == Always ? FakeQuantized(t, q) : Add("Where", [condition, FakeQuantized(t, q), t], [_names.Fresh(t + "_sel")]);
                for (int i = 0; i < consumer.Inputs.Count; i++)
                    if (consumer.Inputs[i] == t)
                        consumer.Inputs[i] = selected;
            }
        }

        // Constants: the stored integers dequantized once, selected by the node's flag.
        var dequantized = new Dictionary<object, string>(ReferenceEqualityComparer.Instance);
        foreach (var ((name, input), constant) in _plan.Constants)
        {
            QuantizedConstant? other = null;
            _alternative?.Constants.TryGetValue((name, input), out other);
            Select(name, input, constant, () => (constant.Source, constant.Dequantize()), other is null ? null : () => (other.Source, other.Dequantize()), dequantized);
        }
        foreach (var ((name, input), bias) in _plan.Biases)
        {
            QuantizedBias? other = null;
            _alternative?.Biases.TryGetValue((name, input), out other);
            Select(name, input, bias, () => (bias.Source, bias.Dequantize()), other is null ? null : () => (other.Source, other.Dequantize()), dequantized);
        }

        _g.RemoveUnused();
        _g.SortTopologically();
        if (_plan.NeedsOpset21)
            OnnxRewrites.UpgradeOpset(Model, 21);
    }

    /// <summary>The node's constant input: quantized when its flag is on, else float (or the alternative's, in that mode).</summary>
    private void Select(string node, int input, object key, Func<(OnnxTensor Source, float[] Values)> values,
        Func<(OnnxTensor Source, float[] Values)>? alternative, Dictionary<object, string> cache)
    {
        string? s = _alternative is not null ? (_index.ContainsKey(node) ? Flag(node) : Always) : SwitchOf(node);
        if (s is null)
            return;
        var target = _plan.Node(node);
        string name = Dequantized(key, values, cache);
        if (s == Always)
        {
            target.Inputs[input] = name;
            return;
        }
        string otherwise = alternative is null ? target.Inputs[input] : Dequantized(alternative, alternative, cache);
        target.Inputs[input] = Add("Where", [s, name, otherwise], [_names.Fresh(target.Inputs[input] + "_sel")]);
    }

    private string Dequantized(object key, Func<(OnnxTensor Source, float[] Values)> values, Dictionary<object, string> cache)
    {
        if (!cache.TryGetValue(key, out string? name))
        {
            var (source, v) = values();
            name = _names.Fresh(source.Name + "_fq");
            _g.AddInitializer(OnnxTensor.FromFloats(name, source.Dims, v));
            cache[key] = name;
        }
        return name;
    }

    /// <summary>DequantizeLinear(Clip(QuantizeLinear(t))) with the plan's parameters, once per tensor.</summary>
    private string FakeQuantized(string t, ActivationQuantization q)
    {
        if (_fakeQuantized.TryGetValue(t, out string? fq))
            return fq;
        int before = _g.Proto.Node.Count;
        var (quantized, scale, zeroPoint) = QdqWriter.AddQuantize(_g, _names, t, t, q);
        fq = _names.Fresh(t + "_fq");
        _g.AddNode("DequantizeLinear", [quantized, scale, zeroPoint], [fq], _names.Fresh(t + "_fq_DequantizeLinear"));
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
        if (_alternative is not null)
            s = _plan.Precision.ContainsKey(node) ? Always : null;
        else if (_index.ContainsKey(node))
            s = Flag(node);
        else if (_component.TryGetValue(node, out int c))
        {
            s = _componentNeighbours[c].Select(SwitchOf).Aggregate((string?)null, Or);
        }
        _switchOf[node] = s;
        return s;
    }

    /// <summary>The scalar bool of a switched node's flag.</summary>
    private string Flag(string node)
    {
        if (_flags.TryGetValue(node, out string? flag))
            return flag;
        int i = _index[node];
        string index = _names.Fresh("qatml_switch_index");
        _g.AddInitializer(OnnxTensor.FromInt64(index, [], [i]));
        return _flags[node] = Add("Gather", [SwitchInput, index], [_names.Fresh($"qatml_switch_{i}")]);
    }

    private readonly Dictionary<string, string> _flags = new(StringComparer.Ordinal);

    private string? Or(string? a, string? b)
    {
        if (a == Always || b == Always)
            return Always;
        if (a is null || b is null || a == b)
            return a ?? b;
        string key = string.CompareOrdinal(a, b) < 0 ? a + "|" + b : b + "|" + a;
        if (!_or.TryGetValue(key, out string? result))
            _or[key] = result = Add("Or", [a, b], [_names.Fresh("qatml_or")]);
        return result;
    }

    private string Add(string opType, string[] inputs, string[] outputs)
    {
        var node = _g.AddNode(opType, inputs, outputs, _names.Fresh("qatml_" + opType));
        _added.Add(node.Name);
        return outputs[0];
    }

    /// <summary>Groups connected pass-through / Concat nodes and collects the compute nodes next to each group.</summary>
    private void FindFollowComponents(Dictionary<string, OnnxNode> producers, Dictionary<string, List<OnnxNode>> consumers)
    {
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

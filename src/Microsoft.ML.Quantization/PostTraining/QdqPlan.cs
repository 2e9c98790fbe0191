using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>How one activation tensor is quantized: its width, signedness and parameters.</summary>
internal sealed record ActivationQuantization(int Bits, bool Signed, QuantizationParameters Params)
{
    /// <summary>
    /// Activations of 2 to 8 bits live in (u)int8, wider ones in (u)int16; below the container width a Clip keeps
    /// them in range. 4-bit activations are not stored as (u)int4: ONNX Runtime 1.31 turns DQ -> MaxPool -> Q into
    /// a MaxPool on the stored type and has no 4-bit MaxPool (the model then fails to load).
    /// </summary>
    public int ContainerBits => Bits <= 8 ? 8 : 16;

    public bool NeedsClip => Bits != ContainerBits;

    public OnnxElementType Type => (ContainerBits, Signed) switch
    {
        (8, true) => OnnxElementType.Int8,
        (8, false) => OnnxElementType.UInt8,
        (_, true) => OnnxElementType.Int16,
        _ => OnnxElementType.UInt16,
    };

    /// <summary>The value DequantizeLinear(Clip(QuantizeLinear(x))) gives back.</summary>
    public float FakeQuantize(float x)
    {
        var (lo, hi) = QuantizationParameters.GetTypeRange(Bits, Signed);
        int q = Math.Clamp(LinearQuantization.QuantizeLinear(x, Params.Scale, Params.ZeroPoint, ContainerBits, Signed), lo, hi);
        return (q - Params.ZeroPoint) * Params.Scale;
    }
}

/// <summary>A float constant read by a quantized node, stored as integers: per-channel scales along <see cref="Axis"/> or one.</summary>
internal sealed record QuantizedConstant(OnnxTensor Source, int? Axis, int Bits, sbyte[] Values, float[] Scales)
{
    public int Inner => Axis is int a ? checked((int)Source.Dims.Skip(a + 1).Aggregate(1L, (x, y) => x * y)) : Math.Max(Values.Length, 1);

    /// <summary>The float values the DequantizeLinear gives back.</summary>
    public float[] Dequantize()
    {
        var result = new float[Values.Length];
        int inner = Inner, channels = Scales.Length;
        for (int k = 0; k < result.Length; k++)
            result[k] = Values[k] * Scales[Axis is null ? 0 : k / inner % channels];
        return result;
    }
}

/// <summary>An int32 bias at scale s_in * s_w[c].</summary>
internal sealed record QuantizedBias(OnnxTensor Source, int[] Values, float[] Scales)
{
    public float[] Dequantize() => [.. Values.Select((v, c) => v * Scales[Scales.Length == 1 ? 0 : c])];
}

/// <summary>
/// What the QDQ writer will do, decided before the graph changes: which nodes are quantized and to what (or why they
/// stay float), the Relu/Clip folded into their producers, every activation tensor's quantization (tensors that must
/// share parameters, across pass-through ops and Concat, are given one), and every constant's stored integers. The
/// writer emits it; the sensitivity analysis builds a switchable fake-quantized float graph from the same plan.
/// </summary>
internal sealed class QdqPlan
{
    private static readonly HashSet<string> FoldingProducers = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"];

    /// <summary>The rule of op types the options list without a rule here: every float input and the first output.</summary>
    private static readonly OpRule AnyOp = new(null, null, null, null, OutputQuantization.Own);

    /// <summary>Why shape arithmetic and other subgraphs that do not depend on the data stay float.</summary>
    internal const string DataIndependentReason = "its outputs do not depend on the input data (shape arithmetic or constants)";

    /// <summary>Why integer and boolean ops (Shape, Cast to int, Equal...) stay float.</summary>
    internal const string NoFloatDataReason = "it reads and writes no float data tensors";

    /// <summary>A magnitude no 8-bit scale can span together with ordinary values (attention-mask sentinels near float max).</summary>
    internal const float SentinelMagnitude = 1e30f;

    private readonly Dictionary<string, OnnxNode> _nodes = new(StringComparer.Ordinal);

    private QdqPlan(OnnxModel model) => Model = model;

    public OnnxModel Model { get; }

    public OnnxGraph Graph => Model.Graph;

    /// <summary>Node names in topological order.</summary>
    public List<string> Order { get; } = [];

    /// <summary>The precision of every quantized node.</summary>
    public Dictionary<string, QuantizationPrecision> Precision { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, QuantizedNodeInfo> Infos { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, OpRule> Rules { get; } = new(StringComparer.Ordinal);

    /// <summary>Quantized producer -> the Relu/Clip folded into its output quantization.</summary>
    public Dictionary<string, string> Folds { get; } = new(StringComparer.Ordinal);

    /// <summary>Quantized nodes that only pass quantization on (pass-through ops, Concat): quantized when a neighbour computes in integers.</summary>
    public HashSet<string> FollowNodes { get; } = new(StringComparer.Ordinal);

    /// <summary>Every quantized activation tensor.</summary>
    public Dictionary<string, ActivationQuantization> Activations { get; } = new(StringComparer.Ordinal);

    /// <summary>Quantized activation inputs of each quantized node.</summary>
    public Dictionary<string, List<string>> ActivationInputs { get; } = new(StringComparer.Ordinal);

    /// <summary>The quantized node writing each quantized tensor (a folded Relu's output: its producer).</summary>
    public Dictionary<string, string> Producers { get; } = new(StringComparer.Ordinal);

    /// <summary>Constants (weights, int8 operands, embedding tables) by node and input index.</summary>
    public Dictionary<(string Node, int Input), QuantizedConstant> Constants { get; } = [];

    public Dictionary<(string Node, int Input), QuantizedBias> Biases { get; } = [];

    /// <summary>Quantized nodes that compute (not pass-through or Concat), in graph order: what the sensitivity analysis switches.</summary>
    public IEnumerable<string> ComputeNodes
    {
        get
        {
            var folded = Folds.Values.ToHashSet(StringComparer.Ordinal);
            return Order.Where(n => Precision.ContainsKey(n) && !FollowNodes.Contains(n) && !folded.Contains(n));
        }
    }

    public OnnxNode Node(string name) => _nodes[name];

    public bool NeedsOpset21 => ControlFlowInt4 || Activations.Values.Any(a => a.ContainerBits == 16) || Constants.Values.Any(c => c.Bits == 4);

    /// <summary>Weights inside control-flow bodies were stored as int4.</summary>
    public bool ControlFlowInt4 { get; private set; }

    /// <summary>
    /// Plans the quantization of <paramref name="model"/> (its nodes get unique names first). <paramref name="keptFloat"/>
    /// names nodes to leave float with the reason; <paramref name="precisionOverrides"/> wins over every precision option.
    /// <paramref name="learnedWeights"/> (AdaRound) replaces the round-to-nearest weights of the nodes it names when their
    /// width and axis match; bias correction then corrects the mean shift the learned rounding leaves (it learned on few rows).
    /// </summary>
    public static QdqPlan Create(OnnxModel model, CalibrationTable table, PostTrainingOptions options,
        IReadOnlyDictionary<string, string>? keptFloat = null, IReadOnlyDictionary<string, QuantizationPrecision>? precisionOverrides = null,
        IReadOnlyDictionary<string, float[]>? inputMeans = null, IReadOnlyDictionary<string, QuantizedConstant>? learnedWeights = null)
    {
        OnnxRewrites.NameNodes(model);
        var g = model.Graph;
        var plan = new QdqPlan(model);
        var initializers = g.Initializers.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var independent = QuantizableOps.DataIndependentTensors(g);
        var order = g.TopologicalOrder();
        // Lookups through maps built once: planning stays linear in the graph size.
        var index = g.Index();
        var consumers = g.ConsumerMap();
        foreach (var node in order)
        {
            plan._nodes[node.Name] = node;
            plan.Order.Add(node.Name);
        }

        var weighted = order.Where(n => n.Domain.Length == 0 && n.OpType is "Conv" or "ConvTranspose" or "Gemm" or "MatMul" && n.Inputs.Count > 1 && initializers.ContainsKey(n.Inputs[1])).ToList();
        OnnxNode? first = weighted.FirstOrDefault(), last = weighted.LastOrDefault();

        // 1. Which nodes are quantized, and to what. Control flow: the weights in its bodies, weight-only.
        var outputs = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        HashSet<string>? names = null;
        foreach (var node in order)
        {
            if (node.Domain.Length == 0 && node.OpType is "If" or "Loop" or "Scan")
            {
                int weightBits = Math.Min(options.Precision.WeightBits, options.ReduceRange ? 7 : 8);
                int weights = options.QuantizeControlFlowWeights ? ControlFlowWeights.Quantize(model, node, weightBits, options.WeightsPerChannel, names ??= ControlFlowWeights.AllNames(model)) : 0;
                plan.ControlFlowInt4 |= weights > 0 && weightBits == 4;
                plan.Infos[node.Name] = new QuantizedNodeInfo(node.Name, node.OpType, null, weights > 0
                    ? $"control flow: the {weights} Conv/ConvTranspose/Gemm/MatMul weights of its bodies are stored as int{(weightBits == 4 ? 4 : 8)} (weight-only; activations inside control flow stay float)"
                    : "control flow: its bodies are not quantized (activations inside control flow stay float)");
                continue;
            }
            OpRule rule = QuantizableOps.Get(node) ?? AnyOp;
            var acts = node.Inputs.Select((t, i) => (t, i))
                .Where(x => x.t.Length > 0 && !initializers.ContainsKey(x.t) && rule.IsActivationInput(x.i) && !independent.Contains(x.t) && index.ElementTypeOf(x.t) == OnnxElementType.Float)
                .Select(x => x.t).Distinct().ToList();
            var outs = rule.Output == OutputQuantization.None ? []
                : (rule.AllOutputs ? node.Outputs : node.Outputs.Take(1)).Where(o => o.Length > 0 && index.ElementTypeOf(o) == OnnxElementType.Float).ToList();
            var constants = node.Inputs.Select((t, i) => (t, i))
                .Where(x => x.t.Length > 0 && initializers.TryGetValue(x.t, out var c) && c.ElementType == OnnxElementType.Float && (x.i == rule.WeightInput || rule.IsConstantInput(x.i)))
                .ToList();
            string? reason = node.Domain.Length != 0 ? $"domain '{node.Domain}' is not quantized"
                : node.Outputs.Where(o => o.Length > 0).All(independent.Contains) ? DataIndependentReason
                : (acts.Count == 0 || node.OpType is "Shape" or "Size") && outs.Count == 0 ? NoFloatDataReason
                : !options.OpTypes.Contains(node.OpType) ? $"op type {node.OpType} is not quantized"
                : options.IsExcluded(node.Name, node.OpType) ? "excluded by the options"
                : keptFloat is not null && keptFloat.TryGetValue(node.Name, out string? kept) ? kept
                : RuleReason(node, rule, acts, table, initializers)
                ?? RangeReason(index, node, acts.Concat(IsGatherTable(node, initializers) ? [] : outs), table, initializers)
                ?? ConstantReason(constants.Select(c => initializers[c.t]));
            if (reason is not null)
            {
                plan.Infos[node.Name] = new QuantizedNodeInfo(node.Name, node.OpType, null, reason);
                continue;
            }
            QuantizationPrecision p = precisionOverrides is not null && precisionOverrides.TryGetValue(node.Name, out var forced) ? forced
                : options.NodePrecision.TryGetValue(node.Name, out var specific) ? specific
                : node == first && options.FirstLayerPrecision is { } f ? f
                : node == last && options.LastLayerPrecision is { } l ? l
                : options.Precision;
            plan.Precision[node.Name] = p;
            plan.Rules[node.Name] = rule;
            plan.ActivationInputs[node.Name] = acts;
            outputs[node.Name] = outs;
            if (rule.Output is OutputQuantization.SharesInput or OutputQuantization.Union && !IsGatherTable(node, initializers))
                plan.FollowNodes.Add(node.Name);
            plan.Infos[node.Name] = new QuantizedNodeInfo(node.Name, node.OpType, p, null);
        }

        // 2. Relu / Clip(0, >= max) after a quantized op: the op writes the activation's output, whose uint8 (or
        //    zero-point-0) quantization clamps at zero exactly as the activation did.
        foreach (var node in order.Where(n => plan.Precision.ContainsKey(n.Name) && FoldingProducers.Contains(n.OpType)))
        {
            string y = node.Outputs[0];
            if (!consumers.TryGetValue(y, out var users) || users.Count != 1 || index.IsGraphOutput(y) || !IsFoldableActivation(users[0], table, initializers))
                continue;
            var activation = users[0];
            plan.Folds[node.Name] = activation.Name;
            outputs[node.Name] = [activation.Outputs[0]];
            plan.Precision.Remove(activation.Name);
            plan.FollowNodes.Remove(activation.Name);
            plan.Infos[activation.Name] = new QuantizedNodeInfo(activation.Name, activation.OpType, plan.Precision[node.Name], null);
        }

        // 3. Pass-through ops and Concat are quantized only next to a node computing in integers (through chains of
        //    them): between float nodes they would add rounding and no integer kernel.
        PruneFollowNodes(plan, index, consumers, outputs);

        // 4. Activation tensors: a quantized node's outputs take its ActivationBits; a tensor no quantized node writes
        //    (a graph input, a float node's output) takes the widest of its quantized readers'; TensorBits wins.
        var bits = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (name, p) in plan.Precision)
            foreach (string t in outputs[name])
            {
                bits[t] = p.ActivationBits;
                plan.Producers[t] = name;
            }
        foreach (var (name, p) in plan.Precision)
            foreach (string t in plan.ActivationInputs[name])
                if (!plan.Producers.ContainsKey(t))
                    bits[t] = Math.Max(p.ActivationBits, bits.GetValueOrDefault(t));
        foreach (var (t, b) in options.TensorBits)
            if (bits.ContainsKey(t))
                bits[t] = b;

        // 5. Tensors that must share parameters: pass-through inputs and outputs, Concat inputs and output.
        var classes = new UnionFind();
        var fixedParams = new Dictionary<string, ActivationQuantization>(StringComparer.Ordinal);
        foreach (var (name, rule) in plan.Rules.Where(r => plan.Precision.ContainsKey(r.Key)))
        {
            var node = plan._nodes[name];
            if (IsGatherTable(node, initializers))
                continue; // its output takes the table's parameters, set with the constants below
            if (rule.Output == OutputQuantization.SharesInput && plan.ActivationInputs[name].Count > 0)
                foreach (string o in outputs[name])
                    classes.Union(plan.ActivationInputs[name][0], o);
            else if (rule.Output == OutputQuantization.Union)
                foreach (string t in plan.ActivationInputs[name])
                    classes.Union(t, outputs[name][0]);
        }

        // 6. Constants: weights per output channel, other operands and embedding tables per tensor.
        var quantizedConstants = new Dictionary<string, QuantizedConstant>(StringComparer.Ordinal);
        foreach (var (name, p) in plan.Precision)
        {
            var node = plan._nodes[name];
            var rule = plan.Rules[name];
            for (int i = 0; i < node.Inputs.Count; i++)
            {
                if (node.Inputs[i].Length == 0 || !initializers.TryGetValue(node.Inputs[i], out var tensor) || tensor.ElementType != OnnxElementType.Float)
                    continue;
                if (i != rule.WeightInput && !rule.IsConstantInput(i))
                    continue;
                bool weight = i == rule.WeightInput;
                int constantBits = weight ? Math.Min(p.WeightBits, options.ReduceRange ? 7 : 8) : 8;
                int? axis = weight && options.WeightsPerChannel ? QuantizableOps.WeightAxis(node, i, tensor) : null;
                string key = $"{tensor.Name}|{axis}|{constantBits}";
                if (weight && learnedWeights is not null && learnedWeights.TryGetValue(name, out var learned)
                    && learned.Source.Name == tensor.Name && learned.Axis == axis && learned.Bits == constantBits && learned.Values.Length == tensor.ElementCount)
                    plan.Constants[(name, i)] = learned;
                else if (!quantizedConstants.TryGetValue(key, out var constant))
                    plan.Constants[(name, i)] = quantizedConstants[key] = QuantizeConstant(tensor, axis, constantBits, table);
                else
                    plan.Constants[(name, i)] = constant;
                var stored = plan.Constants[(name, i)];
                if (IsGatherTable(node, initializers) && i == 0)
                    foreach (string o in outputs[name])
                        fixedParams[o] = new ActivationQuantization(8, true, new QuantizationParameters(stored.Scales[0], 0));
            }
        }

        // 7. Parameters per class: the union of the members' ranges (Softmax outputs on [0, 1]), the widest width.
        bool symmetric = options.EffectiveSymmetricActivations;
        var members = bits.Keys.GroupBy(classes.Find, StringComparer.Ordinal);
        foreach (var group in members)
        {
            var fixedMember = group.FirstOrDefault(fixedParams.ContainsKey);
            if (fixedMember is not null)
            {
                foreach (string t in group)
                    plan.Activations[t] = fixedParams[fixedMember];
                continue;
            }
            float min = float.PositiveInfinity, max = float.NegativeInfinity;
            foreach (string t in group)
            {
                var (lo, hi) = Range(plan, t, table, options);
                min = MathF.Min(min, lo);
                max = MathF.Max(max, hi);
            }
            int b = group.Max(t => bits[t]);
            bool signed = symmetric && min < 0;
            var quantization = new ActivationQuantization(b, signed, QuantizationParameters.Compute(min, max, b, signed, symmetric && signed));
            foreach (string t in group)
                plan.Activations[t] = quantization;
        }

        // 8. Biases of Conv/ConvTranspose/Gemm: int32 at the input scale times each channel's weight scale; with the
        //    input's channel means, corrected by the mean error the weights' rounding adds (a bias is added if needed).
        OnnxGraph.NameScope? fresh = null;
        foreach (var (name, rule) in plan.Rules.Where(r => plan.Precision.ContainsKey(r.Key) && r.Value.BiasInput is not null).ToList())
        {
            var node = plan._nodes[name];
            int bi = rule.BiasInput!.Value;
            if (!plan.Constants.TryGetValue((name, rule.WeightInput!.Value), out var weight) || !plan.Activations.TryGetValue(node.Inputs[0], out var input))
                continue;
            float[]? correction = inputMeans is not null && inputMeans.TryGetValue(node.Inputs[0], out float[]? means) ? BiasCorrection.MeanError(node, weight, means) : null;
            if ((node.Inputs.Count <= bi || node.Inputs[bi].Length == 0) && correction is not null)
            {
                var zeros = OnnxTensor.FromFloats((fresh ??= g.Names()).Fresh(name + "_bias"), [correction.Length], new float[correction.Length]);
                g.AddInitializer(zeros);
                initializers[zeros.Name] = zeros;
                while (node.Inputs.Count <= bi)
                    node.Inputs.Add("");
                node.Inputs[bi] = zeros.Name;
            }
            if (node.Inputs.Count <= bi || !initializers.TryGetValue(node.Inputs[bi], out var bias) || bias.ElementType != OnnxElementType.Float || bias.Dims.Length != 1)
                continue;
            if (weight.Scales.Length > 1 && weight.Scales.Length != bias.Dims[0])
                continue;
            if (correction is not null && correction.Length == bias.Dims[0])
                bias = OnnxTensor.FromFloats(bias.Name, bias.Dims, bias.ToFloatArray().Select((b, c) => b - correction[c]).ToArray());
            plan.Biases[(name, bi)] = QuantizeBias(bias, input.Params.Scale, weight.Scales);
        }
        return plan;
    }

    /// <summary>The calibrated range of a tensor as the writer uses it (Softmax outputs: [0, 1]; folded pre-activations: the activation's).</summary>
    private static (float Min, float Max) Range(QdqPlan plan, string tensor, CalibrationTable table, PostTrainingOptions options)
    {
        if (options.SoftmaxUnitRange && plan.Producers.TryGetValue(tensor, out string? producer) && plan.Node(producer).OpType == "Softmax")
            return (0f, 1f);
        var entry = table[tensor];
        return (entry.RangeMin[0], entry.RangeMax[0]);
    }

    private static bool IsGatherTable(OnnxNode node, Dictionary<string, OnnxTensor> initializers)
        => node.OpType == "Gather" && node.Domain.Length == 0 && node.Inputs.Count > 1 && initializers.ContainsKey(node.Inputs[0]);

    /// <summary>Op-specific reasons to stay float.</summary>
    private static string? RuleReason(OnnxNode node, OpRule rule, List<string> acts, CalibrationTable table, Dictionary<string, OnnxTensor> initializers)
    {
        if (rule.Output == OutputQuantization.Union && acts.Count != node.Inputs.Count(i => i.Length > 0))
            return "some of its inputs are constants, integer or shape tensors (a quantized Concat needs every input quantized on one scale)";
        if (rule.Output == OutputQuantization.SharesInput && !IsGatherTable(node, initializers) && (acts.Count == 0 || acts[0] != node.Inputs[0]))
            return "its data input is not a float activation";
        if (node.OpType == "Pad" && (node.GetString("mode") ?? "constant") == "constant" && node.Inputs.Count > 2 && node.Inputs[2].Length > 0)
        {
            if (!initializers.TryGetValue(node.Inputs[2], out var value) || value.ElementType != OnnxElementType.Float)
                return "its pad value is not a float constant";
            float v = value.ToFloatArray().FirstOrDefault();
            if (v != 0 && table.TryGetEntry(node.Inputs[0], out var e) && (v < e.RangeMin[0] || v > e.RangeMax[0]))
                return $"its pad value {v} lies outside its input's range, which the output shares";
        }
        return null;
    }

    /// <summary>A tensor without a calibrated range, or with one no scale can use.</summary>
    private static string? RangeReason(GraphIndex g, OnnxNode node, IEnumerable<string> tensors, CalibrationTable table, Dictionary<string, OnnxTensor> initializers)
    {
        foreach (string t in tensors)
        {
            if (!table.TryGetEntry(t, out var entry))
            {
                if (FoldableActivationOutput(g, node, t, table, initializers))
                    continue;
                // A Relu whose producer stays float: its input was never calibrated, because the pair is quantized as one.
                if (node.OpType is "Relu" or "Clip" && g.Producer(t) is { } producer && FoldingProducers.Contains(producer.OpType) && g.Consumers(t).Count == 1)
                    return $"it is quantized together with '{producer.Name}' (folded into its output), which stays float";
                return $"the calibration table has no range for tensor '{t}'";
            }
            float magnitude = MathF.Max(MathF.Abs(entry.RangeMin[0]), MathF.Abs(entry.RangeMax[0]));
            if (magnitude >= SentinelMagnitude)
                return $"tensor '{t}' reaches {(entry.RangeMin[0] <= -SentinelMagnitude ? entry.RangeMin[0] : entry.RangeMax[0]):g3} (a mask sentinel near float max), which no scale represents with its other values";
        }
        return null;
    }

    private static string? ConstantReason(IEnumerable<OnnxTensor> constants)
    {
        foreach (var c in constants)
        {
            float magnitude = 0;
            foreach (float v in c.ToFloatArray())
                magnitude = float.IsFinite(v) ? MathF.Max(magnitude, MathF.Abs(v)) : float.PositiveInfinity;
            if (magnitude >= SentinelMagnitude)
                return $"constant '{c.Name}' holds {magnitude:g3} (a mask sentinel or infinity), which no scale represents";
        }
        return null;
    }

    /// <summary>A pre-activation output the calibration skipped because a foldable Relu/Clip follows it.</summary>
    private static bool FoldableActivationOutput(GraphIndex g, OnnxNode node, string tensor, CalibrationTable table, Dictionary<string, OnnxTensor> initializers)
    {
        if (!FoldingProducers.Contains(node.OpType) || node.Outputs[0] != tensor || g.IsGraphOutput(tensor))
            return false;
        var users = g.Consumers(tensor);
        return users.Count == 1 && IsFoldableActivation(users[0], table, initializers);
    }

    private static bool IsFoldableActivation(OnnxNode activation, CalibrationTable table, Dictionary<string, OnnxTensor> initializers)
    {
        if (activation.Domain.Length != 0 || !table.TryGetEntry(activation.Outputs[0], out var entry) || entry.RangeMin[0] < 0)
            return false;
        if (activation.OpType == "Relu")
            return true;
        if (activation.OpType != "Clip")
            return false;
        // Clip(0, hi): folded when the calibrated range already ends at or below hi (the Q saturates there).
        float lo = activation.Inputs.Count > 1 && activation.Inputs[1].Length > 0
            ? (initializers.TryGetValue(activation.Inputs[1], out var l) ? l.ToFloatArray()[0] : float.NaN) : float.NegativeInfinity;
        float hi = activation.Inputs.Count > 2 && activation.Inputs[2].Length > 0
            ? (initializers.TryGetValue(activation.Inputs[2], out var h) ? h.ToFloatArray()[0] : float.NaN) : float.PositiveInfinity;
        return lo == 0 && entry.RangeMax[0] <= hi;
    }

    /// <summary>
    /// Pass-through and Concat nodes with no integer-computing neighbour (through chains of such nodes) stay float. A
    /// node is kept when a neighbour (the writer of an input it quantizes, or a quantized reader of its output) is a
    /// computing node or a kept one: reachability from the computing nodes, one visit per edge.
    /// </summary>
    private static void PruneFollowNodes(QdqPlan plan, GraphIndex index, Dictionary<string, List<OnnxNode>> consumers, Dictionary<string, List<string>> outputs)
    {
        // A folded activation's output is written by the producer it is folded into.
        var foldedWriters = plan.Folds.ToDictionary(f => plan.Node(f.Value).Outputs[0], f => f.Key, StringComparer.Ordinal);
        IEnumerable<string> Neighbours(string name)
        {
            foreach (string t in plan.ActivationInputs[name])
            {
                if (index.Producer(t) is { } p)
                    yield return p.Name;
                if (foldedWriters.TryGetValue(t, out string? writer))
                    yield return writer;
            }
            foreach (string o in outputs[name])
                if (consumers.TryGetValue(o, out var users))
                    foreach (var u in users)
                        if (plan.ActivationInputs.TryGetValue(u.Name, out var reads) && reads.Contains(o))
                            yield return u.Name;
        }

        var active = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Queue<string>();
        var dependents = new Dictionary<string, List<string>>(StringComparer.Ordinal); // follow node -> follow nodes next to it
        foreach (string name in plan.FollowNodes)
        {
            foreach (string n in Neighbours(name))
            {
                if (!plan.Precision.ContainsKey(n))
                    continue;
                if (!plan.FollowNodes.Contains(n))
                {
                    if (active.Add(name))
                        pending.Enqueue(name);
                }
                else
                {
                    if (!dependents.TryGetValue(n, out var list))
                        dependents[n] = list = [];
                    list.Add(name);
                }
            }
        }
        while (pending.Count > 0)
            foreach (string next in dependents.GetValueOrDefault(pending.Dequeue()) ?? [])
                if (active.Add(next))
                    pending.Enqueue(next);

        foreach (string name in plan.FollowNodes.Where(n => !active.Contains(n)).ToList())
        {
            plan.Precision.Remove(name);
            plan.FollowNodes.Remove(name);
            var node = plan.Node(name);
            plan.Infos[name] = new QuantizedNodeInfo(name, node.OpType, null, "it only passes quantization on, and no neighbour computes in integers");
        }
    }

    internal static QuantizedConstant QuantizeConstant(OnnxTensor tensor, int? axis, int bits, CalibrationTable table)
    {
        float[] values = tensor.ToFloatArray();
        long[] dims = tensor.Dims;
        int channels = axis is int a ? checked((int)dims[a]) : 1;
        int inner = axis is int ax ? checked((int)dims.Skip(ax + 1).Aggregate(1L, (x, y) => x * y)) : Math.Max(values.Length, 1);
        int qmax = (1 << (bits - 1)) - 1;
        var scales = new float[channels];
        // Per-channel max|w|: from the table when it calibrated this weight the same way, else from the values.
        bool fromTable = table.TryGetEntry(tensor.Name, out var entry) && entry.Kind == TensorKind.Weight && entry.Axis == axis && entry.RangeMax.Count == channels;
        for (int c = 0; c < channels; c++)
        {
            float absMax = 0;
            if (fromTable)
                absMax = MathF.Max(-entry!.RangeMin[c], entry.RangeMax[c]);
            else
                for (int o = 0; o < values.Length / Math.Max(1, channels * inner); o++)
                    foreach (float v in values.AsSpan((o * channels + c) * inner, inner))
                        absMax = MathF.Max(absMax, MathF.Abs(v));
            scales[c] = absMax > 0 ? absMax / qmax : 1f;
        }
        var q = new sbyte[values.Length];
        for (int k = 0; k < values.Length; k++)
        {
            int c = axis is null ? 0 : k / inner % channels;
            q[k] = (sbyte)Math.Clamp(LinearQuantization.QuantizeLinear(values[k], scales[c], 0, 8, isSigned: true), -qmax, qmax);
        }
        return new QuantizedConstant(tensor, axis, bits, q, scales);
    }

    internal static QuantizedBias QuantizeBias(OnnxTensor bias, float inputScale, float[] weightScales)
    {
        float[] b = bias.ToFloatArray();
        int channels = b.Length;
        bool perChannel = weightScales.Length > 1;
        var scales = new float[perChannel ? channels : 1];
        for (int c = 0; c < scales.Length; c++)
            scales[c] = inputScale * weightScales[c];
        var q = new int[channels];
        for (int c = 0; c < channels; c++)
        {
            float s = scales[perChannel ? c : 0];
            double v = Math.Round((double)b[c] / s, MidpointRounding.ToEven);
            q[c] = (int)Math.Clamp(v, int.MinValue, int.MaxValue);
        }
        return new QuantizedBias(bias, q, scales);
    }

    /// <summary>Disjoint sets of tensor names.</summary>
    private sealed class UnionFind
    {
        private readonly Dictionary<string, string> _parent = new(StringComparer.Ordinal);

        public string Find(string x)
        {
            // Iterative with path compression: a chain of 50k pass-through tensors is one class.
            string root = x;
            while (_parent.TryGetValue(root, out string? p) && p != root)
                root = p;
            while (x != root)
            {
                string next = _parent[x];
                _parent[x] = root;
                x = next;
            }
            return root;
        }

        public void Union(string a, string b)
        {
            string ra = Find(a), rb = Find(b);
            if (ra != rb)
                _parent[ra] = rb;
        }
    }
}

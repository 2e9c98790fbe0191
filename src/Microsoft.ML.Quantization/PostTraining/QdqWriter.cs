using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>The quantized graph and what happened to each node.</summary>
internal sealed record QdqResult(OnnxModel Model, IReadOnlyList<QuantizedNodeInfo> Nodes);

/// <summary>
/// Turns a prepared float graph plus a <see cref="CalibrationTable"/> into a QDQ graph in the form ONNX Runtime fuses
/// into integer kernels: weights stored as int8/int4 with a DequantizeLinear (per channel), biases as int32 with scale
/// s_in * s_w, one QuantizeLinear per quantized activation and one DequantizeLinear per consumer (a shared DQ would
/// stop ORT from grouping the node), Relu/Clip folded into the preceding op's output quantization, Concat inputs
/// and output on one shared scale. Nodes that stay float are listed with the reason.
/// </summary>
internal static class QdqWriter
{
    private static readonly HashSet<string> WeightedOps = ["Conv", "Gemm", "MatMul"];
    private static readonly HashSet<string> FoldingProducers = ["Conv", "Gemm", "MatMul", "Add"];

    public static QdqResult Quantize(OnnxModel model, CalibrationTable table, PostTrainingOptions options)
    {
        var g = model.Graph;
        // Every lookup goes through maps built once (and rebuilt after the steps that edit the graph): the writer
        // stays linear in the graph size.
        var index = g.Index();
        var names = g.Names();
        var initializers = g.Initializers.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var order = g.TopologicalOrder();
        var infos = new Dictionary<string, QuantizedNodeInfo>(StringComparer.Ordinal);
        var precision = new Dictionary<OnnxNode, QuantizationPrecision>();

        var weighted = order.Where(n => n.Domain.Length == 0 && WeightedOps.Contains(n.OpType) && n.Inputs.Count > 1 && initializers.ContainsKey(n.Inputs[1])).ToList();
        OnnxNode? first = weighted.FirstOrDefault(), last = weighted.LastOrDefault();

        // 1. Which nodes are quantized, and to what.
        foreach (var node in order)
        {
            string? reason = null;
            if (node.Domain.Length != 0)
                reason = $"domain '{node.Domain}' is not quantized";
            else if (!options.OpTypes.Contains(node.OpType))
                reason = $"op type {node.OpType} is not quantized";
            else if (options.IsExcluded(node.Name, node.OpType))
                reason = "excluded by the options";
            else if (ActivationInputs(index, node, initializers).Concat(FloatOutputs(index, node)).FirstOrDefault(t => !table.TryGetEntry(t, out _)) is { } missing
                     && !FoldableActivationOutput(index, node, missing, table))
                reason = $"the calibration table has no range for tensor '{missing}'";
            if (reason is not null)
            {
                infos[node.Name] = new QuantizedNodeInfo(node.Name, node.OpType, null, reason);
                continue;
            }
            QuantizationPrecision p = options.NodePrecision.TryGetValue(node.Name, out var specific) ? specific
                : node == first && options.FirstLayerPrecision is { } f ? f
                : node == last && options.LastLayerPrecision is { } l ? l
                : options.Precision;
            precision[node] = p;
            infos[node.Name] = new QuantizedNodeInfo(node.Name, node.OpType, p, null);
        }

        // 2. Relu / Clip(0, >= max) after a quantized op: the op writes the activation's output, whose uint8 (or
        //    zero-point-0) quantization clamps at zero exactly as the activation did.
        var folded = new List<Onnx.Proto.NodeProto>();
        foreach (var node in precision.Keys.ToList())
        {
            if (!FoldingProducers.Contains(node.OpType))
                continue;
            string y = node.Outputs[0];
            var users = index.Consumers(y);
            if (users.Count != 1 || index.IsGraphOutput(y) || !IsFoldableActivation(users[0], table, initializers))
                continue;
            var activation = users[0];
            node.Outputs[0] = activation.Outputs[0];
            folded.Add(activation.Proto);
            infos[activation.Name] = new QuantizedNodeInfo(activation.Name, activation.OpType, precision[node], null);
        }
        g.RemoveNodes(folded);

        // 3. Activation tensors and their widths: a quantized node's outputs take its ActivationBits; a tensor no
        //    quantized node writes (a graph input, a float node's output) takes the widest of its quantized readers.
        var bits = new Dictionary<string, int>(StringComparer.Ordinal);
        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (node, p) in precision)
            foreach (string t in FloatOutputs(index, node))
            {
                bits[t] = p.ActivationBits;
                written.Add(t);
            }
        foreach (var (node, p) in precision)
            foreach (string t in ActivationInputs(index, node, initializers))
                if (!written.Contains(t))
                    bits[t] = Math.Max(p.ActivationBits, bits.GetValueOrDefault(t));

        // Concat: inputs and output on the union range, so ORT's QLinearConcat only copies.
        var ranges = bits.Keys.ToDictionary(t => t, t => (Min: table[t].RangeMin[0], Max: table[t].RangeMax[0]), StringComparer.Ordinal);
        foreach (var node in precision.Keys.Where(n => n.OpType == "Concat"))
        {
            var members = ActivationInputs(index, node, initializers).Append(node.Outputs[0]).Where(ranges.ContainsKey).ToList();
            var union = (Min: members.Min(t => ranges[t].Min), Max: members.Max(t => ranges[t].Max));
            foreach (string t in members)
                ranges[t] = union;
        }

        bool symmetric = options.EffectiveSymmetricActivations;
        var activationParams = new Dictionary<string, ActivationQuantization>(StringComparer.Ordinal);
        foreach (var (t, b) in bits)
        {
            var (min, max) = ranges[t];
            bool signed = symmetric && min < 0;
            var qp = QuantizationParameters.Compute(min, max, b, signed, symmetric && signed);
            activationParams[t] = new ActivationQuantization(b, signed, qp);
        }

        // 4. Q once per tensor, a DQ per consumer. The consumers are those of the graph after step 2: the nodes this
        //    step adds read only the names it makes.
        var producers = g.ProducerMap();
        var consumers = g.ConsumerMap();
        foreach (var (t, q) in activationParams)
        {
            producers.TryGetValue(t, out var producer);
            bool producerQuantized = producer is not null && precision.ContainsKey(producer);
            bool graphOutput = index.IsGraphOutput(t);
            string source = t;
            if (producerQuantized && graphOutput)
            {
                source = names.Fresh(t + "_float");
                producer!.Outputs[producer.Outputs.IndexOf(t)] = source;
            }
            string scale = AddScalar(g, names, t + "_scale", q.Params.Scale);
            string zeroPoint = AddZeroPoint(g, names, t + "_zero_point", q.Type, [q.Params.ZeroPoint], []);
            string quantized = names.Fresh(t + "_quantized");
            g.AddNode("QuantizeLinear", [source, scale, zeroPoint], [quantized], names.Fresh(t + "_QuantizeLinear"));
            if (q.NeedsClip)
            {
                var (lo, hi) = QuantizationParameters.GetTypeRange(q.Bits, q.Signed);
                string clipped = names.Fresh(t + "_clipped");
                string loName = AddZeroPoint(g, names, t + "_qmin", q.Type, [lo], []);
                string hiName = AddZeroPoint(g, names, t + "_qmax", q.Type, [hi], []);
                g.AddNode("Clip", [quantized, loName, hiName], [clipped], names.Fresh(t + "_Clip"));
                quantized = clipped;
            }
            foreach (var consumer in consumers.GetValueOrDefault(t) ?? [])
            {
                if (consumer.OpType is "QuantizeLinear" && consumer.Inputs[0] == source)
                    continue;
                if (!producerQuantized && !precision.ContainsKey(consumer))
                    continue; // a float consumer of a float producer keeps the float tensor
                string dq = names.Fresh(t + "_dq");
                g.AddNode("DequantizeLinear", [quantized, scale, zeroPoint], [dq], names.Fresh(t + "_DequantizeLinear"));
                for (int i = 0; i < consumer.Inputs.Count; i++)
                    if (consumer.Inputs[i] == t)
                        consumer.Inputs[i] = dq;
            }
            if (producerQuantized && graphOutput)
                g.AddNode("DequantizeLinear", [quantized, scale, zeroPoint], [t], names.Fresh(t + "_DequantizeLinear"));
        }

        // 5. Weights (per channel along the op's axis), other constants (per tensor), biases (int32).
        var weightScales = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var quantizedConstants = new Dictionary<string, OnnxNode>(StringComparer.Ordinal);
        var afterActivations = g.Index();
        foreach (var (node, p) in precision)
        {
            for (int i = 0; i < node.Inputs.Count; i++)
            {
                string name = node.Inputs[i];
                if (name.Length == 0 || !initializers.TryGetValue(name, out var tensor) || tensor.ElementType != OnnxElementType.Float)
                    continue;
                if (IsBias(node, i))
                    continue;
                int weightBits = Math.Min(p.WeightBits, options.ReduceRange ? 7 : 8);
                int? axis = WeightedOps.Contains(node.OpType) && i == 1 && options.WeightsPerChannel ? CalibrationPlan.WeightAxis(node, i, tensor) : null;
                int constantBits = WeightedOps.Contains(node.OpType) && i == 1 ? weightBits : 8;
                string key = $"{name}|{axis}|{constantBits}";
                string dq;
                if (!quantizedConstants.TryGetValue(key, out var shared))
                {
                    (shared, float[] scales) = QuantizeConstant(g, names, tensor, axis, constantBits, table);
                    quantizedConstants[key] = shared;
                    dq = shared.Outputs[0];
                    weightScales[dq] = scales;
                }
                else
                {
                    // A DQ per consumer, reading the same stored integers.
                    dq = names.Fresh(name + "_dq");
                    g.AddNode("DequantizeLinear", shared.Inputs, [dq], names.Fresh(name + "_DequantizeLinear")).With(shared);
                    weightScales[dq] = weightScales[shared.Outputs[0]];
                }
                node.Inputs[i] = dq;
            }
            if ((node.OpType is "Conv" or "Gemm") && node.Inputs.Count > 2 && initializers.TryGetValue(node.Inputs[2], out var bias)
                && bias.ElementType == OnnxElementType.Float && bias.Dims.Length == 1
                && weightScales.TryGetValue(node.Inputs[1], out float[]? ws)
                && afterActivations.Producer(node.Inputs[0]) is { OpType: "DequantizeLinear" } inputDq && TryScalar(afterActivations, inputDq.Inputs[1], out float inputScale))
            {
                node.Inputs[2] = QuantizeBias(g, names, bias, inputScale, ws);
            }
        }

        g.RemoveUnused();
        g.SortTopologically();
        bool needs21 = activationParams.Values.Any(a => a.Type is OnnxElementType.Int4 or OnnxElementType.UInt4 or OnnxElementType.Int16 or OnnxElementType.UInt16)
                       || g.Initializers.Any(t => t.ElementType is OnnxElementType.Int4 or OnnxElementType.UInt4);
        OnnxRewrites.UpgradeOpset(model, needs21 ? 21 : 13);
        OnnxValidator.Validate(model);
        var nodes = order.Select(n => infos[n.Name]).ToList();
        return new QdqResult(model, nodes);
    }

    private sealed record ActivationQuantization(int Bits, bool Signed, QuantizationParameters Params)
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
            (4, true) => OnnxElementType.Int4,
            (4, false) => OnnxElementType.UInt4,
            (8, true) => OnnxElementType.Int8,
            (8, false) => OnnxElementType.UInt8,
            (_, true) => OnnxElementType.Int16,
            _ => OnnxElementType.UInt16,
        };
    }

    private static IEnumerable<string> ActivationInputs(GraphIndex g, OnnxNode node, Dictionary<string, OnnxTensor> initializers)
    {
        // Shape-like inputs (Reshape's shape, Squeeze's axes) are int64 and never quantized.
        int count = node.OpType is "Reshape" or "Squeeze" or "Unsqueeze" ? 1 : node.Inputs.Count;
        for (int i = 0; i < count; i++)
        {
            string t = node.Inputs[i];
            if (t.Length > 0 && !initializers.ContainsKey(t) && g.ElementTypeOf(t) == OnnxElementType.Float)
                yield return t;
        }
    }

    private static IEnumerable<string> FloatOutputs(GraphIndex g, OnnxNode node)
        => node.Outputs.Take(1).Where(o => o.Length > 0 && g.ElementTypeOf(o) == OnnxElementType.Float);

    /// <summary>A pre-activation output the calibration skipped because a foldable Relu/Clip follows it.</summary>
    private static bool FoldableActivationOutput(GraphIndex g, OnnxNode node, string tensor, CalibrationTable table)
    {
        if (!FoldingProducers.Contains(node.OpType) || node.Outputs[0] != tensor || g.IsGraphOutput(tensor))
            return false;
        var users = g.Consumers(tensor);
        return users.Count == 1 && users[0].OpType is "Relu" or "Clip" && table.TryGetEntry(users[0].Outputs[0], out _);
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

    private static bool IsBias(OnnxNode node, int input) => (node.OpType is "Conv" or "Gemm") && input == 2;

    private static (OnnxNode Dq, float[] Scales) QuantizeConstant(OnnxGraph g, OnnxGraph.NameScope names, OnnxTensor tensor, int? axis, int bits, CalibrationTable table)
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
                for (int o = 0; o < values.Length / (channels * inner); o++)
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
        string stored = names.Fresh(tensor.Name + "_quantized");
        g.AddInitializer(bits == 4 ? OnnxTensor.FromInt4(stored, dims, q) : OnnxTensor.FromInt8(stored, dims, q));
        var type = bits == 4 ? OnnxElementType.Int4 : OnnxElementType.Int8;
        string scale, zeroPoint;
        if (axis is null)
        {
            scale = AddScalar(g, names, tensor.Name + "_scale", scales[0]);
            zeroPoint = AddZeroPoint(g, names, tensor.Name + "_zero_point", type, [0], []);
        }
        else
        {
            scale = names.Fresh(tensor.Name + "_scale");
            g.AddInitializer(OnnxTensor.FromFloats(scale, [channels], scales));
            zeroPoint = AddZeroPoint(g, names, tensor.Name + "_zero_point", type, new int[channels], [channels]);
        }
        string dq = names.Fresh(tensor.Name + "_dq");
        var node = g.AddNode("DequantizeLinear", [stored, scale, zeroPoint], [dq], names.Fresh(tensor.Name + "_DequantizeLinear"));
        if (axis is int axisValue)
            node.SetInt("axis", axisValue);
        return (node, scales);
    }

    private static string QuantizeBias(OnnxGraph g, OnnxGraph.NameScope names, OnnxTensor bias, float inputScale, float[] weightScales)
    {
        float[] b = bias.ToFloatArray();
        int channels = b.Length;
        bool perChannel = weightScales.Length > 1;
        if (perChannel && weightScales.Length != channels)
            throw new InvalidOperationException($"Bias '{bias.Name}' has {channels} values but its weight has {weightScales.Length} channel scales.");
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
        string stored = names.Fresh(bias.Name + "_quantized");
        g.AddInitializer(OnnxTensor.FromInt32(stored, [channels], q));
        string scale = names.Fresh(bias.Name + "_scale");
        g.AddInitializer(OnnxTensor.FromFloats(scale, perChannel ? [channels] : [], scales));
        string zeroPoint = names.Fresh(bias.Name + "_zero_point");
        g.AddInitializer(OnnxTensor.FromInt32(zeroPoint, perChannel ? [channels] : [], new int[scales.Length]));
        string dq = names.Fresh(bias.Name + "_dq");
        var node = g.AddNode("DequantizeLinear", [stored, scale, zeroPoint], [dq], names.Fresh(bias.Name + "_DequantizeLinear"));
        if (perChannel)
            node.SetInt("axis", 0);
        return dq;
    }

    private static bool TryScalar(GraphIndex g, string name, out float value)
    {
        value = 0;
        if (!g.TryGetInitializer(name, out var t) || t.ElementType != OnnxElementType.Float)
            return false;
        float[] v = t.ToFloatArray();
        if (v.Length != 1)
            return false;
        value = v[0];
        return true;
    }

    private static string AddScalar(OnnxGraph g, OnnxGraph.NameScope names, string name, float value)
    {
        string fresh = names.Fresh(name);
        g.AddInitializer(OnnxTensor.FromFloats(fresh, [], [value]));
        return fresh;
    }

    private static string AddZeroPoint(OnnxGraph g, OnnxGraph.NameScope names, string name, OnnxElementType type, int[] values, long[] dims)
    {
        string fresh = names.Fresh(name);
        OnnxTensor t = type switch
        {
            OnnxElementType.Int8 => OnnxTensor.FromInt8(fresh, dims, values.Select(v => (sbyte)v).ToArray()),
            OnnxElementType.UInt8 => OnnxTensor.FromUInt8(fresh, dims, values.Select(v => (byte)v).ToArray()),
            OnnxElementType.Int4 => OnnxTensor.FromInt4(fresh, dims, values.Select(v => (sbyte)v).ToArray()),
            OnnxElementType.UInt4 => OnnxTensor.FromUInt4(fresh, dims, values.Select(v => (byte)v).ToArray()),
            OnnxElementType.Int16 => OnnxTensor.FromInt16(fresh, dims, values.Select(v => (short)v).ToArray()),
            OnnxElementType.UInt16 => OnnxTensor.FromUInt16(fresh, dims, values.Select(v => (ushort)v).ToArray()),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Not a quantized type."),
        };
        g.AddInitializer(t);
        return fresh;
    }

    private static OnnxNode With(this OnnxNode node, OnnxNode copyAttributesFrom)
    {
        foreach (var a in copyAttributesFrom.Proto.Attribute)
            node.Proto.Attribute.Add(a.Clone());
        return node;
    }
}

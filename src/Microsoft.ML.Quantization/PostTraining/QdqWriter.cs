using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>The quantized graph and what happened to each node.</summary>
internal sealed record QdqResult(OnnxModel Model, IReadOnlyList<QuantizedNodeInfo> Nodes);

/// <summary>
/// Turns a prepared float graph plus a <see cref="CalibrationTable"/> into a QDQ graph in the form ONNX Runtime fuses
/// into integer kernels: weights stored as int8/int4 with a DequantizeLinear (per channel), biases as int32 with scale
/// s_in * s_w, one QuantizeLinear per quantized activation and one DequantizeLinear per consumer (a shared DQ would
/// stop ORT from grouping the node), Relu/Clip folded into the preceding op's output quantization, pass-through ops
/// and Concat on their inputs' scale, embedding tables (Gather over a float table) stored as int8. What is quantized
/// is decided first (<see cref="QdqPlan"/>); nodes that stay float are listed with the reason.
/// </summary>
internal static class QdqWriter
{
    public static QdqResult Quantize(OnnxModel model, CalibrationTable table, PostTrainingOptions options)
        => Write(QdqPlan.Create(model, table, options));

    /// <summary>Rewrites the plan's graph into its QDQ form (in place) and validates it.</summary>
    public static QdqResult Write(QdqPlan plan)
    {
        var g = plan.Graph;
        var model = plan.Model;
        // Lookups through maps built once and fresh names from one scope: the writer stays linear in the graph size.
        var names = g.Names();

        // 1. Folded Relu/Clip: the producer writes the activation's output.
        var folded = new List<Onnx.Proto.NodeProto>();
        foreach (var (producer, activation) in plan.Folds)
        {
            var act = plan.Node(activation);
            plan.Node(producer).Outputs[0] = act.Outputs[0];
            folded.Add(act.Proto);
        }
        g.RemoveNodes(folded);

        // 2. Q once per tensor, a DQ per consumer: every consumer when the producer is quantized, else the quantized
        //    readers. The consumers are those of the graph after step 1: the nodes this step adds read only new names.
        var index = g.Index();
        var consumers = g.ConsumerMap();
        var readers = plan.ActivationInputs.ToDictionary(kv => kv.Key, kv => kv.Value.ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);
        foreach (var (t, q) in plan.Activations)
        {
            bool producerQuantized = plan.Producers.TryGetValue(t, out string? producerName);
            bool graphOutput = index.IsGraphOutput(t);
            string source = t;
            if (producerQuantized && graphOutput)
            {
                var producer = plan.Node(producerName!);
                source = names.Fresh(t + "_float");
                producer.Outputs[producer.Outputs.IndexOf(t)] = source;
            }
            var (quantized, scale, zeroPoint) = AddQuantize(g, names, t, source, q);
            foreach (var consumer in consumers.GetValueOrDefault(t) ?? [])
            {
                if (consumer.OpType is "QuantizeLinear" && consumer.Inputs[0] == source)
                    continue;
                if (!producerQuantized && !(readers.TryGetValue(consumer.Name, out var reads) && plan.Precision.ContainsKey(consumer.Name) && reads.Contains(t)))
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

        // 3. Constants (stored integers, a DQ per consumer) and int32 biases.
        var stored = new Dictionary<QuantizedConstant, OnnxNode>(ReferenceEqualityComparer.Instance);
        foreach (var ((name, input), constant) in plan.Constants)
        {
            string dq;
            if (!stored.TryGetValue(constant, out var shared))
            {
                stored[constant] = shared = AddConstant(g, names, constant);
                dq = shared.Outputs[0];
            }
            else
            {
                // A DQ per consumer, reading the same stored integers.
                dq = names.Fresh(constant.Source.Name + "_dq");
                var copy = g.AddNode("DequantizeLinear", shared.Inputs, [dq], names.Fresh(constant.Source.Name + "_DequantizeLinear"));
                foreach (var a in shared.Proto.Attribute)
                    copy.Proto.Attribute.Add(a.Clone());
            }
            plan.Node(name).Inputs[input] = dq;
        }
        foreach (var ((name, input), bias) in plan.Biases)
            plan.Node(name).Inputs[input] = AddBias(g, names, bias);

        g.RemoveUnused();
        g.SortTopologically();
        // The element types the preparation wrote (value infos without a shape) have served; the model keeps its own.
        var typed = g.Proto.ValueInfo.Where(v => v.Type?.TensorType is not { Shape: null }).ToList();
        g.Proto.ValueInfo.Clear();
        g.Proto.ValueInfo.AddRange(typed);
        OnnxRewrites.UpgradeOpset(model, plan.NeedsOpset21 ? 21 : 13);
        OnnxValidator.Validate(model);
        var nodes = plan.Order.Select(n => plan.Infos[n]).ToList();
        return new QdqResult(model, nodes);
    }

    /// <summary>QuantizeLinear (then a Clip below the container width) of <paramref name="source"/>; returns the integer tensor and the parameters' names.</summary>
    internal static (string Quantized, string Scale, string ZeroPoint) AddQuantize(OnnxGraph g, OnnxGraph.NameScope names, string name, string source, ActivationQuantization q)
    {
        string scale = AddScalar(g, names, name + "_scale", q.Params.Scale);
        string zeroPoint = AddZeroPoint(g, names, name + "_zero_point", q.Type, [q.Params.ZeroPoint], []);
        string quantized = names.Fresh(name + "_quantized");
        g.AddNode("QuantizeLinear", [source, scale, zeroPoint], [quantized], names.Fresh(name + "_QuantizeLinear"));
        if (q.NeedsClip)
        {
            var (lo, hi) = QuantizationParameters.GetTypeRange(q.Bits, q.Signed);
            string clipped = names.Fresh(name + "_clipped");
            string loName = AddZeroPoint(g, names, name + "_qmin", q.Type, [lo], []);
            string hiName = AddZeroPoint(g, names, name + "_qmax", q.Type, [hi], []);
            g.AddNode("Clip", [quantized, loName, hiName], [clipped], names.Fresh(name + "_Clip"));
            quantized = clipped;
        }
        return (quantized, scale, zeroPoint);
    }

    /// <summary>The stored integers of a constant and the DequantizeLinear that reads them.</summary>
    private static OnnxNode AddConstant(OnnxGraph g, OnnxGraph.NameScope names, QuantizedConstant c)
    {
        string name = c.Source.Name;
        long[] dims = c.Source.Dims;
        string storedName = names.Fresh(name + "_quantized");
        g.AddInitializer(c.Bits == 4 ? OnnxTensor.FromInt4(storedName, dims, c.Values) : OnnxTensor.FromInt8(storedName, dims, c.Values));
        var type = c.Bits == 4 ? OnnxElementType.Int4 : OnnxElementType.Int8;
        string scale, zeroPoint;
        if (c.Axis is null)
        {
            scale = AddScalar(g, names, name + "_scale", c.Scales[0]);
            zeroPoint = AddZeroPoint(g, names, name + "_zero_point", type, [0], []);
        }
        else
        {
            scale = names.Fresh(name + "_scale");
            g.AddInitializer(OnnxTensor.FromFloats(scale, [c.Scales.Length], c.Scales));
            zeroPoint = AddZeroPoint(g, names, name + "_zero_point", type, new int[c.Scales.Length], [c.Scales.Length]);
        }
        string dq = names.Fresh(name + "_dq");
        var node = g.AddNode("DequantizeLinear", [storedName, scale, zeroPoint], [dq], names.Fresh(name + "_DequantizeLinear"));
        if (c.Axis is int axisValue)
            node.SetInt("axis", axisValue);
        return node;
    }

    private static string AddBias(OnnxGraph g, OnnxGraph.NameScope names, QuantizedBias bias)
    {
        string name = bias.Source.Name;
        int channels = bias.Values.Length;
        bool perChannel = bias.Scales.Length > 1;
        string storedName = names.Fresh(name + "_quantized");
        g.AddInitializer(OnnxTensor.FromInt32(storedName, [channels], bias.Values));
        string scale = names.Fresh(name + "_scale");
        g.AddInitializer(OnnxTensor.FromFloats(scale, perChannel ? [channels] : [], bias.Scales));
        string zeroPoint = names.Fresh(name + "_zero_point");
        g.AddInitializer(OnnxTensor.FromInt32(zeroPoint, perChannel ? [channels] : [], new int[bias.Scales.Length]));
        string dq = names.Fresh(name + "_dq");
        var node = g.AddNode("DequantizeLinear", [storedName, scale, zeroPoint], [dq], names.Fresh(name + "_DequantizeLinear"));
        if (perChannel)
            node.SetInt("axis", 0);
        return dq;
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
}

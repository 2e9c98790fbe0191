using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>
/// Weight-only quantization inside control flow: the Conv, ConvTranspose, Gemm and MatMul weights of If, Loop and Scan
/// bodies (initializers, Constant nodes, or the main graph's initializers) are stored as int8 or int4 and read through a
/// DequantizeLinear inside the body. Activations in a body stay float: the calibration does not run inside control
/// flow, so a model computing in its branches (a voice detector switching on the sample rate) gets smaller, not faster.
/// </summary>
internal static class ControlFlowWeights
{
    private static readonly HashSet<string> WeightedOps = ["Conv", "ConvTranspose", "Gemm", "MatMul"];

    /// <summary>Quantizes the weights in the bodies of <paramref name="node"/>; returns how many.</summary>
    public static int Quantize(OnnxModel model, OnnxNode node, int bits, bool perChannel, HashSet<string> names)
    {
        var main = model.Graph.Proto.Initializer.ToDictionary(t => t.Name, t => t, StringComparer.Ordinal);
        int count = 0;
        foreach (var attribute in node.Proto.Attribute)
            foreach (var body in attribute.Graphs.Append(attribute.G).OfType<GraphProto>())
                count += QuantizeBody(body, name => main.GetValueOrDefault(name), bits, perChannel, names);
        return count;
    }

    /// <summary>Every tensor and node name of the model, bodies included (new names must not shadow any).</summary>
    public static HashSet<string> AllNames(OnnxModel model)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Add(GraphProto g)
        {
            foreach (var t in g.Initializer)
                names.Add(t.Name);
            foreach (var v in g.Input.Concat(g.Output).Concat(g.ValueInfo))
                names.Add(v.Name);
            foreach (var n in g.Node)
            {
                names.Add(n.Name);
                foreach (string s in n.Input.Concat(n.Output))
                    names.Add(s);
                foreach (var a in n.Attribute)
                    foreach (var sub in a.Graphs.Append(a.G).OfType<GraphProto>())
                        Add(sub);
            }
        }
        Add(model.Graph.Proto);
        return names;
    }

    private static int QuantizeBody(GraphProto body, Func<string, TensorProto?> outer, int bits, bool perChannel, HashSet<string> names)
    {
        var local = body.Initializer.ToDictionary(t => t.Name, t => t, StringComparer.Ordinal);
        var constants = body.Node.Where(n => n.OpType == "Constant" && n.Output.Count == 1 && n.Attribute.Any(a => a.Name == "value" && a.T is not null))
            .ToDictionary(n => n.Output[0], n => n.Attribute.First(a => a.Name == "value").T, StringComparer.Ordinal);
        TensorProto? Visible(string name) => local.GetValueOrDefault(name) ?? constants.GetValueOrDefault(name) ?? outer(name);

        string Fresh(string stem)
        {
            string name = stem;
            for (int k = 1; !names.Add(name); k++)
                name = $"{stem}_{k}";
            return name;
        }

        int count = 0;
        var table = new CalibrationTable();
        for (int index = 0; index < body.Node.Count; index++)
        {
            var node = body.Node[index];
            foreach (var a in node.Attribute)
                foreach (var sub in a.Graphs.Append(a.G).OfType<GraphProto>())
                    count += QuantizeBody(sub, Visible, bits, perChannel, names);
            if (node.Domain is not ("" or "ai.onnx") || !WeightedOps.Contains(node.OpType) || node.Input.Count < 2
                || Visible(node.Input[1]) is not { DataType: (int)OnnxElementType.Float } proto || proto.Dims.Count < 2)
                continue;
            var weight = new OnnxTensor(proto.Clone()) { Name = node.Input[1] };
            var wrapped = new OnnxNode(node);
            int? axis = perChannel ? QuantizableOps.WeightAxis(wrapped, 1, weight) : null;
            var c = QdqPlan.QuantizeConstant(weight, axis, bits, table);
            string stored = Fresh(weight.Name + "_quantized"), scale = Fresh(weight.Name + "_scale"), zeroPoint = Fresh(weight.Name + "_zero_point");
            string dq = Fresh(weight.Name + "_dq");
            int channels = c.Scales.Length;
            long[] scaleDims = axis is null ? [] : [channels];
            body.Initializer.Add((bits == 4 ? OnnxTensor.FromInt4(stored, weight.Dims, c.Values) : OnnxTensor.FromInt8(stored, weight.Dims, c.Values)).Proto);
            body.Initializer.Add(OnnxTensor.FromFloats(scale, scaleDims, c.Scales).Proto);
            var zeros = new sbyte[channels];
            body.Initializer.Add((bits == 4 ? OnnxTensor.FromInt4(zeroPoint, scaleDims, zeros) : OnnxTensor.FromInt8(zeroPoint, scaleDims, zeros)).Proto);
            var dequantize = new NodeProto { Name = Fresh(weight.Name + "_DequantizeLinear"), OpType = "DequantizeLinear", Input = { stored, scale, zeroPoint }, Output = { dq } };
            if (axis is int ax)
                dequantize.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = ax });
            body.Node.Insert(index, dequantize);
            index++;
            node.Input[1] = dq;
            count++;
        }

        // Constants and initializers only the weights read are gone now.
        var used = new HashSet<string>(body.Node.SelectMany(n => n.Input.Concat(OnnxGraph.SubgraphOuterInputs(n))).Concat(body.Output.Select(o => o.Name)), StringComparer.Ordinal);
        for (int i = body.Node.Count - 1; i >= 0; i--)
            if (body.Node[i].OpType == "Constant" && body.Node[i].Output.All(o => !used.Contains(o)))
                body.Node.RemoveAt(i);
        for (int i = body.Initializer.Count - 1; i >= 0; i--)
            if (!used.Contains(body.Initializer[i].Name))
                body.Initializer.RemoveAt(i);
        return count;
    }
}

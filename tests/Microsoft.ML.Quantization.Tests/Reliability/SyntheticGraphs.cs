using Google.Protobuf;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Tests.Reliability;

/// <summary>
/// Large synthetic graphs for the scaling test and the ptq-scaling benchmark (which links this file):
/// input [batch, 16] -> MatMul by a 16x16 weight -> a chain of <c>n</c> nodes -> output.
/// </summary>
internal static class SyntheticGraphs
{
    public const int Width = 16;

    /// <summary>
    /// A chain of <paramref name="nodes"/> nodes of <paramref name="opType"/>: Identity (removed by graph preparation), Relu
    /// (calibrated, not quantized), Flatten (quantized, sharing its input's range) or Add (of one shared constant: quantized).
    /// </summary>
    public static byte[] Chain(int nodes, string opType = "Identity")
    {
        var graph = new GraphProto { Name = $"{opType}-chain-{nodes}" };
        graph.Input.Add(Tensor("input", Width));
        graph.Output.Add(Tensor("output", Width));
        var weight = new TensorProto { Name = "weight", DataType = 1 };
        weight.Dims.AddRange([Width, Width]);
        var values = new float[Width * Width];
        for (int i = 0; i < Width; i++)
            values[i * Width + i] = 1 + i / 16f;
        weight.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        graph.Initializer.Add(weight);
        var bias = new TensorProto { Name = "bias", DataType = 1 };
        bias.Dims.Add(Width);
        bias.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Enumerable.Repeat(0.01f, Width).ToArray().AsSpan()));
        if (opType == "Add")
            graph.Initializer.Add(bias);
        string previous = "product";
        graph.Node.Add(Node("MatMul", "matmul", ["input", "weight"], previous));
        for (int i = 0; i < nodes; i++)
        {
            string output = i == nodes - 1 ? "output" : $"t{i}";
            graph.Node.Add(Node(opType, $"{opType.ToLowerInvariant()}{i}", opType == "Add" ? [previous, "bias"] : [previous], output));
            previous = output;
        }
        var model = new ModelProto { IrVersion = 8, ProducerName = "qatml-tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
        return model.ToByteArray();
    }

    /// <summary>
    /// input -> MatMul -> Add(product, k) -> output, where k is a chain of <paramref name="adds"/> Adds of a constant step
    /// to a Constant node of the same step: graph preparation folds the whole chain into one initializer.
    /// </summary>
    public static byte[] FoldableChain(int adds, float step = 1e-5f)
    {
        var model = ModelProto.Parser.ParseFrom(Chain(1, "Add"));
        var graph = model.Graph;
        var last = graph.Node[^1];
        var stepTensor = new TensorProto { Name = "step", DataType = 1, RawData = ByteString.CopyFrom(BitConverter.GetBytes(step)) };
        graph.Initializer.Add(stepTensor);
        var constant = Node("Constant", "k0", [], "k0");
        constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = stepTensor.Clone() });
        graph.Node.Insert(0, constant);
        string previous = "k0";
        for (int i = 1; i <= adds; i++)
        {
            graph.Node.Insert(i, Node("Add", $"k{i}", [previous, "step"], $"k{i}"));
            previous = $"k{i}";
        }
        last.Input[1] = previous;
        return model.ToByteArray();
    }

    private static NodeProto Node(string op, string name, string[] inputs, string output)
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    private static ValueInfoProto Tensor(string name, int width)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = width });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } };
    }
}

using Google.Protobuf;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Tests.Onnx;

/// <summary>
/// The opset-13 upgrade on small opset-8 graphs built from the attribute forms that changed: ONNX Runtime
/// runs both the original and the upgraded graph, and their outputs must agree.
/// </summary>
public sealed class OpsetMigrationTests
{
    private static readonly int[] InputDims = [1, 2, 4, 5];

    [Fact]
    public void PadSliceClipUpsampleSplitDropoutSqueeze_Opset8To13_SameOutputs()
    {
        var model = Opset8Model(g =>
        {
            g.AddNode("Pad", ["x"], ["padded"], "pad").SetInts("pads", [0, 0, 1, 2, 0, 0, 1, 0]);       // [1,2,6,7]
            var slice = g.AddNode("Slice", ["padded"], ["sliced"], "slice");                           // [1,2,5,6]
            slice.SetInts("starts", [0, 1]);
            slice.SetInts("ends", [5, 100]);
            slice.SetInts("axes", [2, 3]);
            var clip = g.AddNode("Clip", ["sliced"], ["clipped"], "clip");
            clip.SetFloat("min", -0.5f);
            clip.SetFloat("max", 0.75f);
            g.AddNode("Upsample", ["clipped"], ["up"], "upsample").SetFloats("scales", [1, 1, 2, 3]);   // [1,2,10,18]
            var split = g.AddNode("Split", ["up"], ["left", "right"], "split");
            split.SetInt("axis", 3);
            split.SetInts("split", [7, 11]);
            g.AddNode("Concat", ["right", "left"], ["swapped"], "concat").SetInt("axis", 3);
            g.AddNode("Dropout", ["swapped"], ["dropped"], "dropout").SetFloat("ratio", 0.3f);
            g.AddNode("Unsqueeze", ["dropped"], ["unsq"], "unsqueeze").SetInts("axes", [0]);
            g.AddNode("Squeeze", ["unsq"], ["y"], "squeeze").SetInts("axes", [0]);
        });
        AssertUpgradeKeepsOutputs(model, exact: true);
        Assert.Contains(model.Graph.Nodes, n => n.OpType == "Resize");
        Assert.DoesNotContain(model.Graph.Nodes, n => n.Attribute("pads") is not null || n.Attribute("starts") is not null || n.Attribute("split") is not null);
    }

    [Fact]
    public void BilinearUpsample_Opset8To13_MatchesResize()
    {
        var model = Opset8Model(g => g.AddNode("Upsample", ["x"], ["y"], "upsample", "").With(n =>
        {
            n.SetFloats("scales", [1, 1, 2, 2]);
            n.SetString("mode", "linear");
        }));
        AssertUpgradeKeepsOutputs(model, exact: false);
    }

    [Fact]
    public void DropoutRemoval_OnUpgradedGraph_KeepsOutputs()
    {
        var model = Opset8Model(g =>
        {
            g.AddNode("Relu", ["x"], ["r"], "relu");
            g.AddNode("Dropout", ["r"], ["d"], "dropout").SetFloat("ratio", 0.5f);
            g.AddNode("Identity", ["d"], ["y"], "identity");
        });
        float[] input = OrtRunner.RandomInput(InputDims.Aggregate(1, (a, b) => a * b), 5);
        float[] expected = OrtRunner.Run(model.ToBytes(), input, InputDims);
        OnnxRewrites.UpgradeOpset(model, 13);
        Assert.Equal(2, OnnxRewrites.RemoveIdentityAndDropout(model));
        Assert.Equal("Relu", Assert.Single(model.Graph.Nodes).OpType);
        Assert.Equal("y", model.Graph.Nodes[0].Outputs[0]);   // the graph output keeps its name
        OnnxValidator.Validate(model);
        Assert.Equal(expected, OrtRunner.Run(model.ToBytes(), input, InputDims));
    }

    [Fact]
    public void UnknownOp_RefusedWithNodeAndOpNamed_ModelUntouched()
    {
        var model = Opset8Model(g => g.AddNode("Scan", ["x"], ["y"], "norm"));
        byte[] before = model.ToBytes();
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxRewrites.UpgradeOpset(model, 13));
        Assert.Contains("'norm'", e.Message);
        Assert.Contains("Scan", e.Message);
        Assert.Equal(before, model.ToBytes());
    }

    private static void AssertUpgradeKeepsOutputs(OnnxModel model, bool exact)
    {
        float[] input = OrtRunner.RandomInput(InputDims.Aggregate(1, (a, b) => a * b), 4);
        float[] expected = OrtRunner.Run(model.ToBytes(), input, InputDims, out int[] expectedDims);
        OnnxRewrites.UpgradeOpset(model, 13);
        Assert.Equal(13, model.DefaultOpset);
        OnnxValidator.Validate(model);
        float[] actual = OrtRunner.Run(model.ToBytes(), input, InputDims, out int[] actualDims);
        Assert.Equal(expectedDims, actualDims);
        if (exact)
            Assert.Equal(expected, actual);
        else
            OrtRunner.AssertClose(expected, actual, 1e-6);
    }

    /// <summary>An IR-3, opset-8 model with float input x [1,2,4,5] and output y of unknown shape.</summary>
    private static OnnxModel Opset8Model(Action<OnnxGraph> build)
    {
        var proto = new ModelProto { IrVersion = 3, ProducerName = "qatml-tests", Graph = new GraphProto { Name = "opset8" } };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 8 });
        proto.Graph.Input.Add(FloatValue("x", InputDims));
        proto.Graph.Output.Add(FloatValue("y", null));
        var model = OnnxModel.Parse(proto.ToByteArray());
        build(model.Graph);
        return model;
    }

    private static ValueInfoProto FloatValue(string name, int[]? dims)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = (int)OnnxElementType.Float };
        if (dims is not null)
        {
            tensor.Shape = new TensorShapeProto();
            foreach (int d in dims)
                tensor.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }
}

internal static class OnnxNodeTestExtensions
{
    public static OnnxNode With(this OnnxNode node, Action<OnnxNode> set)
    {
        set(node);
        return node;
    }
}

using Google.Protobuf;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Tests.Onnx;

/// <summary>
/// The opset upgrade, op by op: a small graph in an old op's form (as the ONNX spec of that opset defines it) is run by
/// ONNX Runtime before and after upgrading to opset 13 and to opset 21 (what W4A8 needs), and the outputs must agree.
/// </summary>
public sealed class OpsetMigrationTests
{
    private static readonly int[] InputDims = [1, 2, 4, 5];
    private static readonly int[] Targets = [13, 21];

    [Fact]
    public void PadSliceClipUpsampleSplitDropoutSqueeze_Opset8_SameOutputs()
    {
        var model = OldModel(8, InputDims, g =>
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
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 0);
        Assert.Contains(upgraded.Graph.Nodes, n => n.OpType == "Resize");
        Assert.DoesNotContain(upgraded.Graph.Nodes, n => n.Attribute("pads") is not null || n.Attribute("starts") is not null || n.Attribute("split") is not null);
    }

    [Fact]
    public void PadReflectAndClipWithOnlyMin_Opset7_SameOutputs()
    {
        var model = OldModel(7, InputDims, g =>
        {
            g.AddNode("Pad", ["x"], ["padded"], "pad").With(n =>
            {
                n.SetInts("pads", [0, 0, 2, 1, 0, 0, 1, 3]);
                n.SetString("mode", "reflect");
            });
            g.AddNode("Pad", ["padded"], ["valued"], "pad_value").With(n =>
            {
                n.SetInts("pads", [0, 0, 1, 1, 0, 0, 1, 1]);
                n.SetFloat("value", 0.25f);
            });
            g.AddNode("Clip", ["valued"], ["y"], "clip").SetFloat("min", -0.1f);
        });
        AssertUpgradesKeepOutputs(model, InputDims, tolerance: 0);
    }

    [Fact]
    public void PadClipUpsample_Opset8ToOpset9And10_AttributeFormsKeptWhereTheyStillExist()
    {
        var model = OldModel(8, InputDims, g =>
        {
            g.AddNode("Pad", ["x"], ["padded"], "pad").SetInts("pads", [0, 0, 1, 0, 0, 0, 0, 1]);
            g.AddNode("Clip", ["padded"], ["clipped"], "clip").With(n => { n.SetFloat("min", -0.3f); n.SetFloat("max", 0.6f); });
            g.AddNode("Upsample", ["clipped"], ["y"], "upsample").SetFloats("scales", [1, 1, 2, 2]);
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 0, 9, 10);
        Assert.NotNull(upgraded.Graph.Nodes.Single(n => n.OpType == "Pad").GetInts("pads"));
        Assert.Equal(2, upgraded.Graph.Nodes.Single(n => n.OpType == "Resize").Inputs.Count);   // Resize-10 at opset 10
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void MeanVarianceNormalization1_AcrossChannels_BecomesAxes(int acrossChannels)
    {
        var model = OldModel(8, InputDims, g => g.AddNode("MeanVarianceNormalization", ["x"], ["y"], "mvn").SetInt("across_channels", acrossChannels));
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-5);
        Assert.False(upgraded.Graph.Nodes.Single().HasAttribute("across_channels"));
    }

    [Fact]
    public void BilinearUpsample_Opset8_MatchesResize()
    {
        var model = OldModel(8, InputDims, g => g.AddNode("Upsample", ["x"], ["y"], "upsample").With(n =>
        {
            n.SetFloats("scales", [1, 1, 2, 2]);
            n.SetString("mode", "linear");
        }));
        AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
    }

    [Fact]
    public void NearestUpsampleWithScalesInput_Opset9_MatchesResize()
    {
        var model = OldModel(9, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("scales", [4], [1, 1, 3, 2]));
            g.AddNode("Upsample", ["x", "scales"], ["y"], "upsample");
        });
        AssertUpgradesKeepOutputs(model, InputDims, tolerance: 0);
    }

    [Theory]
    [InlineData("nearest", new float[] { 1, 1, 2, 3 })]
    [InlineData("nearest", new float[] { 1, 1, 0.5f, 0.6f })]
    [InlineData("linear", new float[] { 1, 1, 1.5f, 2 })]
    [InlineData("linear", new float[] { 1, 1, 0.5f, 0.8f })]
    public void Resize10_SameOutputsAsResize13And21(string mode, float[] scales)
    {
        var model = OldModel(10, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("scales", [4], scales));
            g.AddNode("Resize", ["x", "scales"], ["y"], "resize").SetString("mode", mode);
        });
        AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
    }

    [Fact]
    public void NearestResize10_EnlargingAndShrinking_RefusedNamingNodeAndOpsets()
    {
        var model = OldModel(10, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("scales", [4], [1, 1, 2, 0.5f]));
            g.AddNode("Resize", ["x", "scales"], ["y"], "mixed_resize");
        });
        byte[] before = model.ToBytes();
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxRewrites.UpgradeOpset(model, 13));
        Assert.Contains("'mixed_resize' (Resize) from opset 10 to 13", e.Message);
        Assert.Equal(before, model.ToBytes());
    }

    [Theory]
    [InlineData("floor")]
    [InlineData("round_prefer_floor")]
    public void Resize11_TfHalfPixelForNearest_SameOutputsAt13(string nearestMode)
    {
        var model = OldModel(11, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("roi", [0], []));
            g.SetInitializer(OnnxTensor.FromFloats("scales", [4], [1, 1, 1.5f, 2.6f]));
            g.AddNode("Resize", ["x", "roi", "scales"], ["y"], "resize").With(n =>
            {
                n.SetString("mode", "nearest");
                n.SetString("coordinate_transformation_mode", "tf_half_pixel_for_nn");
                n.SetString("nearest_mode", nearestMode);
            });
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 0);
        Assert.Equal("half_pixel", upgraded.Graph.Nodes.Single(n => n.OpType == "Resize").GetString("coordinate_transformation_mode"));
    }

    [Theory]
    [InlineData("Softmax", 9)]
    [InlineData("LogSoftmax", 9)]
    [InlineData("Hardmax", 11)]
    public void CoerceTo2DOps_AxisOneOfRank4_FlattenSemanticsKept(string op, int opset)
    {
        // Before 13 these normalise over C*H*W jointly (input flattened to 2-D at axis 1).
        var model = OldModel(opset, InputDims, g => g.AddNode(op, ["x"], ["y"], "norm").SetInt("axis", 1));
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
        Assert.Contains(upgraded.Graph.Nodes, n => n.OpType == "Flatten");
    }

    [Fact]
    public void Softmax_LastAxisKnownOnlyFromShapeInference_BecomesAxisMinusOne()
    {
        // The Softmax input has no value_info: its rank (4) comes from ONNX shape inference through the Transpose.
        var model = OldModel(9, InputDims, g =>
        {
            g.AddNode("Transpose", ["x"], ["t"], "transpose").SetInts("perm", [0, 2, 3, 1]);
            g.AddNode("Softmax", ["t"], ["y"], "softmax").SetInt("axis", 3);
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
        Assert.DoesNotContain(upgraded.Graph.Nodes, n => n.OpType == "Flatten");
        Assert.Equal(-1, upgraded.Graph.Nodes.Single(n => n.OpType == "Softmax").GetInt("axis", 0));
    }

    [Fact]
    public void Softmax_RankOnlyFromDeclaredGraphOutput_BecomesAxisMinusOne()
    {
        // The If's branch outputs carry no shape, so inference cannot rank the Softmax input; the declared output can.
        var model = OldModel(11, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromRaw("cond", OnnxElementType.Bool, [], [1]));
            var ifNode = g.AddNode("If", ["cond"], ["t"], "branch");
            foreach (string branch in new[] { "then_branch", "else_branch" })
            {
                var body = new GraphProto { Name = branch };
                body.Node.Add(new NodeProto { OpType = "Neg", Name = branch + "_neg", Input = { "x" }, Output = { branch + "_y" } });
                body.Output.Add(FloatValue(branch + "_y", null));
                ifNode.Proto.Attribute.Add(new AttributeProto { Name = branch, Type = AttributeProto.Types.AttributeType.Graph, G = body });
            }
            g.AddNode("Softmax", ["t"], ["y"], "softmax").SetInt("axis", 3);
        }, outputDims: InputDims);
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
        Assert.DoesNotContain(upgraded.Graph.Nodes, n => n.OpType == "Flatten");
    }

    [Fact]
    public void ReduceOps_AxesAttributes_Opset11_SameOutputs()
    {
        var model = OldModel(11, InputDims, g =>
        {
            g.AddNode("ReduceSum", ["x"], ["s"], "sum").SetInts("axes", [3]);                          // [1,2,4,1]
            g.AddNode("ReduceMean", ["s"], ["m"], "mean").With(n => { n.SetInts("axes", [-2]); n.SetInt("keepdims", 1); });
            g.AddNode("ReduceL2", ["x"], ["l2"], "l2").With(n => { n.SetInts("axes", [2, 3]); n.SetInt("keepdims", 1); });
            g.AddNode("Add", ["m", "l2"], ["a"], "add");
            g.AddNode("ReduceLogSumExp", ["a"], ["e"], "lse").SetInt("keepdims", 1);                   // every axis
            g.AddNode("ReduceMax", ["x"], ["mx"], "max").SetInts("axes", [1]);
            g.AddNode("Mul", ["mx", "e"], ["y"], "mul");
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
        Assert.DoesNotContain(upgraded.Graph.Nodes, n => n.Attribute("axes") is not null);
    }

    [Fact]
    public void EvenSplitAndTopK_Opset9_SameOutputs()
    {
        var model = OldModel(9, InputDims, g =>
        {
            g.AddNode("Split", ["x"], ["a", "b"], "split").SetInt("axis", 1);                          // no split: even
            g.AddNode("Sub", ["a", "b"], ["d"], "sub");
            g.AddNode("TopK", ["d"], ["y", "indices"], "topk").SetInt("k", 3);
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 0);
        Assert.DoesNotContain(upgraded.Graph.Nodes, n => n.Attribute("k") is not null);
    }

    [Fact]
    public void Scatter9_BecomesScatterElements_SameOutputs()
    {
        var model = OldModel(9, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromInt64("indices", [1, 2, 1, 5], [3, 0, 2, 1, 0, 1, 1, 3, 2, 2]));
            g.SetInitializer(OnnxTensor.FromFloats("updates", [1, 2, 1, 5], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]));
            g.AddNode("Scatter", ["x", "indices", "updates"], ["y"], "scatter").SetInt("axis", 2);
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 0);
        Assert.Contains(upgraded.Graph.Nodes, n => n.OpType == "ScatterElements");
    }

    [Fact]
    public void BatchNormalization7_SpatialAttribute_SameOutputs()
    {
        var model = OldModel(7, InputDims, g =>
        {
            foreach (var (name, values) in new[] { ("scale", new[] { 1.5f, 0.5f }), ("bias", new[] { 0.1f, -0.2f }), ("mean", new[] { 0.05f, -0.1f }), ("var", new[] { 0.9f, 1.3f }) })
                g.SetInitializer(OnnxTensor.FromFloats(name, [2], values));
            g.AddNode("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], "bn").With(n =>
            {
                n.SetInt("spatial", 1);
                n.SetFloat("epsilon", 1e-3f);
            });
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
        Assert.False(upgraded.Graph.Nodes.Single().HasAttribute("spatial"));
    }

    [Fact]
    public void ImageScalerAndScaledTanh_ExperimentalOps_Opset8_BecomeStandardOps()
    {
        var model = OldModel(8, InputDims, g =>
        {
            g.AddNode("ImageScaler", ["x"], ["scaled"], "scaler").With(n =>
            {
                n.SetFloat("scale", 0.5f);
                n.SetFloats("bias", [0.25f, -1f]);
            });
            g.AddNode("ScaledTanh", ["scaled"], ["y"], "tanh").With(n =>
            {
                n.SetFloat("alpha", 2f);
                n.SetFloat("beta", 0.75f);
            });
        });
        float[] input = OrtRunner.RandomInput(InputDims.Aggregate(1, (a, b) => a * b), 3);
        // The spec's definitions, written out: y = 2 * tanh(0.75 * (0.5 * x + bias[c])).
        var expected = new float[input.Length];
        for (int i = 0; i < input.Length; i++)
            expected[i] = 2f * MathF.Tanh(0.75f * (0.5f * input[i] + (i / 20 == 0 ? 0.25f : -1f)));
        foreach (int target in Targets)
        {
            var upgraded = model.Clone();
            OnnxRewrites.UpgradeOpset(upgraded, target);
            OnnxValidator.Validate(upgraded);
            Assert.DoesNotContain(upgraded.Graph.Nodes, n => n.OpType is "ImageScaler" or "ScaledTanh");
            OrtRunner.AssertClose(expected, OrtRunner.Run(upgraded.ToBytes(), input, InputDims), 1e-6);
        }
    }

    [Fact]
    public void IfBranches_SqueezeAxesAndSoftmaxInside_MigratedToo()
    {
        var model = OldModel(11, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromRaw("cond", OnnxElementType.Bool, [], [1]));
            var ifNode = g.AddNode("If", ["cond"], ["y"], "branch");
            ifNode.Proto.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("then", "Softmax") });
            ifNode.Proto.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("else", "LogSoftmax") });
        });
        var upgraded = AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6);
        var then = upgraded.Graph.Nodes.Single().Proto.Attribute.Single(a => a.Name == "then_branch").G;
        Assert.DoesNotContain(then.Node, n => n.Attribute.Any(a => a.Name == "axes"));
        Assert.Contains(then.Node, n => n.OpType == "Flatten");

        // Unsqueeze(x, 0) -> op(axis 2) -> Squeeze(0): the subgraph reads x from the outer scope.
        static GraphProto Branch(string name, string op)
        {
            var graph = new GraphProto { Name = name };
            graph.Node.Add(Node("Unsqueeze", ["x"], [name + "_u"], ("axes", 0)));
            graph.Node.Add(Node(op, [name + "_u"], [name + "_s"], ("axis", 2)));
            graph.Node.Add(Node("Squeeze", [name + "_s"], [name + "_y"], ("axes", 0)));
            graph.Output.Add(FloatValue(name + "_y", null));
            return graph;
        }

        static NodeProto Node(string op, string[] inputs, string[] outputs, (string Name, long Value) attribute)
        {
            var node = new NodeProto { OpType = op, Name = outputs[0] + "_node" };
            node.Input.AddRange(inputs);
            node.Output.AddRange(outputs);
            var a = new AttributeProto { Name = attribute.Name, Type = attribute.Name == "axes" ? AttributeProto.Types.AttributeType.Ints : AttributeProto.Types.AttributeType.Int };
            if (attribute.Name == "axes")
                a.Ints.Add(attribute.Value);
            else
                a.I = attribute.Value;
            node.Attribute.Add(a);
            return node;
        }
    }

    [Fact]
    public void GroupNormalization18_PerGroupScale_BecomesPerChannelAt21()
    {
        int[] dims = [1, 4, 2, 3];
        var model = OldModel(18, dims, g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("scale", [2], [1.5f, -0.5f]));
            g.SetInitializer(OnnxTensor.FromFloats("bias", [2], [0.25f, 1f]));
            g.AddNode("GroupNormalization", ["x", "scale", "bias"], ["y"], "gn").SetInt("num_groups", 2);
        });
        AssertUpgradesKeepOutputs(model, dims, tolerance: 1e-5, 21);
    }

    [Fact]
    public void Dft17_AxisAttribute_BecomesInputAt20()
    {
        int[] dims = [2, 8, 1];
        var model = OldModel(17, dims, g => g.AddNode("DFT", ["x"], ["y"], "dft"));
        AssertUpgradesKeepOutputs(model, dims, tolerance: 1e-5, 20, 21);
    }

    [Theory]
    [InlineData("bilinear")]
    [InlineData("bicubic")]
    public void GridSample16_ModeNames_RenamedAt20(string mode)
    {
        var grid = new float[1 * 3 * 3 * 2];
        for (int i = 0; i < grid.Length; i++)
            grid[i] = (i * 7 % 11 - 5) / 5.5f;
        var model = OldModel(16, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("grid", [1, 3, 3, 2], grid));
            g.AddNode("GridSample", ["x", "grid"], ["y"], "sample").SetString("mode", mode);
        });
        AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-5, 21);
    }

    [Fact]
    public void RoiAlign10_KeepsOutputHalfPixelAt16AndLater()
    {
        var model = OldModel(10, InputDims, g =>
        {
            g.SetInitializer(OnnxTensor.FromFloats("rois", [2, 4], [0.5f, 0.5f, 3.5f, 2.5f, 1f, 0f, 4f, 3f]));
            g.SetInitializer(OnnxTensor.FromInt64("batch", [2], [0, 0]));
            g.AddNode("RoiAlign", ["x", "rois", "batch"], ["y"], "roi").With(n =>
            {
                n.SetInt("output_height", 2);
                n.SetInt("output_width", 2);
                n.SetInt("sampling_ratio", 2);
            });
        });
        AssertUpgradesKeepOutputs(model, InputDims, tolerance: 1e-6, 21);
    }

    [Fact]
    public void DropoutRemoval_OnUpgradedGraph_KeepsOutputs()
    {
        var model = OldModel(8, InputDims, g =>
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

    [Theory]
    [InlineData("Scan", "Scan-8")]
    [InlineData("Crop", "Crop")]
    [InlineData("NoSuchOp", "not on the list")]
    public void UnmigratableOp_RefusedWithNodeOpAndOpsetsNamed_ModelUntouched(string op, string reason)
    {
        var model = OldModel(8, InputDims, g => g.AddNode(op, ["x"], ["y"], "blocker"));
        byte[] before = model.ToBytes();
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxRewrites.UpgradeOpset(model, 13));
        Assert.Contains($"'blocker' ({op}) from opset 8 to 13", e.Message);
        Assert.Contains(reason, e.Message);
        Assert.Equal(before, model.ToBytes());
    }

    /// <summary>Upgrades a copy to each target (those above the model's opset) and checks ONNX Runtime gives the same output; returns the last copy.</summary>
    private static OnnxModel AssertUpgradesKeepOutputs(OnnxModel model, int[] inputDims, double tolerance, params int[] targets)
    {
        float[] input = OrtRunner.RandomInput(inputDims.Aggregate(1, (a, b) => a * b), 4);
        float[] expected = OrtRunner.Run(model.ToBytes(), input, inputDims, out int[] expectedDims);
        OnnxModel? upgraded = null;
        foreach (int target in targets.Length > 0 ? targets : Targets)
        {
            upgraded = model.Clone();
            OnnxRewrites.UpgradeOpset(upgraded, target);
            Assert.Equal(target, upgraded.DefaultOpset);
            OnnxValidator.Validate(upgraded);
            float[] actual = OrtRunner.Run(upgraded.ToBytes(), input, inputDims, out int[] actualDims);
            Assert.Equal(expectedDims, actualDims);
            if (tolerance == 0)
                Assert.Equal(expected, actual);
            else
                OrtRunner.AssertClose(expected, actual, tolerance);
        }
        return upgraded!;
    }

    /// <summary>A model of the given opset (IR 3 for 7-8, as exporters wrote them then) with float input x and output y (of unknown shape unless given).</summary>
    private static OnnxModel OldModel(int opset, int[] inputDims, Action<OnnxGraph> build, int[]? outputDims = null)
    {
        long ir = opset <= 8 ? 3 : opset >= 21 ? 10 : opset >= 19 ? 9 : opset >= 15 ? 8 : 7;
        var proto = new ModelProto { IrVersion = ir, ProducerName = "qatml-tests", Graph = new GraphProto { Name = $"opset{opset}" } };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        proto.Graph.Input.Add(FloatValue("x", inputDims));
        proto.Graph.Output.Add(FloatValue("y", outputDims));
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

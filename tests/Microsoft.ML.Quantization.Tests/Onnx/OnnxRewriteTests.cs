using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Tests.Onnx;

public sealed class OnnxRewriteTests
{
    private static readonly int[] ResNetDims = [1, 3, 224, 224];

    [Fact]
    public void FoldBatchNormalization_Fmnist_RemovesBnAndKeepsOutputs()
    {
        var model = OnnxModel.Load(TestData.FmnistNetBn);
        Assert.Equal(2, model.Graph.Nodes.Count(n => n.OpType == "BatchNormalization"));
        float[] input = OrtRunner.RandomInput(8 * 28 * 28, 5);
        int[] dims = [8, 1, 28, 28];
        float[] expected = OrtRunner.Run(File.ReadAllBytes(TestData.FmnistNetBn), input, dims);
        Assert.Equal(2, OnnxRewrites.FoldBatchNormalization(model));
        Assert.DoesNotContain(model.Graph.Nodes, n => n.OpType == "BatchNormalization");
        OnnxValidator.Validate(model);
        OrtRunner.AssertClose(expected, OrtRunner.Run(model.ToBytes(), input, dims), 1e-4);
    }

    [Fact]
    public void FoldBatchNormalization_ResNet18_Opset8Spatial()
    {
        var model = OnnxModel.Load(TestData.ResNet18Path);
        Assert.Equal(22, model.Graph.Nodes.Count(n => n.OpType == "BatchNormalization"));
        float[] input = OrtRunner.RandomInput(3 * 224 * 224, 6).Select(v => v * 100).ToArray();
        float[] expected = OrtRunner.Run(File.ReadAllBytes(TestData.ResNet18Path), input, ResNetDims);
        Assert.Equal(22, OnnxRewrites.FoldBatchNormalization(model));
        Assert.DoesNotContain(model.Graph.Nodes, n => n.OpType == "BatchNormalization");
        Assert.Equal(22, model.Graph.Nodes.Count(n => n.OpType == "Conv"));
        OnnxValidator.Validate(model);
        OrtRunner.AssertClose(expected, OrtRunner.Run(model.ToBytes(), input, ResNetDims), 1e-4);
    }

    [Fact]
    public void ResNet18_Opset13_BatchSymbolic_MatchesAtBatch1_RunsAtBatch16()
    {
        var model = OnnxModel.Load(TestData.ResNet18Path);
        OnnxRewrites.UpgradeOpset(model, 13);
        OnnxRewrites.MakeBatchSymbolic(model);
        Assert.Equal(13, model.DefaultOpset);
        Assert.True(model.IrVersion >= 7);
        Assert.DoesNotContain(model.Graph.Nodes, n => n.HasAttribute("spatial"));
        Assert.Equal("batch", model.Graph.RuntimeInputs[0].Shape![0].Param);
        Assert.Equal("batch", model.Graph.Outputs[0].Shape![0].Param);
        Assert.All(model.Graph.ValueInfos, v => Assert.NotEqual((long?)1, v.Shape is { Count: > 0 } s ? s[0].Value : null));
        OnnxValidator.Validate(model);

        byte[] bytes = model.ToBytes();
        const int image = 3 * 224 * 224;
        float[] batch = OrtRunner.RandomInput(16 * image, 7).Select(v => v * 100).ToArray();
        float[] one = batch[(5 * image)..(6 * image)];
        float[] expected = OrtRunner.Run(File.ReadAllBytes(TestData.ResNet18Path), one, ResNetDims);
        OrtRunner.AssertClose(expected, OrtRunner.Run(bytes, one, ResNetDims), 1e-5);

        float[] all = OrtRunner.Run(bytes, batch, [16, 3, 224, 224], out int[] outDims);
        Assert.Equal(new[] { 16, 512, 1, 1 }, outDims);
        OrtRunner.AssertClose(expected, all[(5 * 512)..(6 * 512)], 1e-4); // row 5 of the batch is image 5
    }

    [Fact]
    public void UpgradeOpset_UnknownOp_NamesNodeAndOp_LeavesModelUnchanged()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        model.SetOpset("", 8);
        var relu = model.Graph.Nodes.First(n => n.OpType == "Relu");
        relu.OpType = "Scan";
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxRewrites.UpgradeOpset(model, 13));
        Assert.Contains($"node '{relu.Name}' (Scan)", e.Message);
        Assert.Equal(8, model.DefaultOpset);
    }

    [Fact]
    public void UpgradeOpset_BatchNormSpatial0_Refused()
    {
        var model = OnnxModel.Load(TestData.ResNet18Path);
        var bn = model.Graph.Nodes.First(n => n.OpType == "BatchNormalization");
        bn.SetInt("spatial", 0);
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxRewrites.UpgradeOpset(model, 13));
        Assert.Contains("spatial=0", e.Message);
        Assert.Contains($"node '{bn.Name}' (BatchNormalization)", e.Message);
    }

    [Fact]
    public void MakeBatchSymbolic_Fmnist_AlreadySymbolic_NoChange()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        byte[] before = model.ToBytes();
        OnnxRewrites.MakeBatchSymbolic(model);
        Assert.Equal(before, model.ToBytes());
    }

    [Fact]
    public void MakeBatchSymbolic_PinnedReshape_Refused()
    {
        // fmnist with a fixed batch of 2 and Flatten replaced by Reshape to [2*3136]: the batch is folded away.
        var model = OnnxModel.Load(TestData.FmnistNet);
        var g = model.Graph;
        g.Proto.Input[0].Type.TensorType.Shape.Dim[0].DimValue = 2;
        var flatten = g.Nodes.First(n => n.OpType == "Flatten");
        flatten.OpType = "Reshape";
        flatten.RemoveAttribute("axis");
        g.SetInitializer(OnnxTensor.FromInt64("pinned", [1], [2 * 3136]));
        flatten.Inputs.Add("pinned");
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxRewrites.MakeBatchSymbolic(model));
        Assert.Contains($"node '{flatten.Name}' (Reshape)", e.Message);
        Assert.Contains("pins the batch", e.Message);

        // A Reshape to [2, 3136] is fixed to [-1, 3136] instead.
        g.SetInitializer(OnnxTensor.FromInt64("pinned", [2], [2, 3136]));
        OnnxRewrites.MakeBatchSymbolic(model);
        Assert.True(g.TryGetInitializer("pinned", out var shape));
        Assert.Equal(new[] { -1L, 3136 }, shape.ToInt64Array());
        float[] output = OrtRunner.Run(model.ToBytes(), OrtRunner.RandomInput(5 * 784, 8), [5, 1, 28, 28], out int[] dims);
        Assert.Equal(new[] { 5, 10 }, dims);
        Assert.Equal(50, output.Length);
    }

    [Fact]
    public void FoldBatchNormalization_AfterGemm()
    {
        // A BatchNormalization on the [batch, 128] output of the first Gemm, with non-trivial statistics.
        var model = OnnxModel.Load(TestData.FmnistNet);
        var g = model.Graph;
        var gemm = g.Nodes.First(n => n.OpType == "Gemm");
        string y = gemm.Outputs[0], pre = g.FreshName(y + "_prebn");
        gemm.Outputs[0] = pre;
        var rng = new Random(10);
        float[] Make(float lo, float hi) => [.. Enumerable.Range(0, 128).Select(_ => lo + (float)rng.NextDouble() * (hi - lo))];
        foreach (var (name, values) in new[] { ("bn_s", Make(0.5f, 2)), ("bn_b", Make(-1, 1)), ("bn_m", Make(-1, 1)), ("bn_v", Make(0.1f, 3)) })
            g.SetInitializer(OnnxTensor.FromFloats(name, [128], values));
        g.InsertNode(g.CreateNode("BatchNormalization", [pre, "bn_s", "bn_b", "bn_m", "bn_v"], [y]), g.Consumers(y)[0]);
        float[] input = OrtRunner.RandomInput(4 * 784, 11);
        int[] dims = [4, 1, 28, 28];
        float[] expected = OrtRunner.Run(model.ToBytes(), input, dims);
        Assert.Equal(1, OnnxRewrites.FoldBatchNormalization(model));
        Assert.DoesNotContain(g.Nodes, n => n.OpType == "BatchNormalization");
        OrtRunner.AssertClose(expected, OrtRunner.Run(model.ToBytes(), input, dims), 1e-4);
    }

    [Fact]
    public void UpgradeOpset_MigratesClipAndSqueezeAttributesToInputs()
    {
        // fmnist declared at opset 8 (its ops mean the same there) with Clip(min, max) and Unsqueeze/Squeeze(axes) on the logits.
        var model = OnnxModel.Load(TestData.FmnistNet);
        model.SetOpset("", 8);
        model.IrVersion = 3;
        var g = model.Graph;
        foreach (var pool in g.Nodes.Where(n => n.OpType == "MaxPool"))
            Assert.True(pool.RemoveAttribute("ceil_mode")); // exported as 0, the default; MaxPool-8 has no such attribute
        string logits = g.Outputs[0].Name;
        var last = g.Producer(logits)!;
        last.Outputs[0] = "raw_logits";
        var clip = g.AddNode("Clip", ["raw_logits"], ["clipped"]);
        clip.SetFloat("min", -2f);
        clip.SetFloat("max", 3f);
        g.AddNode("Unsqueeze", ["clipped"], ["unsq"]).SetInts("axes", [2]);
        g.AddNode("Squeeze", ["unsq"], [logits]).SetInts("axes", [2]);
        float[] input = OrtRunner.RandomInput(4 * 784, 12);
        int[] dims = [4, 1, 28, 28];
        float[] expected = OrtRunner.Run(model.ToBytes(), input, dims);
        Assert.Contains(expected, v => v is -2f or 3f); // the clip bites
        OnnxRewrites.UpgradeOpset(model, 13);
        Assert.Equal(13, model.DefaultOpset);
        Assert.Equal(3, g.Nodes.First(n => n.OpType == "Clip").Inputs.Count);
        Assert.False(g.Nodes.First(n => n.OpType == "Squeeze").HasAttribute("axes"));
        OnnxValidator.Validate(model);
        Assert.Equal(expected, OrtRunner.Run(model.ToBytes(), input, dims));
    }

    [Fact]
    public void UpgradeOpset_Int4Tensors_RaiseTargetTo21()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        model.Graph.SetInitializer(OnnxTensor.FromInt4("w4", [3], [-8, 0, 7]));
        OnnxRewrites.UpgradeOpset(model, 13);
        Assert.Equal(21, model.DefaultOpset);
        Assert.True(model.IrVersion >= 10);
        Assert.True(model.Graph.TryGetInitializer("w4", out var w4));
        Assert.Equal(new sbyte[] { -8, 0, 7 }, OnnxModel.Parse(model.ToBytes()).Graph.Initializers.Single(t => t.Name == "w4").ToInt4Array());
    }
}

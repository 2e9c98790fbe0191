using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Tests.Onnx;

public sealed class OnnxGraphTests
{
    private static readonly int[] FmnistDims = [2, 1, 28, 28];

    [Fact]
    public void ProducersConsumersAndTopologicalOrder()
    {
        var g = OnnxModel.Load(TestData.FmnistNet).Graph;
        var first = g.Consumers("input").Single();
        Assert.Equal("Conv", first.OpType);
        Assert.Equal(first, g.Producer(first.Outputs[0]));
        Assert.Null(g.Producer("input"));
        var order = g.TopologicalOrder();
        Assert.Equal(g.Nodes.Count, order.Count);
        var position = order.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i);
        foreach (var n in order)
            foreach (string input in n.Inputs)
                if (g.Producer(input) is { } p)
                    Assert.True(position[p] < position[n]);
        string fresh = g.FreshName(first.Outputs[0]);
        Assert.DoesNotContain(fresh, g.TensorNames());
        Assert.Equal("brand_new", g.FreshName("brand_new"));
    }

    [Fact]
    public void InsertAndRemoveIdentity_KeepsOutputs()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        var g = model.Graph;
        float[] input = OrtRunner.RandomInput(2 * 28 * 28, 3);
        float[] expected = OrtRunner.Run(model.ToBytes(), input, FmnistDims);
        // Put an Identity after every Relu, appended at the end, then sort.
        foreach (var relu in g.Nodes.Where(n => n.OpType == "Relu").ToList())
        {
            string y = relu.Outputs[0], mid = g.FreshName(y + "_pre");
            relu.Outputs[0] = mid;
            g.AddNode("Identity", [mid], [y]);
        }
        g.SortTopologically();
        OnnxValidator.Validate(model);
        Assert.Equal(expected, OrtRunner.Run(model.ToBytes(), input, FmnistDims));
        Assert.Equal(3, OnnxRewrites.RemoveIdentityAndDropout(model));
        Assert.DoesNotContain(g.Nodes, n => n.OpType == "Identity");
        Assert.Equal(expected, OrtRunner.Run(model.ToBytes(), input, FmnistDims));
    }

    [Fact]
    public void AddOutput_ExposesIntermediateWithItsType()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        var relu = model.Graph.Nodes.First(n => n.OpType == "Relu");
        model.Graph.AddOutput(relu.Outputs[0]);
        var added = model.Graph.Outputs[^1];
        Assert.Equal(relu.Outputs[0], added.Name);
        Assert.Equal(OnnxElementType.Float, added.ElementType);
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(model.ToBytes());
        Assert.Contains(relu.Outputs[0], session.OutputMetadata.Keys);
    }

    [Fact]
    public void FoldConstants_EvaluatesInitializerOnlySubgraph()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        var g = model.Graph;
        float[] input = OrtRunner.RandomInput(2 * 28 * 28, 4);
        float[] expected = OrtRunner.Run(model.ToBytes(), input, FmnistDims);
        // Rebuild a Gemm weight as Transpose(Mul(W^T, 2) / 2): three initializer-only nodes.
        var gemm = g.Nodes.First(n => n.OpType == "Gemm");
        Assert.True(g.TryGetInitializer(gemm.Inputs[1], out var w));
        long[] d = w.Dims;
        float[] wv = w.ToFloatArray(), wt = new float[wv.Length];
        for (long i = 0; i < d[0]; i++)
            for (long j = 0; j < d[1]; j++)
                wt[j * d[0] + i] = wv[i * d[1] + j];
        g.SetInitializer(OnnxTensor.FromFloats("wt", [d[1], d[0]], wt));
        g.SetInitializer(OnnxTensor.FromFloats("two", [], [2f]));
        g.RemoveInitializer(w.Name);
        g.InsertNode(g.CreateNode("Mul", ["wt", "two"], ["wt2"]), gemm);
        g.InsertNode(g.CreateNode("Div", ["wt2", "two"], ["wt1"]), gemm);
        g.InsertNode(g.CreateNode("Transpose", ["wt1"], [w.Name]), gemm);
        int before = g.Nodes.Count;
        Assert.Equal(3, OnnxRewrites.FoldConstants(model));
        Assert.Equal(before - 3, g.Nodes.Count);
        Assert.True(g.TryGetInitializer(w.Name, out var folded));
        Assert.Equal(wv, folded.ToFloatArray());
        Assert.False(g.IsInitializer("wt"));
        Assert.Equal(expected, OrtRunner.Run(model.ToBytes(), input, FmnistDims));
    }

    [Fact]
    public void Validate_Cycle_NamesANode()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        var nodes = model.Graph.Nodes;
        // The first Relu reads the second Relu's output: Conv -> Relu -> ... -> Relu -> back.
        var relus = nodes.Where(n => n.OpType == "Relu").ToList();
        relus[0].Inputs[0] = relus[1].Outputs[0];
        model.SourceName = "cycle.onnx";
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxValidator.Validate(model));
        Assert.Contains("'cycle.onnx'", e.Message);
        Assert.Contains("cycle", e.Message);
        Assert.Contains("node '", e.Message);
        // And the same through a saved file read back.
        var reread = OnnxModel.Parse(model.ToBytes(), sourceName: "cycle.onnx");
        Assert.Throws<InvalidOnnxModelException>(() => reread.Graph.TopologicalOrder());
    }

    [Fact]
    public void Validate_DanglingInput_DuplicateOutput_UnknownDomain()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        OnnxValidator.Validate(model);

        var dangling = model.Clone();
        var gemm = dangling.Graph.Nodes.First(n => n.OpType == "Gemm");
        gemm.Inputs[0] = "nowhere";
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxValidator.Validate(dangling));
        Assert.Contains($"node '{gemm.Name}' (Gemm) reads 'nowhere'", e.Message);
        Assert.Contains("dangling", e.Message);

        var duplicate = model.Clone();
        var relus = duplicate.Graph.Nodes.Where(n => n.OpType == "Relu").ToList();
        relus[1].Outputs[0] = relus[0].Outputs[0];
        e = Assert.Throws<InvalidOnnxModelException>(() => OnnxValidator.Validate(duplicate));
        Assert.Contains("duplicate output", e.Message);

        var domain = model.Clone();
        domain.Graph.Nodes[0].Domain = "com.example";
        e = Assert.Throws<InvalidOnnxModelException>(() => OnnxValidator.Validate(domain));
        Assert.Contains("com.example", e.Message);

        var opset = model.Clone();
        opset.SetOpset("", 99);
        e = Assert.Throws<InvalidOnnxModelException>(() => OnnxValidator.Validate(opset));
        Assert.Contains("opset 99", e.Message);
    }
}

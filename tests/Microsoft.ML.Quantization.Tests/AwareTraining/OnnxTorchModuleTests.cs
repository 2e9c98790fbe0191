using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Tests.Onnx;
using TorchSharp;

namespace Microsoft.ML.Quantization.Tests.AwareTraining;

/// <summary>The ONNX graph as a TorchSharp module computes what ONNX Runtime computes.</summary>
public sealed class OnnxTorchModuleTests
{
    public static TheoryData<string, bool> Models() => new() { { "fmnist", false }, { "fmnist-bn", false }, { "fmnist-bn", true }, { "resnet18", false }, { "resnet18", true } };

    [Theory]
    [MemberData(nameof(Models))]
    public void Forward_EqualsOnnxRuntime(string name, bool foldBatchNorm)
    {
        TorchSharpRuntime.EnsureLoaded();
        string path = name switch { "fmnist" => TestData.FmnistNet, "fmnist-bn" => TestData.FmnistNetBn, _ => TestData.ResNet18Path };
        int[] dims = name == "resnet18" ? [1, 3, 224, 224] : [4, 1, 28, 28];
        var model = OnnxModel.Load(path);
        OnnxRewrites.RemoveIdentityAndDropout(model);
        if (model.DefaultOpset < 13)
            OnnxRewrites.UpgradeOpset(model, 13);
        float[] input = OrtRunner.RandomInput(dims.Aggregate(1, (a, b) => a * b), 11);
        if (name == "resnet18")
            for (int i = 0; i < input.Length; i++) input[i] *= 100;   // pixels minus the mean image
        float[] expected = OrtRunner.Run(File.ReadAllBytes(path), input, dims);

        using var module = new OnnxTorchModule(model) { FoldBatchNorm = foldBatchNorm };
        module.eval();
        using var x = torch.tensor(input, dims.Select(d => (long)d).ToArray());
        using var y = module.forward(x);
        OrtRunner.AssertClose(expected, y.data<float>().ToArray(), 1e-4);
    }

    [Fact]
    public void UnsupportedOp_IsNamed()
    {
        TorchSharpRuntime.EnsureLoaded();
        var model = OnnxModel.Load(TestData.FmnistNet);
        var relu = model.Graph.Nodes.First(n => n.OpType == "Relu");
        relu.OpType = "Elu";
        var e = Assert.Throws<NotSupportedException>(() => new OnnxTorchModule(model));
        Assert.Contains($"node '{relu.Name}' (Elu)", e.Message);
        Assert.Contains("op Elu is not supported", e.Message);
    }
}

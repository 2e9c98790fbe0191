using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Quantization.Tests;

public sealed class TorchSharpTests
{
    [Fact]
    public void TinyModelTrainsAndItsLossFalls()
    {
        // y = 3x - 2 plus noise, learned by a 1->8->1 MLP with Adam: proves libtorch loads and autograd runs.
        Microsoft.ML.Quantization.AwareTraining.TorchSharpRuntime.EnsureLoaded();
        torch.manual_seed(7);
        using var x = torch.rand(256, 1) * 4 - 2;
        using var y = 3 * x - 2 + 0.05 * torch.randn(256, 1);
        var model = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1));
        using var optimizer = optim.Adam(model.parameters(), lr: 0.05);

        float first = 0, last = 0;
        for (int step = 0; step < 60; step++)
        {
            optimizer.zero_grad();
            using var loss = nn.functional.mse_loss(model.forward(x), y);
            loss.backward();
            optimizer.step();
            float value = loss.item<float>();
            if (step == 0) first = value;
            last = value;
        }
        Assert.True(last < first * 0.1f, $"loss went from {first} to {last}");
        Assert.True(float.IsFinite(last));
    }
}

using Microsoft.ML.Quantization.Inference;
using TorchSharp;

namespace QatMlConsumer.Lib;

/// <summary>Touches the three native pieces an app gets through this library: QatMl's engine, libtorch, ONNX Runtime.</summary>
public static class Runtimes
{
    public static string NativeLibraryVersion() => NativeRuntime.LibraryVersion;

    public static float TorchSum() => torch.ones(3).sum().item<float>();

    public static int OnnxRuntimeProviders() => Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetAvailableProviders().Length;
}

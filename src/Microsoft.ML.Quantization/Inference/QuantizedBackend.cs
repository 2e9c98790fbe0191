namespace Microsoft.ML.Quantization.Inference;

/// <summary>What runs a quantized model.</summary>
public enum QuantizedBackend
{
    /// <summary>ONNX Runtime (its QDQ fusions to integer kernels; CPU, CUDA or TensorRT). The default.</summary>
    OnnxRuntime = 0,
    /// <summary>
    /// QatMl's native INT8 engine on the CPU or a CUDA GPU (<c>NativeDevice</c>): the QDQ graph lowered to integer ops, weights packed once, a whole batch
    /// per native call (see docs/native-engine.md). Models with a node it cannot run fall back to ONNX Runtime when
    /// <c>AllowBackendFallback</c> is true.
    /// </summary>
    Native = 1,
}

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Creates ONNX Runtime sessions from <see cref="OnnxRuntimeOptions"/>: session options, the execution
/// provider, and the GPU-to-CPU fall-back rule (fall back and warn, or fail with a message that says
/// what is missing).
/// </summary>
internal static class OrtSessionFactory
{
    internal const string CudaProvider = "CUDAExecutionProvider";
    internal const string TensorRTProvider = "TensorrtExecutionProvider";

    /// <summary>The session and the provider that actually runs it.</summary>
    internal sealed record Result(InferenceSession Session, OnnxExecutionProvider Provider);

    internal static Result Create(MLContext context, byte[] model, OnnxRuntimeOptions options, string modelName,
        Func<IReadOnlyCollection<string>>? availableProviders = null)
    {
        EnsureNativeRuntime();
        bool fallback = options.FallbackToCpu ?? context.FallbackToCpu;
        int device = options.GpuDeviceId ?? context.GpuDeviceId ?? 0;
        OnnxExecutionProvider provider = options.ExecutionProvider;

        if (provider != OnnxExecutionProvider.Cpu)
        {
            string wanted = provider == OnnxExecutionProvider.TensorRT ? TensorRTProvider : CudaProvider;
            var available = (availableProviders ?? DefaultProviders)();
            string? problem = available.Contains(wanted) ? null
                : $"ONNX Runtime in this process has no {wanted} (available: {string.Join(", ", available)}). " +
                  "Reference Microsoft.ML.OnnxRuntime.Gpu instead of Microsoft.ML.OnnxRuntime and install the CUDA 13 " +
                  (provider == OnnxExecutionProvider.TensorRT ? "and TensorRT " : "") + "libraries, or allow CPU fall-back (FallbackToCpu = true).";
            if (problem is null)
            {
                try
                {
                    using SessionOptions so = BuildOptions(options, provider, device);
                    return new Result(new InferenceSession(model, so), provider);
                }
                catch (OnnxRuntimeException e)
                {
                    problem = $"ONNX Runtime could not start {wanted} on GPU {device} (no GPU, or its driver/CUDA libraries are missing): {e.Message}";
                }
            }
            if (!fallback)
                throw new InvalidOperationException($"Model '{modelName}': {problem}");
            using (IChannel ch = ((IChannelProvider)context).Start("QatMl.OnnxRuntime"))
                ch.Warning(MessageSensitivity.None, "{0}", $"Model '{modelName}': {problem} Running on the CPU instead.");
        }

        try
        {
            using SessionOptions so = BuildOptions(options, OnnxExecutionProvider.Cpu, 0);
            return new Result(new InferenceSession(model, so), OnnxExecutionProvider.Cpu);
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidOperationException($"ONNX Runtime cannot load model '{modelName}': {e.Message}", e);
        }
    }

    private static readonly Lazy<string?> s_missingNativeRuntime = new(ProbeNativeRuntime, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>
    /// The library references only Microsoft.ML.OnnxRuntime.Managed; the app brings the native onnxruntime. Without it
    /// ONNX Runtime fails with a bare TypeInitializationException / DllNotFoundException 'onnxruntime': say which package to add.
    /// </summary>
    internal static void EnsureNativeRuntime()
    {
        if (s_missingNativeRuntime.Value is { } reason)
            throw new InvalidOperationException(
                "ONNX Runtime's native library (onnxruntime) is not in this app: add the package Microsoft.ML.OnnxRuntime (CPU) or " +
                "Microsoft.ML.OnnxRuntime.Gpu (CUDA) to the app, at the version QatMl depends on (QatMl references only " +
                $"Microsoft.ML.OnnxRuntime.Managed). Loader: {reason}");
    }

    private static string? ProbeNativeRuntime()
    {
        try
        {
            _ = OrtEnv.Instance();
            return null;
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or EntryPointNotFoundException)
        {
            Exception root = e;
            while (root.InnerException is { } inner)
                root = inner;
            string message = root.Message;
            int end = message.IndexOf('\n');
            return end < 0 ? message : message[..end].TrimEnd(' ', ':');   // the loader's first line; the rest lists every path tried
        }
    }

    private static IReadOnlyCollection<string> DefaultProviders() => OrtEnv.Instance().GetAvailableProviders();

    private static SessionOptions BuildOptions(OnnxRuntimeOptions options, OnnxExecutionProvider provider, int device)
    {
        var so = new SessionOptions
        {
            IntraOpNumThreads = options.IntraOpNumThreads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = options.GraphOptimization switch
            {
                OnnxGraphOptimization.None => GraphOptimizationLevel.ORT_DISABLE_ALL,
                OnnxGraphOptimization.Basic => GraphOptimizationLevel.ORT_ENABLE_BASIC,
                OnnxGraphOptimization.Extended => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                _ => GraphOptimizationLevel.ORT_ENABLE_ALL,
            },
        };
        try
        {
            if (provider == OnnxExecutionProvider.TensorRT)
            {
                so.AppendExecutionProvider_Tensorrt(device);
                so.AppendExecutionProvider_CUDA(device);
            }
            else if (provider == OnnxExecutionProvider.Cuda)
            {
                so.AppendExecutionProvider_CUDA(device);
            }
        }
        catch
        {
            so.Dispose();
            throw;
        }
        return so;
    }
}

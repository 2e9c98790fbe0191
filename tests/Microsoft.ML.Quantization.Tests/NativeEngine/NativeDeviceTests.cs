using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.NativeEngine;

/// <summary>
/// The native engine's device choice: a CUDA GPU when one is there (results identical to the CPU's), else the CPU with a
/// warning; the default from <see cref="MLContext.GpuDeviceId"/>; the choice saved with the model.
/// </summary>
public sealed class NativeDeviceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qatml-device-").FullName;

    private static readonly Lazy<List<FashionMnist.Row>> Rows =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 64)));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static QuantizedModelTransformer Quantize(MLContext context, ComputeDevice? device)
    {
        var options = new PostTrainingOptions
        {
            ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 64, Backend = QuantizedBackend.Native, AllowBackendFallback = false,
            NativeDevice = device,
        };
        return context.Quantization.PostTraining(options).Fit(context.Data.LoadFromEnumerable(Rows.Value));
    }

    private static List<string> Warnings(MLContext context)
    {
        var messages = new List<string>();
        context.Log += (_, e) =>
        {
            if (e.Kind == Runtime.ChannelMessageKind.Warning)
                lock (messages)
                    messages.Add(e.Message);
        };
        return messages;
    }

    private static float[] Scores(MLContext context, ITransformer model)
        => context.Data.CreateEnumerable<Logits>(model.Transform(context.Data.LoadFromEnumerable(Rows.Value)), false).SelectMany(l => l.logits).ToArray();

    private sealed class Logits
    {
        public float[] logits { get; set; } = [];
    }

    [Fact]
    public void CudaRequestRunsOnTheGpuOrOnTheCpuWithAWarning()
    {
        var context = new MLContext(seed: 1);
        List<string> warnings = Warnings(context);
        using QuantizedModelTransformer gpu = Quantize(context, ComputeDevice.Cuda(0));
        using QuantizedModelTransformer cpu = Quantize(new MLContext(seed: 1), ComputeDevice.Cpu);
        Assert.Equal(QuantizedBackend.Native, gpu.Backend);
        Assert.Equal(ComputeDevice.Cpu, cpu.NativeDevice);
        if (NativeRuntime.CudaCompiled && NativeRuntime.CudaDeviceCount > 0)
        {
            Assert.Equal(ComputeDevice.Cuda(0), gpu.NativeDevice);
        }
        else
        {
            Assert.Equal(ComputeDevice.Cpu, gpu.NativeDevice);
            lock (warnings)
                Assert.Contains(warnings, m => m.Contains("CUDA device 0") && m.Contains("Running on the CPU instead"));
        }
        Assert.Equal(Scores(context, cpu), Scores(context, gpu));  // the GPU is bit-identical to the CPU
    }

    [Fact]
    public void DeviceDefaultsToTheContextsGpuAndIsSavedWithTheModel()
    {
        bool gpuPresent = NativeRuntime.CudaCompiled && NativeRuntime.CudaDeviceCount > 0;
        var context = new MLContext(seed: 1) { GpuDeviceId = 0 };
        List<string> warnings = Warnings(context);
        using (QuantizedModelTransformer byContext = Quantize(context, device: null))
        {
            Assert.Null(byContext.Settings.NativeDevice);  // resolved when loaded, not frozen into the model
            Assert.Equal(gpuPresent ? ComputeDevice.Cuda(0) : ComputeDevice.Cpu, byContext.NativeDevice);
            if (!gpuPresent)
                lock (warnings)
                    Assert.Contains(warnings, m => m.Contains("CUDA device 0"));
        }

        var plain = new MLContext(seed: 1);
        List<string> plainWarnings = Warnings(plain);
        using (QuantizedModelTransformer byDefault = Quantize(plain, device: null))
            Assert.Equal(ComputeDevice.Cpu, byDefault.NativeDevice);
        lock (plainWarnings)
            Assert.Empty(plainWarnings);

        // An explicit device travels with the model and applies again when it is loaded.
        using QuantizedModelTransformer explicitDevice = Quantize(plain, ComputeDevice.Cuda(3));
        string path = Path.Combine(_dir, "model.zip");
        plain.Model.Save(explicitDevice, plain.Data.LoadFromEnumerable(Rows.Value).Schema, path);
        var fresh = new MLContext(seed: 2);
        List<string> freshWarnings = Warnings(fresh);
        var restored = Assert.IsType<QuantizedModelTransformer>(fresh.Quantization.LoadModel(path, out _));
        using (restored)
        {
            Assert.Equal(ComputeDevice.Cuda(3), restored.Settings.NativeDevice);
            Assert.Equal(QuantizedBackend.Native, restored.Backend);
            if (NativeRuntime.CudaDeviceCount <= 3)
            {
                Assert.Equal(ComputeDevice.Cpu, restored.NativeDevice);
                lock (freshWarnings)
                    Assert.Contains(freshWarnings, m => m.Contains("CUDA device 3"));
            }
            Assert.Equal(Scores(plain, explicitDevice), Scores(fresh, restored));
        }
    }

    [Fact]
    public void InvalidDeviceIsAClearError()
    {
        var options = new PostTrainingOptions { ModelPath = TestData.FmnistNet, Backend = QuantizedBackend.Native, NativeDevice = ComputeDevice.Cuda(-1) };
        var context = new MLContext(seed: 1);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.PostTraining(options).Fit(context.Data.LoadFromEnumerable(Rows.Value)));
        Assert.Contains("NativeDevice", error.Message);
    }
}

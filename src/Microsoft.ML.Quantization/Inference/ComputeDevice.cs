namespace Microsoft.ML.Quantization.Inference;

/// <summary>Kinds of device the native engine can run on.</summary>
public enum ComputeDeviceKind
{
    /// <summary>The CPU (always present).</summary>
    Cpu = 0,
    /// <summary>A CUDA GPU (builds with CUDA support, hosts with a GPU).</summary>
    Cuda = 1,
}

/// <summary>A device for native work: the CPU, or a CUDA GPU by ordinal.</summary>
/// <param name="Kind">The kind of device.</param>
/// <param name="Index">0 for the CPU; the CUDA device ordinal otherwise.</param>
public readonly record struct ComputeDevice(ComputeDeviceKind Kind, int Index = 0)
{
    /// <summary>The CPU.</summary>
    public static ComputeDevice Cpu => new(ComputeDeviceKind.Cpu, 0);

    /// <summary>CUDA device <paramref name="index"/>.</summary>
    public static ComputeDevice Cuda(int index = 0) => new(ComputeDeviceKind.Cuda, index);
}

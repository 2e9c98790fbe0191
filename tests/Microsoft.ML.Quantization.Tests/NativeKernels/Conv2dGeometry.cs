namespace Microsoft.ML.Quantization.Tests.NativeKernels;

/// <summary>Geometry of a 2-D convolution or pooling over NCHW activations.</summary>
/// <param name="Batch">N.</param>
/// <param name="Channels">C.</param>
/// <param name="Height">H.</param>
/// <param name="Width">W.</param>
/// <param name="StrideH">Vertical stride.</param>
/// <param name="StrideW">Horizontal stride.</param>
/// <param name="PadTop">Rows of padding above.</param>
/// <param name="PadLeft">Columns of padding on the left.</param>
/// <param name="PadBottom">Rows of padding below.</param>
/// <param name="PadRight">Columns of padding on the right.</param>
/// <param name="DilationH">Vertical dilation.</param>
/// <param name="DilationW">Horizontal dilation.</param>
internal readonly record struct Conv2dGeometry(int Batch, int Channels, int Height, int Width, int StrideH = 1, int StrideW = 1,
    int PadTop = 0, int PadLeft = 0, int PadBottom = 0, int PadRight = 0, int DilationH = 1, int DilationW = 1)
{
    internal Interop.NativeMethods.Conv2dParams ToNative() => new()
    {
        Batch = Batch, Channels = Channels, Height = Height, Width = Width,
        StrideH = StrideH, StrideW = StrideW,
        PadTop = PadTop, PadLeft = PadLeft, PadBottom = PadBottom, PadRight = PadRight,
        DilationH = DilationH, DilationW = DilationW,
    };
}

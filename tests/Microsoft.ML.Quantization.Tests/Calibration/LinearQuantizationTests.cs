using Microsoft.ML.Quantization.Calibration;

namespace Microsoft.ML.Quantization.Tests.Calibration;

public class LinearQuantizationTests
{
    [Fact]
    public void QuantizeLinear_RoundsHalfToEven()
    {
        float[] x = [0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 0.49999997f];
        var q = new int[x.Length];
        LinearQuantization.QuantizeLinear(x, 1f, 0, 8, isSigned: true, q);
        Assert.Equal([0, 2, 2, 0, -2, -2, 0], q);
    }

    [Fact]
    public void QuantizeLinear_AddsZeroPointAndSaturatesToTheTypeRange()
    {
        float[] x = [1000f, -1000f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, 0.25f];
        var q = new int[x.Length];
        LinearQuantization.QuantizeLinear(x, 0.5f, 3, 8, isSigned: true, q);
        Assert.Equal([127, -128, 127, -128, -128, 3], q); // NaN -> the minimum, as ONNX Runtime; 0.25 / 0.5 = 0.5 -> 0, + 3
        LinearQuantization.QuantizeLinear(x, 0.5f, 3, 8, isSigned: false, q);
        Assert.Equal([255, 0, 255, 0, 0, 3], q);
        LinearQuantization.QuantizeLinear(x, 0.5f, 0, 4, isSigned: true, q);
        Assert.Equal([7, -8, 7, -8, -8, 0], q);
    }

    [Fact]
    public void QuantizeLinear_DividesInFloat32()
    {
        // ONNX divides in float32, then rounds: where the float32 quotient lands on .5 but the exact one does not,
        // the result follows float32.
        int discriminating = 0;
        for (int a = 1; a < 20_000; a++)
        {
            float x = a / 1000f, s = 0.1f;
            int float32 = (int)MathF.Round(x / s, MidpointRounding.ToEven);
            int exact = (int)Math.Round((double)x / s, MidpointRounding.ToEven);
            discriminating += float32 != exact ? 1 : 0;
            Assert.Equal(Math.Clamp(float32, -32768, 32767), LinearQuantization.QuantizeLinear(x, s, 0, 16, true));
        }
        Assert.True(discriminating > 0);
    }

    [Fact]
    public void DequantizeLinear_SubtractsZeroPointThenScales()
    {
        int[] q = [0, 3, 255];
        var y = new float[3];
        LinearQuantization.DequantizeLinear(q, 0.5f, 3, y);
        Assert.Equal([-1.5f, 0f, 126f], y);
    }

    [Fact]
    public void PerAxis_UsesTheChannelsScaleAndZeroPoint()
    {
        // [outer 2, channels 2, inner 2]
        float[] x = [1f, 2f, 1f, 2f, 3f, 4f, 3f, 4f];
        float[] scales = [1f, 0.5f];
        int[] zps = [0, 10];
        var q = new int[8];
        LinearQuantization.QuantizeLinear(x, scales, zps, innerSize: 2, bits: 8, isSigned: true, q);
        Assert.Equal([1, 2, 12, 14, 3, 4, 16, 18], q);
        var back = new float[8];
        LinearQuantization.DequantizeLinear(q, scales, zps, innerSize: 2, back);
        Assert.Equal(x, back);
        Assert.Throws<ArgumentException>(() => LinearQuantization.QuantizeLinear(x, scales, zps, innerSize: 3, bits: 8, isSigned: true, q));
    }

    [Fact]
    public void BadScale_Throws()
    {
        var q = new int[1];
        Assert.Throws<ArgumentOutOfRangeException>(() => LinearQuantization.QuantizeLinear([1f], 0f, 0, 8, true, q));
        Assert.Throws<ArgumentOutOfRangeException>(() => LinearQuantization.QuantizeLinear([1f], float.NaN, 0, 8, true, q));
    }
}

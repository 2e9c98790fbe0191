using System.Numerics.Tensors;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// Exact streaming statistics of one tensor (or one channel): finite count, exact finite min and max, the count
/// of NaN and infinities (excluded from everything else), and optionally the histogram and moving average.
/// Only integer counts and min/max are accumulated, so the result does not depend on how data was batched.
/// </summary>
internal sealed class ChannelStatistics
{
    private PowerOfTwoHistogram? _histogram;
    private readonly double _averagingConstant;
    private bool _averageStarted;

    public ChannelStatistics(bool withHistogram, double averagingConstant = 0)
    {
        _histogram = withHistogram ? new PowerOfTwoHistogram() : null;
        _averagingConstant = averagingConstant;
    }

    public long Count { get; private set; }

    public long NonFiniteCount { get; private set; }

    public float Min { get; private set; } = float.PositiveInfinity;

    public float Max { get; private set; } = float.NegativeInfinity;

    public PowerOfTwoHistogram? Histogram => _histogram;

    /// <summary>Moving average of batch minima (only with an averaging constant).</summary>
    public float AverageMin { get; private set; }

    /// <summary>Moving average of batch maxima (only with an averaging constant).</summary>
    public float AverageMax { get; private set; }

    public void Observe(ReadOnlySpan<float> data)
    {
        if (data.IsEmpty)
            return;

        // Vectorised fast path: Min propagates NaN and Max/Min expose infinities, so finite results mean all finite.
        float min = TensorPrimitives.Min(data), max = TensorPrimitives.Max(data);
        long finite = data.Length;
        bool allFinite = float.IsFinite(min) && float.IsFinite(max);
        if (!allFinite)
        {
            (min, max, finite) = FiniteMinMax(data);
            NonFiniteCount += data.Length - finite;
            if (finite == 0)
                return;
        }

        Count += finite;
        Min = MathF.Min(Min, min);
        Max = MathF.Max(Max, max);
        _histogram?.Add(data, MathF.Max(MathF.Abs(min), MathF.Abs(max)), allFinite);

        if (_averagingConstant > 0)
        {
            if (!_averageStarted)
            {
                (AverageMin, AverageMax, _averageStarted) = (min, max, true);
            }
            else
            {
                // ONNX Runtime's and PyTorch's MovingAverageMinMax update: avg += c * (batch - avg).
                AverageMin = (float)(AverageMin + _averagingConstant * (min - AverageMin));
                AverageMax = (float)(AverageMax + _averagingConstant * (max - AverageMax));
            }
        }
    }

    public void Merge(ChannelStatistics other)
    {
        if (_averagingConstant > 0 || other._averagingConstant > 0)
            throw new InvalidOperationException(
                "MovingAverageMinMax depends on the order of the batches, so its observers cannot be merged; calibrate it in one pass over the data or use MinMax.");
        Count += other.Count;
        NonFiniteCount += other.NonFiniteCount;
        Min = MathF.Min(Min, other.Min);
        Max = MathF.Max(Max, other.Max);
        if (_histogram is not null && other._histogram is not null)
            _histogram.Merge(other._histogram);
    }

    /// <summary>Writes the mergeable state (not the moving average, which is never shipped).</summary>
    internal void Write(BinaryWriter writer)
    {
        writer.Write(Count);
        writer.Write(NonFiniteCount);
        writer.Write(Min);
        writer.Write(Max);
        writer.Write(_histogram is not null);
        _histogram?.Write(writer);
    }

    /// <summary>Reads what <see cref="Write"/> wrote into this fresh instance.</summary>
    internal void Read(BinaryReader reader)
    {
        Count = reader.ReadInt64();
        NonFiniteCount = reader.ReadInt64();
        Min = reader.ReadSingle();
        Max = reader.ReadSingle();
        bool hasHistogram = reader.ReadBoolean();
        if (Count < 0 || NonFiniteCount < 0 || hasHistogram != (_histogram is not null)
            || (Count > 0 && !(float.IsFinite(Min) && float.IsFinite(Max) && Min <= Max)))
            throw new InvalidDataException("Channel statistics are inconsistent.");
        if (hasHistogram)
            _histogram = PowerOfTwoHistogram.Read(reader);
    }

    private static (float Min, float Max, long Finite) FiniteMinMax(ReadOnlySpan<float> data)
    {
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        long finite = 0;
        foreach (float x in data)
        {
            if (!float.IsFinite(x))
                continue;
            finite++;
            min = MathF.Min(min, x);
            max = MathF.Max(max, x);
        }
        return (min, max, finite);
    }
}

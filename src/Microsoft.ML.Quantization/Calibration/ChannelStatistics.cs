using System.Runtime.Intrinsics;
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

        // One vectorised pass for min, max and finiteness; TensorPrimitives (two passes, NaN-propagating, -0 < +0) settles
        // the rare cases the fast pass leaves open, so the result never depends on the pass taken.
        long finite = data.Length;
        if (!FastMinMax(data, out float min, out float max))
        {
            min = TensorPrimitives.Min(data);
            max = TensorPrimitives.Max(data);
        }
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

    /// <summary>
    /// Min and max in one read of the data, ordering -0 below +0 as TensorPrimitives does (vminps/vmaxps do not, so
    /// the presence of each zero is tracked). Returns false (results unusable) when a value is NaN or infinite.
    /// </summary>
    private static bool FastMinMax(ReadOnlySpan<float> data, out float min, out float max)
    {
        min = max = 0;
        if (!Vector512.IsHardwareAccelerated || data.Length < 64)
            return false;
        ref float first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(data);
        var exponentMask = Vector512.Create(0x7F80_0000u);
        Vector512<float> lo = Vector512.LoadUnsafe(ref first), hi = lo;
        Vector512<uint> special = Vector512<uint>.Zero, positiveZero = Vector512<uint>.Zero, negativeZero = Vector512<uint>.Zero;
        var signBit = Vector512.Create(0x8000_0000u);
        int i = 0, n = data.Length;
        for (; i + 16 <= n; i += 16)
        {
            Vector512<float> v = Vector512.LoadUnsafe(ref first, (nuint)i);
            lo = Vector512.MinNative(lo, v);
            hi = Vector512.MaxNative(hi, v);
            special |= Vector512.Equals(v.AsUInt32() & exponentMask, exponentMask);
            positiveZero |= Vector512.Equals(v.AsUInt32(), Vector512<uint>.Zero);
            negativeZero |= Vector512.Equals(v.AsUInt32(), signBit);
        }
        Vector512<float> tail = Vector512.LoadUnsafe(ref first, (nuint)(n - 16)); // overlaps: min/max are idempotent
        lo = Vector512.MinNative(lo, tail);
        hi = Vector512.MaxNative(hi, tail);
        special |= Vector512.Equals(tail.AsUInt32() & exponentMask, exponentMask);
        positiveZero |= Vector512.Equals(tail.AsUInt32(), Vector512<uint>.Zero);
        negativeZero |= Vector512.Equals(tail.AsUInt32(), signBit);
        if (special != Vector512<uint>.Zero)
            return false;
        min = float.PositiveInfinity;
        max = float.NegativeInfinity;
        for (int k = 0; k < 16; k++)
        {
            min = MathF.Min(min, lo.GetElement(k));
            max = MathF.Max(max, hi.GetElement(k));
        }
        if (min == 0)
            min = negativeZero != Vector512<uint>.Zero ? -0f : 0f;
        if (max == 0)
            max = positiveZero != Vector512<uint>.Zero ? 0f : -0f;
        return true;
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

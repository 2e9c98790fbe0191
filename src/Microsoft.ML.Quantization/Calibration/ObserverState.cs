namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// A compact binary form of a <see cref="TensorObserver"/>'s mergeable state (options, exact counts and extremes,
/// sparse histograms), so shards calibrated in other processes or on other machines can be shipped and merged.
/// Little-endian: "QCOB", version, options, channel count (-1 per tensor), then per channel the statistics.
/// </summary>
internal static class ObserverState
{
    private const int Magic = 0x424F4351; // "QCOB"
    private const int Version = 1;

    public static void Write(TensorObserver observer, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(observer);
        ArgumentNullException.ThrowIfNull(stream);
        var o = observer.Options;
        if (o.Method == CalibrationMethod.MovingAverageMinMax)
            throw new InvalidOperationException("MovingAverageMinMax depends on the order of the batches and cannot be sharded, so its state is not exported.");
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((int)o.Method);
        w.Write(o.Bits);
        w.Write(o.IsSigned);
        w.Write(o.IsSymmetric);
        w.Write(o.Percentile);
        w.Write(o.MovingAverageConstant);
        w.Write(observer.ChannelCount ?? -1);
        for (int c = 0; c < (observer.ChannelCount ?? 1); c++)
            observer.Channel(c).Write(w);
    }

    public static TensorObserver Read(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        try
        {
            if (r.ReadInt32() != Magic)
                throw new InvalidDataException("Not a calibration observer state (bad magic).");
            int version = r.ReadInt32();
            if (version != Version)
                throw new InvalidDataException($"Observer state version {version} is not supported (expected {Version}).");
            var options = new CalibrationOptions
            {
                Method = (CalibrationMethod)r.ReadInt32(),
                Bits = r.ReadInt32(),
                IsSigned = r.ReadBoolean(),
                IsSymmetric = r.ReadBoolean(),
                Percentile = r.ReadDouble(),
                MovingAverageConstant = r.ReadDouble(),
            };
            int channels = r.ReadInt32();
            var observer = new TensorObserver(options, channels == -1 ? null : channels);
            for (int c = 0; c < (observer.ChannelCount ?? 1); c++)
                observer.Channel(c).Read(r);
            return observer;
        }
        catch (Exception e) when (e is EndOfStreamException or ArgumentException)
        {
            throw new InvalidDataException($"Observer state is truncated or invalid: {e.Message}", e);
        }
    }
}

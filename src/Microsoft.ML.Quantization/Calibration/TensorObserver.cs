using System.Buffers;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// Streams one tensor's values (batch by batch, or a weight once) in bounded memory and turns them into a
/// <see cref="CalibrationTableEntry"/>. Per tensor it keeps exact min/max and counts, plus, for Percentile, Entropy
/// and Mse, a 2 x 2048-bin <see cref="PowerOfTwoHistogram"/>; per channel it keeps one of those per channel.
/// Every method is supported per channel. Except for MovingAverageMinMax, observers over disjoint shards of the data
/// merge into exactly the observer of the whole.
/// </summary>
internal sealed class TensorObserver
{
    private readonly ChannelStatistics[] _channels;

    /// <param name="options">The method and target type; validated and copied.</param>
    /// <param name="channelCount">Null for per-tensor; otherwise the size of the channel axis.</param>
    public TensorObserver(CalibrationOptions options, int? channelCount = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (channelCount is < 1)
            throw new ArgumentOutOfRangeException(nameof(channelCount), channelCount, "A per-channel observer needs at least one channel.");
        Options = options.Clone();
        ChannelCount = channelCount;
        bool histogram = options.Method is CalibrationMethod.Percentile or CalibrationMethod.Entropy or CalibrationMethod.Mse or CalibrationMethod.Auto;
        double averaging = options.Method == CalibrationMethod.MovingAverageMinMax ? options.MovingAverageConstant : 0;
        _channels = new ChannelStatistics[channelCount ?? 1];
        for (int c = 0; c < _channels.Length; c++)
            _channels[c] = new ChannelStatistics(histogram, averaging);
    }

    private TensorObserver(CalibrationOptions options, int? channelCount, ChannelStatistics[] channels)
    {
        Options = options;
        ChannelCount = channelCount;
        _channels = channels;
    }

    /// <summary>
    /// The same observations calibrated with another method (the statistics are shared, not copied): one pass with a
    /// histogram-keeping method (Percentile, Entropy, Mse, Auto) serves MinMax, Percentile, Entropy, Mse and Auto ranges.
    /// </summary>
    internal TensorObserver WithMethod(CalibrationMethod method)
    {
        if ((method != CalibrationMethod.MinMax && _channels.Any(c => c.Histogram is null)) || method == CalibrationMethod.MovingAverageMinMax)
            throw new InvalidOperationException($"An observer calibrated with {Options.Method} keeps no statistics for {method}.");
        var options = Options.Clone();
        options.Method = method;
        options.Validate();
        return new TensorObserver(options, ChannelCount, _channels);
    }

    /// <summary>A copy of the options this observer was created with.</summary>
    public CalibrationOptions Options { get; }

    /// <summary>Null for a per-tensor observer; else the number of channels.</summary>
    public int? ChannelCount { get; }

    /// <summary>Finite values seen, over all channels.</summary>
    public long Count => _channels.Sum(c => c.Count);

    /// <summary>NaN and infinities seen (and left out of every range), over all channels.</summary>
    public long NonFiniteCount => _channels.Sum(c => c.NonFiniteCount);

    internal ChannelStatistics Channel(int index) => _channels[index];

    /// <summary>Observes one batch of a per-tensor observer (any shape, flattened).</summary>
    public void Observe(ReadOnlySpan<float> data)
    {
        if (ChannelCount is not null)
            throw new InvalidOperationException($"This observer is per channel ({ChannelCount} channels); call Observe(data, channelAxisSize, innerSize).");
        _channels[0].Observe(data);
    }

    /// <summary>
    /// Observes a tensor laid out [outer, <paramref name="channelAxisSize"/>, <paramref name="innerSize"/>]
    /// (row-major; innerSize is the product of the dimensions after the channel axis).
    /// </summary>
    public void Observe(ReadOnlySpan<float> data, int channelAxisSize, int innerSize)
    {
        if (ChannelCount is null)
            throw new InvalidOperationException("This observer is per tensor; call Observe(data).");
        if (channelAxisSize != ChannelCount)
            throw new ArgumentException($"The channel axis has {channelAxisSize} entries but the observer was created for {ChannelCount}.", nameof(channelAxisSize));
        if (innerSize < 1 || data.Length % ((long)channelAxisSize * innerSize) != 0)
            throw new ArgumentException($"A tensor of {data.Length} values is not [outer, {channelAxisSize}, {innerSize}].", nameof(innerSize));

        int outer = data.Length / (channelAxisSize * innerSize);
        if (outer == 1)
        {
            for (int c = 0; c < channelAxisSize; c++)
                _channels[c].Observe(data.Slice(c * innerSize, innerSize));
            return;
        }

        // Gather each channel so one call sees it whole (the moving average counts calls as batches).
        float[] buffer = ArrayPool<float>.Shared.Rent(outer * innerSize);
        try
        {
            for (int c = 0; c < channelAxisSize; c++)
            {
                for (int o = 0; o < outer; o++)
                    data.Slice((o * channelAxisSize + c) * innerSize, innerSize).CopyTo(buffer.AsSpan(o * innerSize));
                _channels[c].Observe(buffer.AsSpan(0, outer * innerSize));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
        }
    }

    /// <summary>Adds another shard's observations. Both must have the same options and channels.</summary>
    public void Merge(TensorObserver other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (Options.Method == CalibrationMethod.MovingAverageMinMax || other.Options.Method == CalibrationMethod.MovingAverageMinMax)
            throw new InvalidOperationException(
                "MovingAverageMinMax depends on the order of the batches, so its observers cannot be merged; calibrate it in one pass over the data or use MinMax.");
        if (!Options.SameCalibration(other.Options) || ChannelCount != other.ChannelCount)
            throw new ArgumentException("Only observers with the same method, bits, signedness, symmetry, method settings and channel count can be merged.", nameof(other));
        for (int c = 0; c < _channels.Length; c++)
            _channels[c].Merge(other._channels[c]);
    }

    /// <summary>Writes the mergeable state so a shard calibrated elsewhere can be merged (not for MovingAverageMinMax).</summary>
    public void WriteState(Stream stream) => ObserverState.Write(this, stream);

    /// <summary>Reads an observer written by <see cref="WriteState"/>; throws <see cref="InvalidDataException"/> on bad data.</summary>
    public static TensorObserver ReadState(Stream stream) => ObserverState.Read(stream);

    /// <summary>The calibrated range of each channel (one entry per tensor when not per channel).</summary>
    /// <param name="tensorName">Used in error messages only.</param>
    public (float[] Min, float[] Max) ComputeRanges(string tensorName = "tensor")
    {
        var min = new float[_channels.Length];
        var max = new float[_channels.Length];
        for (int c = 0; c < _channels.Length; c++)
            (min[c], max[c]) = ComputeRange(_channels[c], tensorName, c);
        return (min, max);
    }

    /// <summary>Calibrates and packs the result as a table entry.</summary>
    /// <param name="tensorName">The ONNX tensor name.</param>
    /// <param name="kind">Activation or weight.</param>
    /// <param name="axis">The per-channel axis of the ONNX tensor, required exactly when this observer is per channel.</param>
    public CalibrationTableEntry ToEntry(string tensorName, TensorKind kind, int? axis = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(tensorName);
        if ((axis is null) != (ChannelCount is null))
            throw new ArgumentException(ChannelCount is null ? "A per-tensor observer has no axis." : "A per-channel observer needs its axis.", nameof(axis));

        var (min, max) = ComputeRanges(tensorName);
        var scales = new float[min.Length];
        var zeroPoints = new int[min.Length];
        for (int c = 0; c < min.Length; c++)
            (scales[c], zeroPoints[c]) = QuantizationParameters.Compute(min[c], max[c], Options.Bits, Options.IsSigned, Options.IsSymmetric);
        return new CalibrationTableEntry(tensorName, kind, Options.Method, Options.Bits, Options.IsSigned, Options.IsSymmetric,
            axis, min, max, scales, zeroPoints, Summarize());
    }

    /// <summary>The histogram summary over all channels (counts summed, extremes and exponent the widest).</summary>
    public HistogramSummary Summarize()
    {
        long count = 0, nonFinite = 0;
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        int binsUsed = 0;
        int? exponent = null;
        foreach (var ch in _channels)
        {
            count += ch.Count;
            nonFinite += ch.NonFiniteCount;
            min = MathF.Min(min, ch.Min);
            max = MathF.Max(max, ch.Max);
            if (ch.Histogram is { } h)
            {
                binsUsed = Math.Max(binsUsed, h.BinsUsed());
                exponent = Math.Max(exponent ?? int.MinValue, h.Exponent);
            }
        }
        if (count == 0)
            (min, max) = (0f, 0f);
        return new HistogramSummary(count, nonFinite, min, max, exponent is null ? 0 : PowerOfTwoHistogram.BinCount, binsUsed, exponent);
    }

    /// <summary>
    /// The KL threshold, respecting the tensor's sides. One-sided data (post-ReLU, or all non-positive) uses every level
    /// of the type on that side when the type's codes all map onto it; symmetric quantization keeps the |x| threshold
    /// [-T, T]. An asymmetric tensor with both signs gets a threshold per side, each searched on its own half of the
    /// histogram with the share of the levels its extent takes (re-split once with the thresholds found), so a logit
    /// tensor with a long positive tail is not clipped to its negative side's width.
    /// </summary>
    private static (float Min, float Max) EntropyRange(ChannelStatistics ch, CalibrationOptions o)
    {
        var histogram = ch.Histogram!;
        double width = histogram.BinWidth;
        bool allLevels = !o.IsSigned || !o.IsSymmetric;
        float Threshold(ReadOnlySpan<long> counts, int levels, float extreme)
            => MathF.Min((float)(EntropyThreshold.FindThresholdBins(counts, Math.Clamp(levels, 1, PowerOfTwoHistogram.BinCount)) * width), extreme);
        if (ch.Min >= 0)
            return (0f, Threshold(histogram.NonNegative, 1 << (allLevels ? o.Bits : o.Bits - 1), ch.Max));
        if (ch.Max <= 0 && allLevels)
            return (-Threshold(histogram.Negative, 1 << o.Bits, -ch.Min), 0f);
        if (o.IsSymmetric)
        {
            float t = Threshold(histogram.AbsoluteCounts(), 1 << (o.Bits - 1), MathF.Max(-ch.Min, ch.Max));
            return (-t, t);
        }
        int total = 1 << o.Bits;
        float low = -ch.Min, high = ch.Max;
        for (int pass = 0; pass < 2; pass++)
        {
            int positive = Math.Clamp((int)Math.Round(total * high / (low + high)), 1, total - 1);
            float newHigh = Threshold(histogram.NonNegative, positive, ch.Max);
            float newLow = Threshold(histogram.Negative, total - positive, -ch.Min);
            (low, high) = (newLow, newHigh);
        }
        return (-low, high);
    }

    private (float Min, float Max) ComputeRange(ChannelStatistics ch, string tensorName, int channel)
    {
        if (ch.Count == 0)
        {
            string where = ChannelCount is null ? $"Tensor '{tensorName}'" : $"Channel {channel} of tensor '{tensorName}'";
            throw new InvalidOperationException(ch.NonFiniteCount == 0
                ? $"{where} has no observed values; calibrate with at least one non-empty batch."
                : $"{where} has no finite values: all {ch.NonFiniteCount} observed values are NaN or infinite.");
        }

        var o = Options;
        switch (o.Method)
        {
            case CalibrationMethod.MinMax:
                return (ch.Min, ch.Max);
            case CalibrationMethod.MovingAverageMinMax:
                return (ch.AverageMin, ch.AverageMax);
            case CalibrationMethod.Percentile:
                return PercentileRange.Compute(ch.Histogram!, ch, o.Percentile, o.IsSymmetric);
            case CalibrationMethod.Mse:
                return MseRange.Compute(ch.Histogram!, ch, o.Bits, o.IsSigned, o.IsSymmetric);
            case CalibrationMethod.Entropy:
                return EntropyRange(ch, o);
            case CalibrationMethod.Auto:
                {
                    var centres = MseRange.Centres(ch.Histogram!, ch);
                    var candidates = new List<(float Min, float Max)> { (ch.Min, ch.Max), PercentileRange.Compute(ch.Histogram!, ch, o.Percentile, o.IsSymmetric) };
                    if (o.Bits <= 8)
                        candidates.Add(EntropyRange(ch, o));
                    return candidates.MinBy(c => MseRange.SquaredError(centres, c.Min, c.Max, o.Bits, o.IsSigned, o.IsSymmetric));
                }
            default:
                throw new InvalidOperationException($"Unknown calibration method {o.Method}.");
        }
    }
}

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// A two-sided histogram of finite values on a deterministic grid: 2048 bins of |x| over [0, 2^Exponent) for the
/// non-negative values (sign bit clear) and 2048 for the negative ones (sign bit set, so -0 counts there).
/// Exponent is the smallest power of two above every |x| seen (at least <see cref="MinExponent"/>). Growing the
/// range merges bin pairs, which is exact because the grids nest; so the counts depend only on the multiset of
/// values, never on how they were split into batches or shards, and merging is exact.
/// </summary>
internal sealed class PowerOfTwoHistogram
{
    public const int BinCount = 2048;
    public const int Log2BinCount = 11;
    public const int MinExponent = -64;

    // [0, BinCount): x >= +0; [BinCount, 2 * BinCount): x <= -0. Indexed by sign bit * BinCount + bin.
    private readonly long[] _counts = new long[2 * BinCount];

    public int Exponent { get; private set; } = MinExponent;

    /// <summary>Width of one bin: 2^(Exponent - 11).</summary>
    public double BinWidth => Math.ScaleB(1.0, Exponent - Log2BinCount);

    public ReadOnlySpan<long> NonNegative => _counts.AsSpan(0, BinCount);

    public ReadOnlySpan<long> Negative => _counts.AsSpan(BinCount, BinCount);

    /// <summary>Adds every finite value of <paramref name="data"/>; <paramref name="maxAbs"/> is their largest |x|.</summary>
    public void Add(ReadOnlySpan<float> data, float maxAbs, bool allFinite)
    {
        Grow(ExponentFor(maxAbs));
        // A power-of-two multiplier makes |x| * mul exact, so the bin never depends on rounding.
        float mul = MathF.ScaleB(1f, Log2BinCount - Exponent);
        long[] counts = _counts;
        if (allFinite)
        {
            foreach (float x in data)
            {
                uint bits = BitConverter.SingleToUInt32Bits(x);
                int bin = (int)(BitConverter.UInt32BitsToSingle(bits & 0x7FFF_FFFF) * mul);
                counts[(int)(bits >> 31 << Log2BinCount) + bin]++;
            }
        }
        else
        {
            foreach (float x in data)
            {
                uint bits = BitConverter.SingleToUInt32Bits(x);
                if ((bits & 0x7F80_0000) == 0x7F80_0000)
                    continue; // NaN or infinity: counted by the caller, never binned.
                int bin = (int)(BitConverter.UInt32BitsToSingle(bits & 0x7FFF_FFFF) * mul);
                counts[(int)(bits >> 31 << Log2BinCount) + bin]++;
            }
        }
    }

    /// <summary>Adds <paramref name="other"/>'s counts after bringing both to the larger exponent.</summary>
    public void Merge(PowerOfTwoHistogram other)
    {
        Grow(other.Exponent);
        int shift = Exponent - other.Exponent;
        for (int i = 0; i < other._counts.Length; i++)
        {
            long c = other._counts[i];
            if (c != 0)
                _counts[Rebin(i, shift)] += c;
        }
    }

    /// <summary>|x| counts of both sides added, for symmetric estimators.</summary>
    public long[] AbsoluteCounts()
    {
        var abs = new long[BinCount];
        for (int i = 0; i < BinCount; i++)
            abs[i] = _counts[i] + _counts[BinCount + i];
        return abs;
    }

    /// <summary>One past the highest non-empty |x| bin (0 when empty).</summary>
    public int BinsUsed()
    {
        for (int i = BinCount - 1; i >= 0; i--)
        {
            if (_counts[i] != 0 || _counts[BinCount + i] != 0)
                return i + 1;
        }
        return 0;
    }

    /// <summary>Writes the exponent and the non-empty bins (sparse) for <see cref="ObserverState"/>.</summary>
    internal void Write(BinaryWriter writer)
    {
        writer.Write(Exponent);
        int nonEmpty = 0;
        foreach (long c in _counts)
            nonEmpty += c != 0 ? 1 : 0;
        writer.Write(nonEmpty);
        for (int i = 0; i < _counts.Length; i++)
        {
            if (_counts[i] != 0)
            {
                writer.Write((short)i);
                writer.Write(_counts[i]);
            }
        }
    }

    /// <summary>Reads what <see cref="Write"/> wrote; throws <see cref="InvalidDataException"/> on bad data.</summary>
    internal static PowerOfTwoHistogram Read(BinaryReader reader)
    {
        var h = new PowerOfTwoHistogram();
        int exponent = reader.ReadInt32();
        if (exponent is < MinExponent or > 129)
            throw new InvalidDataException($"Histogram exponent {exponent} is out of range.");
        h.Exponent = exponent;
        int nonEmpty = reader.ReadInt32();
        if (nonEmpty is < 0 or > 2 * BinCount)
            throw new InvalidDataException($"Histogram has {nonEmpty} non-empty bins.");
        for (int n = 0; n < nonEmpty; n++)
        {
            int i = reader.ReadInt16();
            long c = reader.ReadInt64();
            if (i is < 0 or >= 2 * BinCount || c <= 0)
                throw new InvalidDataException($"Histogram bin {i} has invalid count {c}.");
            h._counts[i] = c;
        }
        return h;
    }

    /// <summary>The smallest e (at least <see cref="MinExponent"/>) with |x| &lt; 2^e.</summary>
    internal static int ExponentFor(float maxAbs)
        => maxAbs == 0 || float.IsSubnormal(maxAbs) ? MinExponent : Math.Max(MinExponent, MathF.ILogB(maxAbs) + 1);

    private void Grow(int exponent)
    {
        int shift = exponent - Exponent;
        if (shift <= 0)
            return;
        // In place and ascending: the target index never exceeds the source index.
        for (int i = 0; i < _counts.Length; i++)
        {
            long c = _counts[i];
            if (c == 0)
                continue;
            _counts[i] = 0;
            _counts[Rebin(i, shift)] += c;
        }
        Exponent = exponent;
    }

    private static int Rebin(int index, int shift)
    {
        int side = index & BinCount;
        int bin = index & (BinCount - 1);
        return side | (shift >= Log2BinCount ? 0 : bin >> shift);
    }
}

using System.Numerics;
using System.Runtime.Intrinsics.X86;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
        if (allFinite && data.Length >= SplitThreshold)
        {
            AddSplit(data, mul);
            return;
        }
        long[] counts = _counts;
        foreach (float x in data)
        {
            uint bits = BitConverter.SingleToUInt32Bits(x);
            if (!allFinite && (bits & 0x7F80_0000) == 0x7F80_0000)
                continue; // NaN or infinity: counted by the caller, never binned.
            counts[BinIndex(bits, mul)]++;
        }
    }

    // Below this many values folding the sub-histograms costs more than the split path saves.
    private const int SplitThreshold = 1 << 15;

    // Interleaved int32 sub-histograms (lazily allocated, reused): lane j of a vector counts into sub-histogram j % 8.
    private const int SubHistograms = 8;
    private int[]? _split;

    private static int BinIndex(uint bits, float mul)
        => (int)(bits >> 31 << Log2BinCount) + (int)(BitConverter.UInt32BitsToSingle(bits & 0x7FFF_FFFF) * mul);

    /// <summary>
    /// The bulk path: bin indices 16 (or 8) at a time in vector registers, counted into eight interleaved
    /// sub-histograms so runs of equal values (ReLU zeros) do not serialise on one counter, then folded into the
    /// 64-bit counts. Bins are computed exactly as <see cref="BinIndex"/> does (|x| * 2^k, truncated).
    /// </summary>
    private unsafe void AddSplit(ReadOnlySpan<float> data, float mul)
    {
        const int Stride = 2 * BinCount;
        int[] split = _split ??= new int[SubHistograms * Stride];
        Span<int> index = stackalloc int[16];
        while (!data.IsEmpty)
        {
            // int32 sub-counts: fold before any could overflow.
            ReadOnlySpan<float> chunk = data[..Math.Min(data.Length, 1 << 30)];
            data = data[chunk.Length..];
            ref float first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(chunk);
            int i = 0, n = chunk.Length;
            ref int counts = ref split[0];
            ref int lane = ref index[0];
            if (Avx512F.IsSupported && Vector512.IsHardwareAccelerated)
            {
                // Exact +0 (most of a post-ReLU tensor) is counted by popcount; only the other lanes' indices are
                // compressed into a pending buffer and counted in batches.
                var scale = Vector512.Create(mul);
                var magnitude = Vector512.Create(0x7FFF_FFFFu);
                var subOffset = Vector512.Create(0, Stride, 2 * Stride, 3 * Stride, 4 * Stride, 5 * Stride, 6 * Stride, 7 * Stride,
                    0, Stride, 2 * Stride, 3 * Stride, 4 * Stride, 5 * Stride, 6 * Stride, 7 * Stride);
                int[] pending = _pending ??= new int[PendingCapacity + 16];
                long zeros = 0;
                int queued = 0;
                fixed (int* queue = pending)
                {
                    for (; i + 16 <= n; i += 16)
                    {
                        Vector512<uint> bits = Vector512.LoadUnsafe(ref first, (nuint)i).AsUInt32();
                        Vector512<int> bin = Vector512.ConvertToInt32((bits & magnitude).AsSingle() * scale);
                        Vector512<int> slot = (bin | ((bits >> 31) << Log2BinCount).AsInt32()) + subOffset;
                        Vector512<uint> isZero = Vector512.Equals(bits, Vector512<uint>.Zero);
                        int zeroLanes = BitOperations.PopCount(isZero.ExtractMostSignificantBits());
                        zeros += zeroLanes;
                        Avx512F.CompressStore(queue + queued, (~isZero).AsInt32(), slot);
                        queued += 16 - zeroLanes;
                        if (queued >= PendingCapacity)
                        {
                            CountPending(ref counts, pending, queued);
                            queued = 0;
                        }
                    }
                }
                CountPending(ref counts, pending, queued);
                _counts[0] += zeros;
            }
            else if (Vector512.IsHardwareAccelerated)
            {
                var scale = Vector512.Create(mul);
                var magnitude = Vector512.Create(0x7FFF_FFFFu);
                // Lane j counts into sub-histogram j % 8: bin | (j % 4) * Stride is folded into the index vector.
                var subOffset = Vector512.Create(0, Stride, 2 * Stride, 3 * Stride, 4 * Stride, 5 * Stride, 6 * Stride, 7 * Stride,
                    0, Stride, 2 * Stride, 3 * Stride, 4 * Stride, 5 * Stride, 6 * Stride, 7 * Stride);
                for (; i + 16 <= n; i += 16)
                {
                    Vector512<uint> bits = Vector512.LoadUnsafe(ref first, (nuint)i).AsUInt32();
                    Vector512<int> bin = Vector512.ConvertToInt32((bits & magnitude).AsSingle() * scale);
                    ((bin | ((bits >> 31) << Log2BinCount).AsInt32()) + subOffset).StoreUnsafe(ref lane);
                    for (int j = 0; j < 16; j++)
                        Unsafe.Add(ref counts, Unsafe.Add(ref lane, j))++;
                }
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                var scale = Vector256.Create(mul);
                var magnitude = Vector256.Create(0x7FFF_FFFFu);
                var subOffset = Vector256.Create(0, Stride, 2 * Stride, 3 * Stride, 4 * Stride, 5 * Stride, 6 * Stride, 7 * Stride);
                for (; i + 8 <= n; i += 8)
                {
                    Vector256<uint> bits = Vector256.LoadUnsafe(ref first, (nuint)i).AsUInt32();
                    Vector256<int> bin = Vector256.ConvertToInt32((bits & magnitude).AsSingle() * scale);
                    ((bin | ((bits >> 31) << Log2BinCount).AsInt32()) + subOffset).StoreUnsafe(ref lane);
                    for (int j = 0; j < 8; j++)
                        Unsafe.Add(ref counts, Unsafe.Add(ref lane, j))++;
                }
            }
            for (; i < n; i++)
                split[BinIndex(BitConverter.SingleToUInt32Bits(Unsafe.Add(ref first, i)), mul)]++;

            for (int h = 0; h < SubHistograms; h++)
            {
                Span<int> sub = split.AsSpan(h * Stride, Stride);
                for (int b = 0; b < Stride; b++)
                    _counts[b] += sub[b];
                sub.Clear();
            }
        }
    }

    private const int PendingCapacity = 1024;
    private int[]? _pending;

    private static void CountPending(ref int counts, int[] pending, int queued)
    {
        for (int k = 0; k < queued; k++)
            Unsafe.Add(ref counts, pending[k])++;
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

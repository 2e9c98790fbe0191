namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// Holds the values of one pass-through column for the rows of the current batch. A batching cursor
/// reads its source ahead by a whole batch, so each column the consumer asked for is copied per row
/// (vectors deep-copied: a source getter may hand out buffers it reuses) and replayed row by row.
/// </summary>
internal abstract class RowCache
{
    internal static RowCache Create(DataViewRow source, DataViewSchema.Column column, int capacity)
    {
        Type raw = column.Type.RawType;
        Type cacheType = raw.IsGenericType && raw.GetGenericTypeDefinition() == typeof(VBuffer<>)
            ? typeof(VectorRowCache<>).MakeGenericType(raw.GetGenericArguments()[0])
            : typeof(ValueRowCache<>).MakeGenericType(raw);
        return (RowCache)Activator.CreateInstance(cacheType, source, column, capacity)!;
    }

    /// <summary>Copies the source's current value into slot <paramref name="slot"/>.</summary>
    internal abstract void Store(int slot);

    /// <summary>A getter that returns the value of the slot <paramref name="currentSlot"/> points at.</summary>
    internal abstract Delegate Getter(Func<int> currentSlot);
}

internal sealed class ValueRowCache<T> : RowCache
{
    private readonly ValueGetter<T> _source;
    private readonly T[] _values;

    public ValueRowCache(DataViewRow source, DataViewSchema.Column column, int capacity)
    {
        _source = source.GetGetter<T>(column);
        _values = new T[capacity];
    }

    internal override void Store(int slot) => _source(ref _values[slot]);

    internal override Delegate Getter(Func<int> currentSlot)
        => (ValueGetter<T>)((ref T value) => value = _values[currentSlot()]);
}

internal sealed class VectorRowCache<T> : RowCache
{
    private readonly ValueGetter<VBuffer<T>> _source;
    private readonly VBuffer<T>[] _values;
    private VBuffer<T> _scratch;

    public VectorRowCache(DataViewRow source, DataViewSchema.Column column, int capacity)
    {
        _source = source.GetGetter<VBuffer<T>>(column);
        _values = new VBuffer<T>[capacity];
    }

    internal override void Store(int slot)
    {
        _source(ref _scratch);
        _scratch.CopyTo(ref _values[slot]);
    }

    internal override Delegate Getter(Func<int> currentSlot)
        => (ValueGetter<VBuffer<T>>)((ref VBuffer<T> value) => _values[currentSlot()].CopyTo(ref value));
}

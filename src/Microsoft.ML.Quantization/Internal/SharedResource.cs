namespace Microsoft.ML.Quantization.Internal;

internal static class SharedResources
{
    /// <summary>What a use of a disposed transformer throws.</summary>
    internal static ObjectDisposedException Disposed(string ownerName)
        => new(ownerName, $"This {ownerName} was disposed; its model can no longer run (batches running at the time finished first). Create a new one.");
}

/// <summary>
/// Reference-counted ownership of a native resource (an ONNX Runtime session, a native engine) shared by the transformer
/// that owns it and the batches running on it. The owner holds one reference and every running batch one more;
/// <see cref="Dispose"/> drops the owner's and the last holder frees the resource. Disposing a transformer while
/// cursors score therefore never frees memory a running batch uses: batches already running finish, and any batch
/// started later throws <see cref="ObjectDisposedException"/> naming the public type.
/// </summary>
internal sealed class SharedResource<T> : IDisposable where T : class
{
    private readonly T _value;
    private readonly Action<T> _release;
    private readonly string _ownerName;
    private int _references = 1; // the owner's
    private int _disposed;

    /// <param name="value">The resource.</param>
    /// <param name="release">Frees it; called once, by the last holder.</param>
    /// <param name="ownerName">The public type users see (what ObjectDisposedException names).</param>
    internal SharedResource(T value, Action<T> release, string ownerName)
    {
        _value = value;
        _release = release;
        _ownerName = ownerName;
    }

    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Throws the exception a use after <see cref="Dispose"/> gets.</summary>
    internal void ThrowIfDisposed()
    {
        if (IsDisposed)
            throw Disposed();
    }

    /// <summary>A reference for one use (one batch); dispose it when the use ends.</summary>
    internal Lease Acquire()
    {
        while (true)
        {
            int n = Volatile.Read(ref _references);
            if (n == 0 || IsDisposed)
                throw Disposed();
            if (Interlocked.CompareExchange(ref _references, n + 1, n) == n)
                return new Lease(this);
        }
    }

    private ObjectDisposedException Disposed() => SharedResources.Disposed(_ownerName);

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0)
            _release(_value);
    }

    /// <summary>Drops the owner's reference: frees the resource now, or when the last running batch ends.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            Release();
    }

    /// <summary>One holder's reference.</summary>
    internal readonly struct Lease : IDisposable
    {
        private readonly SharedResource<T> _owner;

        internal Lease(SharedResource<T> owner) => _owner = owner;

        internal T Value => _owner._value;

        public void Dispose() => _owner.Release();
    }
}

using Microsoft.ML;
using Microsoft.ML.Data;

namespace QatMl.Tool.Quantize;

/// <summary>
/// Passes an IDataView through and counts the rows its cursors move over (all cursors together), so scoring that
/// happens inside the library (Compare, Transform) can drive a progress bar and stop on Ctrl-C between rows.
/// </summary>
internal sealed class CountingDataView(IDataView source, Action<long> onRows, CancellationToken cancel) : IDataView
{
    private long _rows;

    public bool CanShuffle => source.CanShuffle;

    public DataViewSchema Schema => source.Schema;

    public long? GetRowCount() => source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        => new Cursor(this, source.GetRowCursor(columnsNeeded, rand));

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => source.GetRowCursorSet(columnsNeeded, n, rand).Select(c => (DataViewRowCursor)new Cursor(this, c)).ToArray();

    private void Moved()
    {
        cancel.ThrowIfCancellationRequested();
        onRows(Interlocked.Increment(ref _rows));
    }

    private sealed class Cursor(CountingDataView owner, DataViewRowCursor inner) : DataViewRowCursor
    {
        public override long Position => inner.Position;

        public override long Batch => inner.Batch;

        public override DataViewSchema Schema => inner.Schema;

        public override ValueGetter<DataViewRowId> GetIdGetter() => inner.GetIdGetter();

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => inner.GetGetter<TValue>(column);

        public override bool IsColumnActive(DataViewSchema.Column column) => inner.IsColumnActive(column);

        public override bool MoveNext()
        {
            if (!inner.MoveNext())
                return false;
            owner.Moved();
            return true;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                inner.Dispose();
            base.Dispose(disposing);
        }
    }
}

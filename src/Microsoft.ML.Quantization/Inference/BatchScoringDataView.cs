namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// The lazy result of a QatMl scoring transform: the source's columns plus one vector column per
/// scored tensor. Nothing runs until a cursor asks for a scored column; then the cursor reads the
/// source a batch ahead, runs the model once per batch and replays the rows.
/// </summary>
internal sealed class BatchScoringDataView : IDataView
{
    private readonly IDataView _source;
    private readonly IBatchScorer _scorer;
    private readonly int _firstOutput;

    internal BatchScoringDataView(IDataView source, IBatchScorer scorer)
    {
        _source = source;
        _scorer = scorer;
        Schema = BatchScorerSchema.OutputSchema(source.Schema, scorer.Outputs);
        _firstOutput = source.Schema.Count;
    }

    public bool CanShuffle => _source.CanShuffle;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var (sourceColumns, outputActive) = Split(columnsNeeded);
        DataViewRowCursor source = _source.GetRowCursor(sourceColumns, rand);
        return Wrap(source, outputActive, columnsNeeded);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var (sourceColumns, outputActive) = Split(columnsNeeded);
        // Each source cursor gets its own batching cursor: batches never span cursors, and the
        // scorer is shared (ONNX Runtime's Run and the native engine's run are thread-safe).
        return _source.GetRowCursorSet(sourceColumns, n, rand)
            .Select(c => Wrap(c, outputActive, columnsNeeded))
            .ToArray();
    }

    private DataViewRowCursor Wrap(DataViewRowCursor source, bool[] outputActive, IEnumerable<DataViewSchema.Column> columnsNeeded)
    {
        var active = new bool[Schema.Count];
        foreach (DataViewSchema.Column c in columnsNeeded)
            active[c.Index] = true;
        return outputActive.Any(a => a)
            ? new BatchingCursor(this, source, active, outputActive)
            : new PassThroughCursor(this, source, active);
    }

    private (List<DataViewSchema.Column> Source, bool[] OutputActive) Split(IEnumerable<DataViewSchema.Column> columnsNeeded)
    {
        var outputActive = new bool[_scorer.Outputs.Length];
        var source = new List<DataViewSchema.Column>();
        foreach (DataViewSchema.Column c in columnsNeeded)
        {
            if (c.Index >= _firstOutput)
                outputActive[c.Index - _firstOutput] = true;
            else
                source.Add(_source.Schema[c.Index]);
        }
        if (outputActive.Any(a => a))
        {
            foreach (InputSpec i in _scorer.Inputs)
            {
                DataViewSchema.Column input = _source.Schema[i.ColumnName];
                if (!source.Any(s => s.Index == input.Index))
                    source.Add(input);
            }
        }
        return (source, outputActive);
    }

    /// <summary>No scored column wanted: rows flow straight from the source.</summary>
    private sealed class PassThroughCursor : DataViewRowCursor
    {
        private readonly BatchScoringDataView _parent;
        private readonly DataViewRowCursor _source;
        private readonly bool[] _active;

        internal PassThroughCursor(BatchScoringDataView parent, DataViewRowCursor source, bool[] active)
        {
            _parent = parent;
            _source = source;
            _active = active;
        }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _source.Position;
        public override long Batch => _source.Batch;
        public override bool MoveNext() => _source.MoveNext();
        public override ValueGetter<DataViewRowId> GetIdGetter() => _source.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index >= _parent._firstOutput || !_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' was not requested when this cursor was created.");
            return _source.GetGetter<TValue>(_parent._source.Schema[column.Index]);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _source.Dispose();
            base.Dispose(disposing);
        }
    }

    /// <summary>Reads a batch ahead, scores it in one ONNX Runtime call and replays its rows.</summary>
    private sealed class BatchingCursor : DataViewRowCursor
    {
        private readonly BatchScoringDataView _parent;
        private readonly DataViewRowCursor _source;
        private readonly bool[] _active;
        private readonly IScoringBatch _batch;
        private readonly InputReader[] _inputReaders;
        private readonly RowCache?[] _caches;
        private readonly ValueGetter<DataViewRowId> _sourceIds;
        private readonly DataViewRowId[] _ids;
        private readonly long[] _batches;
        private int _rows;
        private int _slot = -1;
        private long _position = -1;
        private bool _sourceDone;

        internal BatchingCursor(BatchScoringDataView parent, DataViewRowCursor source, bool[] active, bool[] outputActive)
        {
            _parent = parent;
            _source = source;
            _active = active;
            IBatchScorer scorer = parent._scorer;
            _batch = scorer.CreateBatch(outputActive, scorer.BatchSize);
            _inputReaders = scorer.Inputs
                .Select((i, k) => BatchScorerSchema.CreateReader(source, parent._source.Schema[i.ColumnName], i, k))
                .ToArray();
            _caches = new RowCache?[parent._firstOutput];
            for (int c = 0; c < parent._firstOutput; c++)
                if (active[c])
                    _caches[c] = RowCache.Create(source, parent._source.Schema[c], scorer.BatchSize);
            _sourceIds = source.GetIdGetter();
            _ids = new DataViewRowId[scorer.BatchSize];
            _batches = new long[scorer.BatchSize];
        }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _position;
        public override long Batch => _slot >= 0 && _slot < _rows ? _batches[_slot] : 0;
        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override bool MoveNext()
        {
            if (_slot + 1 < _rows)
            {
                _slot++;
                _position++;
                return true;
            }
            if (_sourceDone || !FillBatch())
            {
                _slot = _rows = 0;
                return false;
            }
            _slot = 0;
            _position++;
            return true;
        }

        private bool FillBatch()
        {
            IBatchScorer scorer = _parent._scorer;
            int n = 0;
            while (n < scorer.BatchSize && _source.MoveNext())
            {
                foreach (InputReader read in _inputReaders)
                    read(_batch, n, _source.Position);
                foreach (RowCache? cache in _caches)
                    cache?.Store(n);
                _sourceIds(ref _ids[n]);
                _batches[n] = _source.Batch;
                n++;
            }
            if (n < scorer.BatchSize)
                _sourceDone = true;
            _rows = n;
            if (n == 0)
                return false;
            _batch.Run(n);
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter()
            => (ref DataViewRowId id) => id = _ids[_slot];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' was not requested when this cursor was created.");
            if (column.Index < _parent._firstOutput)
                return (ValueGetter<TValue>)_caches[column.Index]!.Getter(() => _slot);
            int k = column.Index - _parent._firstOutput;
            if (typeof(TValue) != typeof(VBuffer<float>))
                throw new InvalidOperationException($"Column '{column.Name}' is Vector<Single>; a getter for {typeof(TValue).Name} was requested.");
            ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> value) =>
            {
                int size = _batch.OutputRowSizes[k];
                var editor = VBufferEditor.Create(ref value, size);
                _batch.OutputBuffers[k].AsSpan(_slot * size, size).CopyTo(editor.Values);
                value = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _batch.Dispose();
                _source.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// The single-row face of a scoring transformer: what <c>mlContext.Model.CreatePredictionEngine</c> and a
/// TransformerChain's row mapper use. Each <see cref="GetRow"/> gets its own one-row staging buffers (allocated once)
/// and runs the model once per input row, on the same session or native engine as the batched Transform, so a
/// PredictionEngine per thread over one transformer is safe. Its output schema is the transformer's: the input columns
/// followed by the scored columns.
/// </summary>
internal sealed class ScoringRowMapper : IRowToRowMapper
{
    private readonly IBatchScorer _scorer;
    private readonly int[] _inputColumns;   // the input schema index feeding each model input
    private readonly int _firstOutput;

    /// <param name="scorer">The transformer's scorer (shared; runs are thread-safe).</param>
    /// <param name="inputSchema">The schema rows will have (already checked against the scorer's inputs).</param>
    /// <param name="outputSchema">The transformer's output schema for <paramref name="inputSchema"/>.</param>
    internal ScoringRowMapper(IBatchScorer scorer, DataViewSchema inputSchema, DataViewSchema outputSchema)
    {
        _scorer = scorer;
        InputSchema = inputSchema;
        OutputSchema = outputSchema;
        _firstOutput = inputSchema.Count;
        _inputColumns = scorer.Inputs.Select(i => inputSchema[i.ColumnName].Index).ToArray();
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    /// <summary>Input columns asked for pass through; any scored column needs every column the model reads.</summary>
    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        ArgumentNullException.ThrowIfNull(dependingColumns);
        var needed = new SortedSet<int>();
        bool scored = false;
        foreach (DataViewSchema.Column c in dependingColumns)
        {
            if (c.Index >= _firstOutput)
                scored = true;
            else
                needed.Add(c.Index);
        }
        if (scored)
            needed.UnionWith(_inputColumns);
        return needed.Select(i => InputSchema[i]).ToArray();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(activeColumns);
        if (input.Schema != InputSchema)
            throw new ArgumentException("The row's schema is not the one this mapper was created for (GetRowToRowMapper's inputSchema).", nameof(input));
        var active = new bool[OutputSchema.Count];
        foreach (DataViewSchema.Column c in activeColumns)
            active[c.Index] = true;
        var outputActive = active[_firstOutput..];
        if (outputActive.Any(a => a))
        {
            foreach (int i in _inputColumns)
                if (!input.IsColumnActive(InputSchema[i]))
                    throw new ArgumentException($"Column '{InputSchema[i].Name}' feeds the model but is not active in the input row.", nameof(input));
        }
        return new ScoredRow(this, input, active, outputActive);
    }

    /// <summary>One output row: pass-through getters from the input row, scored getters computed once per input position.</summary>
    private sealed class ScoredRow : DataViewRow
    {
        private readonly ScoringRowMapper _mapper;
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly IScoringBatch? _batch;
        private readonly InputReader[] _inputReaders;
        private long _scoredPosition = long.MinValue;

        internal ScoredRow(ScoringRowMapper mapper, DataViewRow input, bool[] active, bool[] outputActive)
        {
            _mapper = mapper;
            _input = input;
            _active = active;
            if (outputActive.Any(a => a))
            {
                _batch = mapper._scorer.CreateBatch(outputActive, capacity: 1);
                InputSpec[] inputs = mapper._scorer.Inputs;
                _inputReaders = mapper._inputColumns
                    .Select((i, k) => BatchScorerSchema.CreateReader(input, mapper.InputSchema[i], inputs[k], k))
                    .ToArray();
            }
            else
            {
                _inputReaders = [];
            }
        }

        public override DataViewSchema Schema => _mapper.OutputSchema;

        public override long Position => _input.Position;

        public override long Batch => _input.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index >= _active.Length || !_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' was not requested when this row was created.");
            if (column.Index < _mapper._firstOutput)
                return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            if (typeof(TValue) != typeof(VBuffer<float>))
                throw new InvalidOperationException($"Column '{column.Name}' is Vector<Single>; a getter for {typeof(TValue).Name} was requested.");
            int k = column.Index - _mapper._firstOutput;
            IScoringBatch batch = _batch!;
            ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> value) =>
            {
                Score();
                int size = batch.OutputRowSizes[k];
                var editor = VBufferEditor.Create(ref value, size);
                batch.OutputBuffers[k].AsSpan(0, size).CopyTo(editor.Values);
                value = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }

        /// <summary>Runs the model on the input row's current values, once per position (all scored columns share the run).</summary>
        private void Score()
        {
            long position = _input.Position;
            if (position == _scoredPosition)
                return;
            foreach (InputReader read in _inputReaders)
                read(_batch!, 0, position);
            _batch!.Run(1);
            _scoredPosition = position;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _batch?.Dispose();
                _input.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}

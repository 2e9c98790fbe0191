using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Internal;

namespace Microsoft.ML.Quantization.Inference;

/// <summary>
/// One graph input fed from a column: per-row shape, element count and element type (float, or the Int64 / Int32 /
/// Bool of token ids and masks, read from vector columns of the matching ML.NET type).
/// </summary>
internal sealed record InputSpec(string ColumnName, string TensorName, int[] RowDims, TensorElementType ElementType = TensorElementType.Float)
{
    /// <summary>
    /// False for an input without a batch dimension (a scalar sample rate, a recurrent state laid out [layers, batch,
    /// width]): its declared shape is the whole tensor, fed from one row; such models score one row per run.
    /// </summary>
    public bool Batched { get; init; } = true;

    public int RowSize { get; } = RowDims.Aggregate(1, (a, b) => checked(a * b));

    /// <summary>Bytes of one element.</summary>
    public int ElementBytes => ElementType switch
    {
        TensorElementType.Int64 => 8,
        TensorElementType.Bool => 1,
        _ => 4,
    };
}

/// <summary>One tensor exposed as a column. <see cref="RowDims"/> is null when its shape is not known before running.</summary>
internal sealed record OutputSpec(string ColumnName, string TensorName, int[]? RowDims)
{
    public int RowSize { get; } = RowDims?.Aggregate(1, (a, b) => checked(a * b)) ?? -1;
}

/// <summary>
/// Runs an ONNX Runtime session on batches of rows held in caller-owned float buffers: the part of
/// every QatMl transformer that talks to ONNX Runtime. Thread-safe (InferenceSession.Run is); each
/// cursor owns its own <see cref="Batch"/> of staging buffers. Each run holds a reference to the session
/// (<see cref="SharedResource{T}"/>), so <see cref="Dispose"/> during scoring frees it only after the running batches.
/// </summary>
internal sealed class OrtBatchScorer : IBatchScorer, IDisposable
{
    private readonly SharedResource<InferenceSession> _session;
    private readonly RunOptions _runOptions = new();

    /// <param name="session">The session; the scorer owns it from now on.</param>
    /// <param name="provider">The execution provider that runs it.</param>
    /// <param name="inputs">Graph inputs fed from columns.</param>
    /// <param name="outputs">Tensors exposed as columns.</param>
    /// <param name="batchSize">Rows per run.</param>
    /// <param name="fixedBatch">The graph pins its batch at <paramref name="batchSize"/>.</param>
    /// <param name="ownerName">The public type a use after Dispose names.</param>
    internal OrtBatchScorer(InferenceSession session, OnnxExecutionProvider provider, InputSpec[] inputs, OutputSpec[] outputs, int batchSize,
        bool fixedBatch = false, string ownerName = nameof(OrtBatchScorer))
    {
        _session = new SharedResource<InferenceSession>(session, s =>
        {
            s.Dispose();
            _runOptions.Dispose();
        }, ownerName);
        FixedBatch = fixedBatch;
        Provider = provider;
        Inputs = inputs;
        Outputs = outputs;
        BatchSize = batchSize;
    }

    public InputSpec[] Inputs { get; }
    public OutputSpec[] Outputs { get; }
    public int BatchSize { get; }

    IScoringBatch IBatchScorer.CreateBatch(bool[] outputActive, int capacity) => new Batch(this, outputActive, capacity);
    internal OnnxExecutionProvider Provider { get; }

    /// <summary>Throws <see cref="ObjectDisposedException"/> (naming the owner) once disposed.</summary>
    internal void ThrowIfDisposed() => _session.ThrowIfDisposed();

    /// <summary>The graph's batch dimension is fixed at <see cref="BatchSize"/>: a short last batch runs padded.</summary>
    internal bool FixedBatch { get; }

    /// <summary>
    /// Reads the model's inputs and the requested tensors and checks they are float tensors whose
    /// per-row shape is known (or declared). The first dimension is the batch.
    /// </summary>
    internal static (InputSpec[] Inputs, OutputSpec[] Outputs, bool FixedBatch) Describe(InferenceSession session, string modelName,
        IList<OnnxColumnBinding> inputBindings, IList<OnnxColumnBinding> outputBindings, IDictionary<string, int[]> declaredShapes, int batchSize)
    {
        var inputBinding = OnnxColumnBinding.OrSameNames(inputBindings, session.InputMetadata.Keys);
        var inputs = new List<InputSpec>();
        bool fixedBatch = false;
        foreach (OnnxColumnBinding b in inputBinding)
        {
            if (!session.InputMetadata.TryGetValue(b.TensorName, out NodeMetadata? meta))
                throw new ArgumentException($"Model '{modelName}' has no input '{b.TensorName}' (inputs: {string.Join(", ", session.InputMetadata.Keys)}).");
            if (!BatchScorerSchema.IsSupportedInputType(meta.ElementDataType))
                throw new NotSupportedException($"Model '{modelName}' input '{b.TensorName}' is {meta.ElementDataType}; inputs can be Float, Int64, Int32 or Bool.");
            int[] dims = meta.Dimensions;
            // A declared shape of the input's full rank: a whole tensor per row, without a batch dimension.
            if (declaredShapes.TryGetValue(b.TensorName, out int[]? whole) && whole.Length == dims.Length)
            {
                if (whole.Where((d, i) => d <= 0 || (dims[i] > 0 && dims[i] != d)).Any())
                    throw new ArgumentException($"Declared shape [{string.Join(", ", whole)}] for input '{b.TensorName}' does not fit the model's shape [{string.Join(", ", dims.Select(DimText))}].");
                if (batchSize != 1)
                    throw new ArgumentException($"Model '{modelName}' input '{b.TensorName}' is declared as a whole tensor [{string.Join(", ", whole)}] without a batch dimension; use BatchSize = 1.");
                CheckRowFitsOneBuffer(modelName, b.TensorName, whole);
                inputs.Add(new InputSpec(b.ColumnName, b.TensorName, whole, meta.ElementDataType) { Batched = false });
                continue;
            }
            if (dims.Length == 0)
                throw new NotSupportedException($"Model '{modelName}' input '{b.TensorName}' is a scalar; inputs need a batch dimension, or declare its shape as [] in InputShapes (one row per run).");
            if (dims[0] > 0 && dims[0] != batchSize)
                throw new InvalidOperationException(
                    $"Model '{modelName}' input '{b.TensorName}' has a fixed batch dimension of {dims[0]}, but BatchSize is {batchSize}. " +
                    $"Use BatchSize = {dims[0]}, or make the batch dimension symbolic first (OnnxRewrites.MakeBatchSymbolic).");
            fixedBatch |= dims[0] > 0;
            int[] row = dims[1..];
            if (declaredShapes.TryGetValue(b.TensorName, out int[]? declared))
            {
                if (declared.Length != row.Length || declared.Where((d, i) => d <= 0 || (row[i] > 0 && row[i] != d)).Any())
                    throw new ArgumentException($"Declared shape [{string.Join(", ", declared)}] for input '{b.TensorName}' does not fit the model's per-row shape [{string.Join(", ", row.Select(DimText))}].");
                row = declared;
            }
            else if (row.Any(d => d <= 0))
            {
                throw new ArgumentException(
                    $"Model '{modelName}' input '{b.TensorName}' has the per-row shape [{string.Join(", ", row.Select(DimText))}] with symbolic dimensions; declare it in InputShapes.");
            }
            CheckRowFitsOneBuffer(modelName, b.TensorName, row);
            inputs.Add(new InputSpec(b.ColumnName, b.TensorName, row, meta.ElementDataType));
        }

        var outputBinding = OnnxColumnBinding.OrSameNames(outputBindings, session.OutputMetadata.Keys);
        var outputs = new List<OutputSpec>();
        foreach (OnnxColumnBinding b in outputBinding)
        {
            if (!session.OutputMetadata.TryGetValue(b.TensorName, out NodeMetadata? meta))
                throw new ArgumentException($"Model '{modelName}' has no tensor '{b.TensorName}' to output.");
            if (meta.ElementDataType != TensorElementType.Float)
                throw new NotSupportedException($"Model '{modelName}' tensor '{b.TensorName}' is {meta.ElementDataType}; only float outputs can be columns.");
            int[] dims = meta.Dimensions;
            int[]? row = dims.Length >= 1 && dims.Skip(1).All(d => d > 0) ? dims[1..] : null;
            if (row is not null && !BatchScorerSchema.RowFitsOneBuffer(row))
                throw new NotSupportedException(
                    $"Model '{modelName}' tensor '{b.TensorName}' has the per-row shape [{string.Join(", ", row)}]: more values per row than one buffer holds ({Array.MaxLength}).");
            outputs.Add(new OutputSpec(b.ColumnName, b.TensorName, row));
        }
        return (inputs.ToArray(), outputs.ToArray(), fixedBatch);
    }

    private static void CheckRowFitsOneBuffer(string modelName, string inputName, int[] row)
    {
        if (!BatchScorerSchema.RowFitsOneBuffer(row))
            throw new NotSupportedException(
                $"Model '{modelName}' input '{inputName}' has the per-row shape [{string.Join(", ", row)}]: more values per row than one buffer holds ({Array.MaxLength}).");
    }

    private static string DimText(int d) => d > 0 ? d.ToString(System.Globalization.CultureInfo.InvariantCulture) : "?";

    /// <summary>Checks the input columns against the schema, with ML.NET-shaped errors (a missing one names <paramref name="inputsOption"/>).</summary>
    internal void ValidateInputSchema(DataViewSchema schema, string paramName, string inputsOption)
        => BatchScorerSchema.ValidateInputSchema(Inputs, schema, paramName, inputsOption);

    /// <summary>The estimator-level output shape for these inputs and outputs (a missing input names <paramref name="inputsOption"/>).</summary>
    internal static SchemaShape GetOutputShape(InputSpec[] inputs, OutputSpec[] outputs, SchemaShape shape, string paramName, string inputsOption)
    {
        foreach (InputSpec input in inputs)
        {
            SchemaShape.Column column = shape.FirstOrDefault(c => c.Name == input.ColumnName);
            if (column.Name is null)
                throw SchemaErrors.MissingColumn(paramName, input.ColumnName, shape, SchemaErrors.InputsHint(inputsOption, input.ColumnName, input.TensorName));
            if (column.Kind == SchemaShape.Column.VectorKind.Scalar || !column.ItemType.Equals(BatchScorerSchema.ItemType(input.ElementType)))
                throw SchemaErrors.Mismatch(paramName, input.ColumnName, BatchScorerSchema.Expected(input), SchemaShapes.Describe(column));
        }
        return SchemaShapes.With(shape, outputs.Select(o =>
            SchemaShapes.Vector(o.ColumnName, NumberDataViewType.Single, variableSize: o.RowDims is null)));
    }

    /// <summary>
    /// A cursor's (or a single-row mapper's) staging buffers for inputs and fixed-shape outputs. It holds no native
    /// resource between runs: each run wraps the buffers in OrtValues (pinned for that call only) and releases them, so a
    /// batch that is never disposed (ML.NET's PredictionEngine never disposes its output row) leaks nothing.
    /// </summary>
    internal sealed class Batch : IScoringBatch
    {
        private readonly OrtBatchScorer _scorer;
        private readonly string[] _inputNames;
        private readonly string[] _outputNames;
        private readonly OrtValue[] _inputValues;
        private readonly OrtValue[] _outputValues;
        private readonly long[][] _fullInputShapes;
        private readonly long[]?[] _fullOutputShapes;

        /// <param name="scorer">The session and tensor descriptions.</param>
        /// <param name="outputActive">Which outputs to compute.</param>
        /// <param name="capacity">Rows per run; default (and always, for a fixed-batch graph) the scorer's batch size.</param>
        /// <param name="outputRowDims">
        /// Per-row shapes for outputs the model leaves unknown, learned from an earlier run (<see cref="RunRowDims"/>):
        /// such outputs then get preallocated buffers too, which ONNX Runtime writes directly.
        /// </param>
        internal Batch(OrtBatchScorer scorer, bool[] outputActive, int? capacity = null, int[]?[]? outputRowDims = null)
        {
            _scorer = scorer;
            int b = scorer.FixedBatch ? scorer.BatchSize : capacity ?? scorer.BatchSize;
            Capacity = b;
            InputData = scorer.Inputs.Select(i => BatchScorerSchema.CreateInputBuffer(i, b)).ToArray();
            InputBuffers = InputData.Select(a => a as float[] ?? []).ToArray();
            if (b != 1 && scorer.Inputs.Any(i => !i.Batched))
                throw new InvalidOperationException($"Input '{scorer.Inputs.First(i => !i.Batched).TensorName}' has no batch dimension: batches hold one row.");
            _fullInputShapes = scorer.Inputs.Select(i => InputShape(i, b)).ToArray();
            ActiveOutputs = Enumerable.Range(0, scorer.Outputs.Length).Where(k => outputActive[k]).ToArray();
            OutputBuffers = new float[scorer.Outputs.Length][];
            _fullOutputShapes = new long[]?[scorer.Outputs.Length];
            _rowDims = scorer.Outputs.Select((o, k) => o.RowDims ?? outputRowDims?[k]).ToArray();
            RunRowDims = (int[]?[])_rowDims.Clone();
            OutputRowSizes = _rowDims.Select(d => d?.Aggregate(1, (x, y) => checked(x * y)) ?? -1).ToArray();
            OutputCounts = new int[scorer.Outputs.Length];
            foreach (int k in ActiveOutputs)
            {
                if (_rowDims[k] is not { } dims)
                    continue;
                OutputBuffers[k] = new float[checked(OutputRowSizes[k] * b)];
                _fullOutputShapes[k] = Shape(b, dims);
            }
            _inputNames = scorer.Inputs.Select(i => i.TensorName).ToArray();
            _outputNames = ActiveOutputs.Select(k => scorer.Outputs[k].TensorName).ToArray();
            _inputValues = new OrtValue[_inputNames.Length];
            _outputValues = new OrtValue[_outputNames.Length];
            _allOutputsFixed = ActiveOutputs.All(k => _rowDims[k] is not null);
        }

        private readonly bool _allOutputsFixed;

        private readonly int[]?[] _rowDims;

        /// <summary>Per-row output shapes: known ones, and those of the last run for outputs whose shape the model leaves open.</summary>
        internal int[]?[] RunRowDims { get; }

        /// <summary>Rows per run.</summary>
        internal int Capacity { get; }

        /// <summary>Row-major [Capacity, rowSize] staging per float input, filled by the cursor (empty for other types).</summary>
        public float[][] InputBuffers { get; }

        /// <summary>Row-major [Capacity, rowSize] staging per input, typed as the input (float[], long[], int[], bool[]).</summary>
        public Array[] InputData { get; }

        /// <summary>Row-major [rows, rowSize] results per output (null for inactive outputs).</summary>
        public float[][] OutputBuffers { get; }

        /// <summary>Per-row element count of each output (for variable shapes: of the last batch).</summary>
        public int[] OutputRowSizes { get; }

        /// <summary>
        /// Values each output held in the last run. For a tensor whose first dimension is not the batch (a position
        /// embedding broadcast over the batch) this is not rows x <see cref="OutputRowSizes"/>.
        /// </summary>
        internal int[] OutputCounts { get; }

        internal int[] ActiveOutputs { get; }

        /// <summary>Runs the model on the first <paramref name="rows"/> rows of the input buffers.</summary>
        public void Run(int rows)
        {
            if (ActiveOutputs.Length == 0)
                return;
            // Held until the outputs are copied out: a Dispose meanwhile frees the session after this run.
            using SharedResource<InferenceSession>.Lease lease = _scorer._session.Acquire();
            // A fixed-batch graph always runs a full batch; rows past `rows` are stale and never read.
            bool full = rows == Capacity || _scorer.FixedBatch;
            int ran = full ? Capacity : rows;
            try
            {
                for (int k = 0; k < _inputValues.Length; k++)
                    _inputValues[k] = WrapInput(k, ran, full);

                if (_allOutputsFixed)
                {
                    for (int j = 0; j < _outputValues.Length; j++)
                    {
                        int k = ActiveOutputs[j];
                        _outputValues[j] = Wrap(OutputBuffers[k], ran * OutputRowSizes[k], full ? _fullOutputShapes[k]! : Shape(ran, _rowDims[k]!));
                    }
                    lease.Value.Run(_scorer._runOptions, _inputNames, _inputValues, _outputNames, _outputValues);
                    foreach (int k in ActiveOutputs)
                        OutputCounts[k] = ran * OutputRowSizes[k];
                    return;
                }

                // Some shapes are only known after running: let ONNX Runtime allocate, then copy out.
                using IDisposableReadOnlyCollection<OrtValue> allocated = lease.Value.Run(_scorer._runOptions, _inputNames, _inputValues, _outputNames);
                for (int j = 0; j < ActiveOutputs.Length; j++)
                {
                    int k = ActiveOutputs[j];
                    ReadOnlySpan<float> data = allocated[j].GetTensorDataAsSpan<float>();
                    long[] shape = allocated[j].GetTensorTypeAndShape().Shape;
                    // Only a batch-major tensor can be preallocated for another batch size: others stay ONNX Runtime's.
                    RunRowDims[k] = shape.Length >= 1 && shape[0] == ran ? shape[1..].Select(d => checked((int)d)).ToArray() : null;
                    if (OutputBuffers[k] is null || OutputBuffers[k].Length < data.Length)
                        OutputBuffers[k] = new float[data.Length];
                    data.CopyTo(OutputBuffers[k]);
                    OutputRowSizes[k] = ran == 0 ? 0 : data.Length / ran;
                    OutputCounts[k] = data.Length;
                }
            }
            finally
            {
                Release(_inputValues);
                Release(_outputValues);
            }
        }

        /// <summary>
        /// Copies one row of input <paramref name="input"/> into slot <paramref name="slot"/>; a row of the wrong
        /// size is an error naming the column and <paramref name="rowIndex"/>.
        /// </summary>
        public void SetRow<T>(int input, int slot, in VBuffer<T> row, long rowIndex)
            where T : unmanaged
        {
            InputSpec spec = _scorer.Inputs[input];
            BatchScorerSchema.CopyRow(spec, row, ((T[])InputData[input]).AsSpan(slot * spec.RowSize, spec.RowSize), rowIndex);
        }

        /// <summary>Input <paramref name="input"/>'s first <paramref name="rows"/> rows as a tensor of its type, pinned until it is disposed.</summary>
        private OrtValue WrapInput(int input, int rows, bool full)
        {
            InputSpec spec = _scorer.Inputs[input];
            long[] shape = full ? _fullInputShapes[input] : InputShape(spec, rows);
            int length = rows * spec.RowSize;
            return InputData[input] switch
            {
                float[] f => Wrap(f, length, shape),
                long[] l => Wrap(l, length, shape),
                int[] i => Wrap(i, length, shape),
                bool[] b => Wrap(b, length, shape),
                _ => throw new InvalidOperationException($"Input '{spec.TensorName}' has an unsupported staging type {InputData[input].GetType().Name}."),
            };
        }

        /// <summary>The first <paramref name="length"/> values of <paramref name="buffer"/> as a tensor, pinned until it is disposed.</summary>
        private static OrtValue Wrap<T>(T[] buffer, int length, long[] shape)
            where T : unmanaged
            => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, buffer.AsMemory(0, length), shape);

        private static void Release(OrtValue[] values)
        {
            for (int i = 0; i < values.Length; i++)
            {
                values[i]?.Dispose();
                values[i] = null!;
            }
        }

        /// <summary>An input's tensor shape for <paramref name="rows"/> rows: its declared whole shape when it has no batch dimension.</summary>
        private static long[] InputShape(InputSpec spec, int rows)
            => spec.Batched ? Shape(rows, spec.RowDims) : [.. spec.RowDims.Select(d => (long)d)];

        private static long[] Shape(int rows, int[] rowDims)
        {
            var shape = new long[rowDims.Length + 1];
            shape[0] = rows;
            for (int i = 0; i < rowDims.Length; i++)
                shape[i + 1] = rowDims[i];
            return shape;
        }

        /// <summary>Nothing to release: runs hold their native values only while they run.</summary>
        public void Dispose()
        {
        }
    }

    /// <summary>Releases the session now, or after the batches running on it.</summary>
    public void Dispose() => _session.Dispose();
}

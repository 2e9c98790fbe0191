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
/// cursor owns its own <see cref="Batch"/> of staging buffers.
/// </summary>
internal sealed class OrtBatchScorer : IBatchScorer, IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();

    internal OrtBatchScorer(InferenceSession session, OnnxExecutionProvider provider, InputSpec[] inputs, OutputSpec[] outputs, int batchSize, bool fixedBatch = false)
    {
        _session = session;
        FixedBatch = fixedBatch;
        Provider = provider;
        Inputs = inputs;
        Outputs = outputs;
        BatchSize = batchSize;
    }

    public InputSpec[] Inputs { get; }
    public OutputSpec[] Outputs { get; }
    public int BatchSize { get; }

    IScoringBatch IBatchScorer.CreateBatch(bool[] outputActive) => new Batch(this, outputActive);
    internal OnnxExecutionProvider Provider { get; }
    internal InferenceSession Session => _session;

    /// <summary>The graph's batch dimension is fixed at <see cref="BatchSize"/>: a short last batch runs padded.</summary>
    internal bool FixedBatch { get; }

    /// <summary>
    /// Reads the model's inputs and the requested tensors and checks they are float tensors whose
    /// per-row shape is known (or declared). The first dimension is the batch.
    /// </summary>
    internal static (InputSpec[] Inputs, OutputSpec[] Outputs, bool FixedBatch) Describe(InferenceSession session, string modelName,
        IList<OnnxColumnBinding> inputBindings, IList<OnnxColumnBinding> outputBindings, IDictionary<string, int[]> declaredShapes, int batchSize)
    {
        var inputBinding = inputBindings.Count > 0
            ? inputBindings
            : session.InputMetadata.Keys.Select(n => new OnnxColumnBinding(n, n)).ToList();
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
            inputs.Add(new InputSpec(b.ColumnName, b.TensorName, row, meta.ElementDataType));
        }

        var outputBinding = outputBindings.Count > 0
            ? outputBindings
            : session.OutputMetadata.Keys.Select(n => new OnnxColumnBinding(n, n)).ToList();
        var outputs = new List<OutputSpec>();
        foreach (OnnxColumnBinding b in outputBinding)
        {
            if (!session.OutputMetadata.TryGetValue(b.TensorName, out NodeMetadata? meta))
                throw new ArgumentException($"Model '{modelName}' has no tensor '{b.TensorName}' to output.");
            if (meta.ElementDataType != TensorElementType.Float)
                throw new NotSupportedException($"Model '{modelName}' tensor '{b.TensorName}' is {meta.ElementDataType}; only float outputs can be columns.");
            int[] dims = meta.Dimensions;
            int[]? row = dims.Length >= 1 && dims.Skip(1).All(d => d > 0) ? dims[1..] : null;
            outputs.Add(new OutputSpec(b.ColumnName, b.TensorName, row));
        }
        return (inputs.ToArray(), outputs.ToArray(), fixedBatch);
    }

    private static string DimText(int d) => d > 0 ? d.ToString(System.Globalization.CultureInfo.InvariantCulture) : "?";

    /// <summary>Checks the input columns against the schema, with ML.NET-shaped errors.</summary>
    internal void ValidateInputSchema(DataViewSchema schema, string paramName) => BatchScorerSchema.ValidateInputSchema(Inputs, schema, paramName);

    /// <summary>The estimator-level output shape for these inputs and outputs.</summary>
    internal static SchemaShape GetOutputShape(InputSpec[] inputs, OutputSpec[] outputs, SchemaShape shape, string paramName)
    {
        foreach (InputSpec input in inputs)
        {
            SchemaShape.Column column = shape.FirstOrDefault(c => c.Name == input.ColumnName);
            if (column.Name is null)
                throw SchemaErrors.MissingColumn(paramName, input.ColumnName);
            if (column.Kind == SchemaShape.Column.VectorKind.Scalar || !column.ItemType.Equals(BatchScorerSchema.ItemType(input.ElementType)))
                throw SchemaErrors.Mismatch(paramName, input.ColumnName, BatchScorerSchema.Expected(input), SchemaShapes.Describe(column));
        }
        return SchemaShapes.With(shape, outputs.Select(o =>
            SchemaShapes.Vector(o.ColumnName, NumberDataViewType.Single, variableSize: o.RowDims is null)));
    }

    internal DataViewType OutputType(OutputSpec output) => BatchScorerSchema.OutputType(output);

    /// <summary>A cursor's staging buffers: inputs and fixed-shape outputs, with their OrtValues for full batches.</summary>
    internal sealed class Batch : IScoringBatch
    {
        private readonly OrtBatchScorer _scorer;
        private readonly OrtValue[] _fullInputs;
        private readonly OrtValue?[] _fullOutputs;
        private readonly string[] _inputNames;
        private readonly string[] _outputNames;
        private readonly List<OrtValue> _transient = new();
        private IDisposableReadOnlyCollection<OrtValue>? _allocated;

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
            _fullInputs = scorer.Inputs.Select((i, k) => InputValue(InputData[k], i, b)).ToArray();
            ActiveOutputs = Enumerable.Range(0, scorer.Outputs.Length).Where(k => outputActive[k]).ToArray();
            OutputBuffers = new float[scorer.Outputs.Length][];
            _fullOutputs = new OrtValue?[scorer.Outputs.Length];
            _rowDims = scorer.Outputs.Select((o, k) => o.RowDims ?? outputRowDims?[k]).ToArray();
            RunRowDims = (int[]?[])_rowDims.Clone();
            OutputRowSizes = _rowDims.Select(d => d?.Aggregate(1, (x, y) => checked(x * y)) ?? -1).ToArray();
            OutputCounts = new int[scorer.Outputs.Length];
            foreach (int k in ActiveOutputs)
            {
                if (_rowDims[k] is not { } dims)
                    continue;
                OutputBuffers[k] = new float[checked(OutputRowSizes[k] * b)];
                _fullOutputs[k] = OrtValue.CreateTensorValueFromMemory(OutputBuffers[k], Shape(b, dims));
            }
            _inputNames = scorer.Inputs.Select(i => i.TensorName).ToArray();
            _outputNames = ActiveOutputs.Select(k => scorer.Outputs[k].TensorName).ToArray();
        }

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
            DisposeTransient();
            // A fixed-batch graph always runs a full batch; rows past `rows` are stale and never read.
            bool full = rows == Capacity || _scorer.FixedBatch;
            var inputs = new OrtValue[_inputNames.Length];
            for (int k = 0; k < inputs.Length; k++)
                inputs[k] = full ? _fullInputs[k] : TransientInput(k, rows);

            bool allFixed = ActiveOutputs.All(k => _rowDims[k] is not null);
            if (allFixed)
            {
                var outputs = new OrtValue[ActiveOutputs.Length];
                for (int j = 0; j < outputs.Length; j++)
                {
                    int k = ActiveOutputs[j];
                    outputs[j] = full ? _fullOutputs[k]! : Transient(OutputBuffers[k], rows, _rowDims[k]!);
                }
                _scorer._session.Run(_scorer._runOptions, _inputNames, inputs, _outputNames, outputs);
                foreach (int k in ActiveOutputs)
                    OutputCounts[k] = (full ? Capacity : rows) * OutputRowSizes[k];
                return;
            }

            // Some shapes are only known after running: let ONNX Runtime allocate, then copy out.
            _allocated = _scorer._session.Run(_scorer._runOptions, _inputNames, inputs, _outputNames);
            for (int j = 0; j < ActiveOutputs.Length; j++)
            {
                int k = ActiveOutputs[j];
                ReadOnlySpan<float> data = _allocated[j].GetTensorDataAsSpan<float>();
                long[] shape = _allocated[j].GetTensorTypeAndShape().Shape;
                int ran = full ? Capacity : rows;
                // Only a batch-major tensor can be preallocated for another batch size: others stay ONNX Runtime's.
                RunRowDims[k] = shape.Length >= 1 && shape[0] == ran ? shape[1..].Select(d => checked((int)d)).ToArray() : null;
                if (OutputBuffers[k] is null || OutputBuffers[k].Length < data.Length)
                    OutputBuffers[k] = new float[data.Length];
                data.CopyTo(OutputBuffers[k]);
                OutputRowSizes[k] = ran == 0 ? 0 : data.Length / ran;
                OutputCounts[k] = data.Length;
            }
            _allocated.Dispose();
            _allocated = null;
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

        private static OrtValue InputValue(Array buffer, InputSpec spec, int rows) => buffer switch
        {
            float[] f => Value(f, rows, spec.RowDims, spec.Batched),
            long[] l => Value(l, rows, spec.RowDims, spec.Batched),
            int[] i => Value(i, rows, spec.RowDims, spec.Batched),
            bool[] b => Value(b, rows, spec.RowDims, spec.Batched),
            _ => throw new InvalidOperationException($"Input '{spec.TensorName}' has an unsupported staging type {buffer.GetType().Name}."),
        };

        private static OrtValue Value<T>(T[] buffer, int rows, int[] rowDims, bool batched = true)
            where T : unmanaged
        {
            int size = rowDims.Aggregate(1, (a, b) => a * b);
            long[] shape = batched ? Shape(rows, rowDims) : [.. rowDims.Select(d => (long)d)];
            return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, buffer.AsMemory(0, rows * size), shape);
        }

        private OrtValue TransientInput(int input, int rows)
        {
            var value = InputValue(InputData[input], _scorer.Inputs[input], rows);
            _transient.Add(value);
            return value;
        }

        private OrtValue Transient(float[] buffer, int rows, int[] rowDims)
        {
            var value = Value(buffer, rows, rowDims);
            _transient.Add(value);
            return value;
        }

        private void DisposeTransient()
        {
            foreach (OrtValue v in _transient)
                v.Dispose();
            _transient.Clear();
        }

        private static long[] Shape(int rows, int[] rowDims)
        {
            var shape = new long[rowDims.Length + 1];
            shape[0] = rows;
            for (int i = 0; i < rowDims.Length; i++)
                shape[i + 1] = rowDims[i];
            return shape;
        }

        public void Dispose()
        {
            DisposeTransient();
            _allocated?.Dispose();
            foreach (OrtValue v in _fullInputs)
                v.Dispose();
            foreach (OrtValue? v in _fullOutputs)
                v?.Dispose();
        }
    }

    public void Dispose()
    {
        _runOptions.Dispose();
        _session.Dispose();
    }
}

using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Interop;
using Microsoft.ML.Quantization.Lowering;
using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.NativeEngine;

/// <summary>
/// A QDQ model loaded into the native INT8 engine: lowered to a plan (<see cref="QdqLowering"/>), weights packed once,
/// activation memory planned. <see cref="Run"/> scores a whole batch in one native call; concurrent runs on one engine
/// are safe and give identical results.
/// </summary>
internal sealed class NativeInt8Engine : IDisposable
{
    private readonly EngineHandle _handle;
    private readonly NativeContext _context;

    private NativeInt8Engine(EngineHandle handle, NativeContext context, InputSpec[] inputs, OutputSpec[] outputs, EnginePlan plan, int threads)
    {
        _handle = handle;
        _context = context;
        Device = context.Device;
        Inputs = inputs;
        Outputs = outputs;
        Ops = plan.Ops.Select(o => (o.Kind, o.Source)).ToArray();
        Threads = threads;
        NativeApi.Check(NativeMethods.qatml_engine_get_info(_handle, out NativeMethods.EngineInfo info));
        WeightBytes = info.WeightBytes;
        NativeOpCount = info.OpCount;
        ArenaBytesPerRow = info.ArenaBytesPerRow;
        NaiveBytesPerRow = info.NaiveBytesPerRow;
        for (int i = 0; i < inputs.Length; i++)
        {
            NativeApi.Check(NativeMethods.qatml_engine_io_row_size(_handle, 0, i, out long n));
            if (n != inputs[i].RowSize)
                throw new InvalidOperationException($"Native engine input {i} has {n} elements per row, the plan said {inputs[i].RowSize}.");
            // The caller's buffer is read as the plan input's type: it must be the type the column binding stages.
            NativeApi.Check(NativeMethods.qatml_engine_io_type(_handle, 0, i, out int dtype));
            var expected = inputs[i].ElementType switch
            {
                TensorElementType.Float => EngineType.Float32,
                TensorElementType.Int64 => EngineType.Int64,
                TensorElementType.Int32 => EngineType.Int32,
                _ => (EngineType)0,
            };
            if (dtype != (int)expected)
                throw new InvalidOperationException($"Native engine input {i} has element type {(EngineType)dtype}, the binding stages {inputs[i].ElementType}.");
        }
    }

    public InputSpec[] Inputs { get; }

    public OutputSpec[] Outputs { get; }

    /// <summary>The ops the engine runs, each with the ONNX node it came from (the plan's weights are not kept managed-side).</summary>
    public IReadOnlyList<(EngineOpKind Kind, string Source)> Ops { get; }

    /// <summary>Ops the native engine runs after its own fusions (a convolution and the 2x2 max pool after it become one).</summary>
    public int NativeOpCount { get; }

    /// <summary>Threads one run uses on the CPU (the batch is split into that many row ranges).</summary>
    public int Threads { get; }

    /// <summary>Where runs execute: the CPU, or the CUDA GPU the engine was loaded on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>Packed weights, biases and multipliers held natively.</summary>
    public long WeightBytes { get; }

    /// <summary>Activation memory per row after reuse by liveness.</summary>
    public long ArenaBytesPerRow { get; }

    /// <summary>Activation memory per row without reuse.</summary>
    public long NaiveBytesPerRow { get; }

    /// <summary>
    /// Lowers and loads <paramref name="qdqModel"/>. Returns null with the reasons when a node cannot run natively; a model
    /// that is inconsistent (shapes, types) throws <see cref="InvalidOnnxModelException"/> before any native call.
    /// </summary>
    public static NativeInt8Engine? TryLoad(byte[] qdqModel, string modelName, IList<OnnxColumnBinding> inputs, IList<OnnxColumnBinding> outputs,
        IDictionary<string, int[]> inputShapes, int threads, out IReadOnlyList<string> unsupported)
        => TryLoad(qdqModel, modelName, inputs, outputs, inputShapes, threads, ComputeDevice.Cpu, null, out unsupported);

    /// <summary>
    /// <see cref="TryLoad(byte[], string, IList{OnnxColumnBinding}, IList{OnnxColumnBinding}, IDictionary{string, int[]}, int, out IReadOnlyList{string})"/>
    /// on <paramref name="device"/>; a CUDA device that is not available (no GPU, a CPU-only native library) loads the engine on the CPU
    /// and tells <paramref name="warn"/> why.
    /// </summary>
    public static NativeInt8Engine? TryLoad(byte[] qdqModel, string modelName, IList<OnnxColumnBinding> inputs, IList<OnnxColumnBinding> outputs,
        IDictionary<string, int[]> inputShapes, int threads, ComputeDevice device, Action<string>? warn, out IReadOnlyList<string> unsupported)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        // No native build for this platform (the package ships linux-x64): the caller falls back as for an unsupported node.
        if (!NativeApi.TryEnsureLoaded(out string? missing))
        {
            unsupported = [$"on {RuntimeInformation.RuntimeIdentifier}: {missing}"];
            return null;
        }
        var model = OnnxModel.Parse(qdqModel, sourceName: modelName);
        LoweringResult lowered = QdqLowering.Lower(model, modelName, inputs, outputs, inputShapes);
        unsupported = lowered.Unsupported;
        if (!lowered.Succeeded)
            return null;
        return Load(lowered.Plan!, lowered.Inputs, lowered.Outputs, threads, device, warn);
    }

    /// <summary>
    /// Loads a plan (validated again natively: a malformed plan is a <see cref="QuantizationNativeException"/>) on
    /// <paramref name="device"/>, or on the CPU with a message to <paramref name="warn"/> when that CUDA device cannot take it.
    /// </summary>
    internal static unsafe NativeInt8Engine Load(EnginePlan plan, InputSpec[] inputs, OutputSpec[] outputs, int threads, ComputeDevice device = default,
        Action<string>? warn = null)
    {
        NativeApi.EnsureLoaded();
        int count = threads == 0 ? Environment.ProcessorCount : threads;
        byte[] bytes = plan.ToBytes();
        if (device.Kind == ComputeDeviceKind.Cuda)
        {
            NativeContext? gpu = null;
            try
            {
                gpu = new NativeContext(device);
                return new NativeInt8Engine(CreateHandle(gpu, bytes), gpu, inputs, outputs, plan, count);
            }
            catch (QuantizationNativeException e)
            {
                gpu?.Dispose();
                warn?.Invoke($"Native engine: CUDA device {device.Index} cannot run the model ({e.Message}). Running on the CPU instead.");
            }
        }
        var context = new NativeContext(ComputeDevice.Cpu, count);
        try
        {
            return new NativeInt8Engine(CreateHandle(context, bytes), context, inputs, outputs, plan, count);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Creates the native engine from plan bytes (the fuzz tests call this with arbitrary bytes).</summary>
    internal static unsafe EngineHandle CreateHandle(NativeContext context, ReadOnlySpan<byte> planBytes)
    {
        EngineHandle handle;
        NativeStatus status;
        fixed (byte* p = planBytes)
            status = NativeMethods.qatml_engine_create(context.Handle, p, planBytes.Length, out handle);
        if (status != NativeStatus.Ok)
        {
            handle.Dispose();
            NativeApi.Check(status);
        }
        return handle;
    }

    /// <summary>
    /// Runs <paramref name="rows"/> rows: inputs[i] holds rows x <see cref="InputSpec.RowSize"/> values (at least) of the
    /// input's type (float[], or long[] / int[] for token ids and masks), outputs rows x row size floats.
    /// </summary>
    public unsafe void Run(int rows, Array[] inputs, float[][] outputs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        if (inputs.Length != Inputs.Length || outputs.Length != Outputs.Length)
            throw new ArgumentException($"The engine takes {Inputs.Length} inputs and {Outputs.Length} outputs.");
        for (int i = 0; i < inputs.Length; i++)
            if (inputs[i].GetType() != BatchScorerSchema.BufferType(Inputs[i].ElementType))
                throw new ArgumentException($"Input {i} ('{Inputs[i].TensorName}') is {Inputs[i].ElementType}; a {inputs[i].GetType().Name} was given.");
        for (int i = 0; i < inputs.Length; i++)
            if (inputs[i].Length < (long)rows * Inputs[i].RowSize)
                throw new ArgumentException($"Input {i} holds {inputs[i].Length} values; {rows} rows need {(long)rows * Inputs[i].RowSize}.");
        for (int i = 0; i < outputs.Length; i++)
            if (outputs[i].Length < (long)rows * Outputs[i].RowSize)
                throw new ArgumentException($"Output {i} holds {outputs[i].Length} values; {rows} rows need {(long)rows * Outputs[i].RowSize}.");
        var pins = new GCHandle[inputs.Length + outputs.Length];
        float** ip = stackalloc float*[Math.Max(1, inputs.Length)];
        float** op = stackalloc float*[Math.Max(1, outputs.Length)];
        try
        {
            // The ABI takes each input as a pointer to its row-major values, whatever the plan input's type.
            for (int i = 0; i < inputs.Length; i++)
            {
                pins[i] = GCHandle.Alloc(inputs[i], GCHandleType.Pinned);
                ip[i] = (float*)Marshal.UnsafeAddrOfPinnedArrayElement(inputs[i], 0);
            }
            for (int i = 0; i < outputs.Length; i++)
            {
                pins[inputs.Length + i] = GCHandle.Alloc(outputs[i], GCHandleType.Pinned);
                op[i] = (float*)Marshal.UnsafeAddrOfPinnedArrayElement(outputs[i], 0);
            }
            NativeApi.Check(NativeMethods.qatml_engine_run(_handle, _context.Handle, rows, ip, inputs.Length, op, outputs.Length));
        }
        finally
        {
            foreach (var pin in pins)
                if (pin.IsAllocated)
                    pin.Free();
        }
    }

    public void Dispose()
    {
        _handle.Dispose();
        _context.Dispose();
    }
}

/// <summary>
/// Scores batches of rows with a <see cref="NativeInt8Engine"/> (one native call per batch). Owns the engine; each run
/// holds a reference to it, so <see cref="Dispose"/> during scoring frees it after the running batches.
/// </summary>
internal sealed class NativeBatchScorer : IBatchScorer, IDisposable
{
    private readonly SharedResource<NativeInt8Engine> _engine;

    /// <param name="engine">The engine; the scorer owns it from now on.</param>
    /// <param name="batchSize">Rows per run.</param>
    /// <param name="ownerName">The public type a use after Dispose names.</param>
    public NativeBatchScorer(NativeInt8Engine engine, int batchSize, string ownerName = nameof(NativeBatchScorer))
    {
        Engine = engine;
        BatchSize = batchSize;
        _engine = new SharedResource<NativeInt8Engine>(engine, e => e.Dispose(), ownerName);
    }

    /// <summary>The engine (its description; runs go through a batch).</summary>
    public NativeInt8Engine Engine { get; }

    public InputSpec[] Inputs => Engine.Inputs;

    public OutputSpec[] Outputs => Engine.Outputs;

    public int BatchSize { get; }

    public IScoringBatch CreateBatch(bool[] outputActive, int capacity) => new Batch(this, capacity);

    /// <summary>Throws <see cref="ObjectDisposedException"/> (naming the owner) once disposed.</summary>
    internal void ThrowIfDisposed() => _engine.ThrowIfDisposed();

    /// <summary>Releases the engine now, or after the batches running on it.</summary>
    public void Dispose() => _engine.Dispose();

    /// <summary>Staging buffers of one cursor; every output is computed (the engine's graph has no partial runs).</summary>
    internal sealed class Batch : IScoringBatch
    {
        private readonly NativeBatchScorer _scorer;
        private readonly Array[] _inputs;

        public Batch(NativeBatchScorer scorer, int? capacity = null)
        {
            _scorer = scorer;
            int b = capacity ?? scorer.BatchSize;
            _inputs = scorer.Inputs.Select(i => BatchScorerSchema.CreateInputBuffer(i, b)).ToArray();
            InputBuffers = _inputs.Select(a => a as float[] ?? []).ToArray();
            OutputBuffers = scorer.Outputs.Select(o => new float[checked(o.RowSize * b)]).ToArray();
            OutputRowSizes = scorer.Outputs.Select(o => o.RowSize).ToArray();
        }

        public float[][] InputBuffers { get; }

        public float[][] OutputBuffers { get; }

        public int[] OutputRowSizes { get; }

        public void SetRow<T>(int input, int slot, in VBuffer<T> row, long rowIndex)
            where T : unmanaged
        {
            InputSpec spec = _scorer.Inputs[input];
            if ((object)_inputs[input] is not T[] staging)
                throw new InvalidOperationException($"Input '{spec.TensorName}' of the native engine is {spec.ElementType}; a {typeof(T).Name} row was given.");
            BatchScorerSchema.CopyRow(spec, row, staging.AsSpan(slot * spec.RowSize, spec.RowSize), rowIndex);
        }

        public void Run(int rows)
        {
            if (rows <= 0)
                return;
            using SharedResource<NativeInt8Engine>.Lease lease = _scorer._engine.Acquire();
            lease.Value.Run(rows, _inputs, OutputBuffers);
        }

        public void Dispose()
        {
        }
    }
}

using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Inference;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Inference;

public sealed class OnnxScoringTests
{
    private static readonly Lazy<FashionMnist.Set> s_images = new(() => FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 200));

    private static IDataView Images(MLContext context) => FashionMnist.Load(context, s_images.Value);

    private static OnnxModelScoringOptions FmnistOptions(int batchSize = 64) => new()
    {
        ModelPath = TestData.FmnistNet,
        BatchSize = batchSize,
        IntraOpNumThreads = 1,
    };

    [Fact]
    public void OutputsEqualADirectOnnxRuntimeRunBitForBit()
    {
        var context = new MLContext(seed: 1);
        using OnnxModelScoringTransformer transformer = context.Quantization.ScoreOnnxModel(FmnistOptions(batchSize: 64)).Fit(Images(context));
        float[][] scored = context.Data.CreateEnumerable<Logits>(transformer.Transform(Images(context)), reuseRowObject: false)
            .Select(r => r.logits).ToArray();

        // The same batch boundaries (64, 64, 64, 8) through a hand-written ONNX Runtime loop.
        var rows = FashionMnist.Rows(s_images.Value);
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
        using var session = new InferenceSession(TestData.FmnistNet, options);
        var expected = new List<float[]>();
        for (int start = 0; start < rows.Count; start += 64)
        {
            int n = Math.Min(64, rows.Count - start);
            float[] input = rows.Skip(start).Take(n).SelectMany(r => r.Input).ToArray();
            using OrtValue value = OrtValue.CreateTensorValueFromMemory(input, [n, 1, 28, 28]);
            using var results = session.Run(new RunOptions(), ["input"], [value], ["logits"]);
            float[] logits = results[0].GetTensorDataAsSpan<float>().ToArray();
            for (int i = 0; i < n; i++)
                expected.Add(logits.AsSpan(i * 10, 10).ToArray());
        }

        Assert.Equal(200, scored.Length);
        for (int i = 0; i < scored.Length; i++)
            Assert.Equal(expected[i], scored[i]);
        // And the model is the real one: it classifies most test images right.
        int correct = scored.Select((l, i) => Array.IndexOf(l, l.Max()) == rows[i].Label ? 1 : 0).Sum();
        Assert.True(correct >= 170, $"{correct}/200 correct");
    }

    [Fact]
    public void PassThroughColumnsKeepTheirRowsAcrossBatches()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Images(context);
        using var transformer = context.Quantization.ScoreOnnxModel(FmnistOptions(batchSize: 7)).Fit(data);
        var rows = context.Data.CreateEnumerable<LabelledLogits>(transformer.Transform(data), reuseRowObject: false).ToArray();
        Assert.Equal(s_images.Value.Labels.Select(l => (uint)l), rows.Select(r => r.Label));
        Assert.Equal(FashionMnist.Rows(s_images.Value)[150].Input, rows[150].input);
    }

    [Fact]
    public void ParallelCursorsCoverEveryRowWithTheSameScores()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Images(context);
        using var transformer = context.Quantization.ScoreOnnxModel(FmnistOptions(batchSize: 16)).Fit(data);
        IDataView scored = transformer.Transform(data);
        DataViewSchema.Column logits = scored.Schema["logits"];
        var sequential = ReadById(scored.GetRowCursor([logits]), logits);

        DataViewRowCursor[] set = scored.GetRowCursorSet([logits], 2);
        var parallel = new System.Collections.Concurrent.ConcurrentDictionary<ulong, float[]>();
        Parallel.ForEach(set, cursor =>
        {
            foreach (var kv in ReadById(cursor, logits))
                Assert.True(parallel.TryAdd(kv.Key, kv.Value));
        });
        Assert.Equal(sequential.Count, parallel.Count);
        foreach (var (id, expected) in sequential)
        {
            float[] got = parallel[id];
            float scale = expected.Max(Math.Abs);
            for (int j = 0; j < expected.Length; j++)
                Assert.True(Math.Abs(expected[j] - got[j]) <= 1e-5f * scale, $"row {id} logit {j}: {expected[j]} vs {got[j]}");
        }
    }

    private static Dictionary<ulong, float[]> ReadById(DataViewRowCursor cursor, DataViewSchema.Column column)
    {
        using (cursor)
        {
            var ids = cursor.GetIdGetter();
            var getter = cursor.GetGetter<VBuffer<float>>(column);
            var result = new Dictionary<ulong, float[]>();
            DataViewRowId id = default;
            VBuffer<float> value = default;
            while (cursor.MoveNext())
            {
                ids(ref id);
                getter(ref value);
                result.Add(id.Low, value.DenseValues().ToArray());
            }
            return result;
        }
    }

    [Fact]
    public void IntermediateTensorCanBeRequestedAsAnExtraOutput()
    {
        var context = new MLContext(seed: 1);
        var options = FmnistOptions();
        var model = Microsoft.ML.Quantization.Onnx.OnnxModel.Load(TestData.FmnistNet);
        string relu = model.Graph.Nodes.First(n => n.OpType == "Relu").Outputs[0];
        options.Outputs.Add(new OnnxColumnBinding("logits", "logits"));
        options.Outputs.Add(new OnnxColumnBinding("firstRelu", relu));
        using var transformer = context.Quantization.ScoreOnnxModel(options).Fit(Images(context));
        IDataView scored = transformer.Transform(Images(context));
        var column = scored.Schema["firstRelu"];
        using var cursor = scored.GetRowCursor([column, scored.Schema["logits"]]);
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> value = default;
        Assert.True(cursor.MoveNext());
        getter(ref value);
        Assert.Equal(32 * 28 * 28, value.Length);                 // conv1 output after ReLU
        Assert.True(value.DenseValues().All(v => v >= 0) && value.DenseValues().Any(v => v > 0));
    }

    [Fact]
    public void TransformIsLazy()
    {
        var context = new MLContext(seed: 1);
        using var transformer = context.Quantization.ScoreOnnxModel(FmnistOptions()).Fit(Images(context));
        var exploding = new ThrowingDataView(Images(context).Schema);
        IDataView view = transformer.Transform(exploding);               // no cursor yet: nothing runs
        Assert.Equal(10, ((VectorDataViewType)view.Schema["logits"].Type).Size);
        Assert.Throws<InvalidOperationException>(() => view.Preview(1)); // only reading runs the source
    }

    [Fact]
    public void OutputSchemaDeclaresOneDimensionalVectors()
    {
        var context = new MLContext(seed: 1);
        var estimator = context.Quantization.ScoreOnnxModel(FmnistOptions());
        SchemaShape shape = estimator.GetOutputSchema(Microsoft.ML.Quantization.Internal.SchemaShapes.FromSchema(Images(context).Schema));
        SchemaShape.Column logits = shape.Single(c => c.Name == "logits");
        Assert.Equal(SchemaShape.Column.VectorKind.Vector, logits.Kind);
        Assert.Equal(NumberDataViewType.Single, logits.ItemType);
    }

    [Fact]
    public void MissingInputColumnIsAClearError()
    {
        var context = new MLContext(seed: 1);
        IDataView wrong = context.Data.LoadFromEnumerable(new[] { new Renamed { pixels = new float[784] } });
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.ScoreOnnxModel(FmnistOptions()).Fit(wrong));
        Assert.Contains("Could not find input column 'input'", error.Message);
        var shapeError = Assert.Throws<ArgumentOutOfRangeException>(() =>
            context.Quantization.ScoreOnnxModel(FmnistOptions()).GetOutputSchema(Microsoft.ML.Quantization.Internal.SchemaShapes.FromSchema(wrong.Schema)));
        Assert.Contains("Could not find input column 'input'", shapeError.Message);
    }

    [Fact]
    public void WrongVectorSizeIsAClearError()
    {
        var context = new MLContext(seed: 1);
        IDataView wrong = context.Data.LoadFromEnumerable(new[] { new WrongSize { input = new float[100] } });
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.ScoreOnnxModel(FmnistOptions()).Fit(wrong));
        Assert.Contains("Schema mismatch for input column 'input': expected Vector<Single, 784>, got Vector<Single, 100>", error.Message);
    }

    [Fact]
    public void NonFloatColumnIsAClearError()
    {
        var context = new MLContext(seed: 1);
        IDataView wrong = context.Data.LoadFromEnumerable(new[] { new Doubles { input = new double[784] } });
        using var transformer = context.Quantization.ScoreOnnxModel(FmnistOptions()).Fit(Images(context));
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => transformer.Transform(wrong));
        Assert.Contains("Schema mismatch for input column 'input': expected Vector<Single, 784>, got Vector<Double, 784>", error.Message);
    }

    [Fact]
    public void MissingModelFileIsAClearError()
    {
        var context = new MLContext(seed: 1);
        var error = Assert.Throws<FileNotFoundException>(() =>
            context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = "/nonexistent/model.onnx" }).Fit(Images(context)));
        Assert.Contains("/nonexistent/model.onnx", error.Message);
    }

    [Fact]
    public void GpuRequestFallsBackToCpuWhenAllowed()
    {
        // This machine's ONNX Runtime is the CPU package: CUDA is never there.
        var context = new MLContext(seed: 1);
        var options = FmnistOptions();
        options.ExecutionProvider = OnnxExecutionProvider.Cuda;
        options.FallbackToCpu = true;
        var messages = new List<string>();
        context.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        using var transformer = context.Quantization.ScoreOnnxModel(options).Fit(Images(context));
        Assert.Equal(OnnxExecutionProvider.Cpu, transformer.ExecutionProvider);
        Assert.Equal(200, context.Data.CreateEnumerable<Logits>(transformer.Transform(Images(context)), false).Count());
        lock (messages)
            Assert.Contains(messages, m => m.Contains("CUDAExecutionProvider") && m.Contains("Running on the CPU instead"));
    }

    [Theory]
    [InlineData(OnnxExecutionProvider.Cuda, "CUDAExecutionProvider")]
    [InlineData(OnnxExecutionProvider.TensorRT, "TensorrtExecutionProvider")]
    public void GpuRequestWithoutFallbackSaysNoGpu(OnnxExecutionProvider provider, string providerName)
    {
        var context = new MLContext(seed: 1) { FallbackToCpu = true };
        var options = FmnistOptions();
        options.ExecutionProvider = provider;
        options.FallbackToCpu = false; // the option wins over the context's setting
        var error = Assert.Throws<InvalidOperationException>(() => context.Quantization.ScoreOnnxModel(options).Fit(Images(context)));
        Assert.Contains(providerName, error.Message);
        Assert.Contains("Microsoft.ML.OnnxRuntime.Gpu", error.Message);
    }

    [Fact]
    public void FixedBatchModelNeedsAMatchingBatchSize()
    {
        var context = new MLContext(seed: 1);
        var options = FmnistOptions();
        options.BatchSize = 0;
        Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.ScoreOnnxModel(options));
    }

    private sealed class Logits
    {
        public float[] logits { get; set; } = [];
    }

    private sealed class LabelledLogits
    {
        public float[] logits { get; set; } = [];
        public float[] input { get; set; } = [];
        public uint Label { get; set; }
    }

    private sealed class Renamed
    {
        [VectorType(784)] public float[] pixels { get; set; } = [];
    }

    private sealed class WrongSize
    {
        [VectorType(100)] public float[] input { get; set; } = [];
    }

    private sealed class Doubles
    {
        [VectorType(784)] public double[] input { get; set; } = [];
    }

    /// <summary>A data view whose cursors throw: proves Transform reads nothing.</summary>
    private sealed class ThrowingDataView(DataViewSchema schema) : IDataView
    {
        public bool CanShuffle => false;
        public DataViewSchema Schema => schema;
        public long? GetRowCount() => null;
        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
            => throw new InvalidOperationException("the source was read");
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
            => throw new InvalidOperationException("the source was read");
    }
}

using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests;

/// <summary>
/// One conformance test applied to every QatMl estimator: schema propagation, ML.NET-shaped errors for a missing and
/// a mistyped column (from GetOutputSchema and from Fit), persistence by both routes (mlContext.Model.Load gives
/// identical scores, mlContext.Quantization.LoadModel gives back the QatMl type with its options), and a PredictionEngine
/// over the fitted, restored and reloaded transformer and chain giving exactly Transform's values, row by row.
/// </summary>
public sealed class ConformanceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qatml-conformance-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<string> Estimators() => ["ScoreOnnxModel", "Calibrate", "PostTraining", "PostTrainingW4A8", "PostTrainingNative", "AwareTraining"];

    private static IEstimator<ITransformer> Create(MLContext context, string name) => name switch
    {
        "ScoreOnnxModel" => context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions
        {
            ModelPath = TestData.FmnistNet, BatchSize = 16, IntraOpNumThreads = 1,
            Outputs = { new OnnxColumnBinding("Scores", "logits"), new OnnxColumnBinding("Pool1", "/pool1/MaxPool_output_0") },
        }),
        "Calibrate" => context.Quantization.Calibrate(new CalibrationEstimatorOptions { ModelPath = TestData.FmnistNet, SampleCount = 40, IntraOpNumThreads = 1 }),
        "AwareTraining" => context.Quantization.AwareTraining(new Microsoft.ML.Quantization.AwareTraining.AwareTrainingOptions
        {
            ModelPath = TestData.FmnistNetBn, Epochs = 1, TrainingBatchSize = 25, CalibrationSampleCount = 20, IntraOpNumThreads = 1, BatchSize = 8,
        }),
        _ => context.Quantization.PostTraining(new PostTrainingOptions
        {
            ModelPath = TestData.FmnistNet, SampleCount = 40, BatchSize = 8, IntraOpNumThreads = 1, FallbackToCpu = true,
            Precision = name == "PostTrainingW4A8" ? QuantizationPrecision.W4A8 : QuantizationPrecision.Int8,
            // The native engine is bit-exact with ONNX Runtime on INT8 FmnistNet, so ML.NET's reload scores identically.
            Backend = name == "PostTrainingNative" ? QuantizedBackend.Native : QuantizedBackend.OnnxRuntime,
            AllowBackendFallback = name != "PostTrainingNative",
            Outputs = { new OnnxColumnBinding("Scores", "logits") },
        }),
    };

    [Theory]
    [MemberData(nameof(Estimators))]
    public void Estimator_Conforms(string name)
    {
        var context = new MLContext(seed: 1);
        IDataView data = context.Data.LoadFromEnumerable(FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 50)));
        IEstimator<ITransformer> estimator = Create(context, name);

        // Schema: the estimator's shape names the transformer's columns with the same kinds and types.
        SchemaShape shape = estimator.GetOutputSchema(Internal.SchemaShapes.FromSchema(data.Schema));
        ITransformer transformer = estimator.Fit(data);
        DataViewSchema schema = transformer.GetOutputSchema(data.Schema);
        Assert.Equal(shape.Select(c => c.Name).OrderBy(n => n), schema.Select(c => c.Name).OrderBy(n => n));
        foreach (var column in shape)
            Assert.Equal(column.ItemType, schema[column.Name].Type is VectorDataViewType v ? v.ItemType : schema[column.Name].Type);

        // Bad input: missing and mistyped columns, from both entry points, before any row is read.
        var missing = context.Data.LoadFromEnumerable(new[] { new OtherRow() });
        Assert.Contains("Could not find input column 'input'", Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(missing)).Message);
        Assert.Contains("Could not find input column 'input'",
            Assert.Throws<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Internal.SchemaShapes.FromSchema(missing.Schema))).Message);
        var doubles = context.Data.LoadFromEnumerable(new[] { new DoubleRow() });
        Assert.Contains("Schema mismatch for input column 'input'", Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(doubles)).Message);
        Assert.Contains("Schema mismatch for input column 'input'", Assert.Throws<ArgumentOutOfRangeException>(() => transformer.GetOutputSchema(doubles.Schema)).Message);

        // Persistence, route 1: mlContext.Model.Load in a fresh context scores identically.
        string path = Path.Combine(_dir, name + ".zip");
        context.Model.Save(transformer, data.Schema, path);
        var fresh = new MLContext(seed: 2);
        ITransformer plain = fresh.Model.Load(path, out DataViewSchema savedSchema);
        Assert.Equal(data.Schema.Select(c => c.Name), savedSchema.Select(c => c.Name));
        IDataView expected = transformer.Transform(data), actual = plain.Transform(data);
        foreach (var column in schema.Where(c => data.Schema.GetColumnOrNull(c.Name) is null))
            Assert.Equal(Column(expected, column.Name), Column(actual, column.Name));
        if (name == "Calibrate")
            Assert.Equal(Column(data, "input"), Column(actual, "input"));

        // PredictionEngine: one row at a time, exactly Transform's values (fitted, and ML.NET's reload).
        var scoredColumns = schema.Where(c => data.Schema.GetColumnOrNull(c.Name) is null).Select(c => c.Name).Append("input").ToArray();
        AssertPredictionEngineMatches(context, transformer, expected, scoredColumns);
        AssertPredictionEngineMatches(fresh, plain, expected, scoredColumns);

        // Route 2: LoadModel restores the QatMl type and its options.
        ITransformer restored = fresh.Quantization.LoadModel(path, out _);
        Assert.Equal(transformer.GetType(), restored.GetType());
        switch (transformer)
        {
            case OnnxModelScoringTransformer s:
                var r = (OnnxModelScoringTransformer)restored;
                Assert.Equal(s.Options.BatchSize, r.Options.BatchSize);
                Assert.Equal(s.Options.IntraOpNumThreads, r.Options.IntraOpNumThreads);
                Assert.Equal(s.Options.Outputs, r.Options.Outputs);
                Assert.Equal(s.OutputColumnNames, r.OutputColumnNames);
                break;
            case CalibrationTransformer c:
                Assert.Equal(c.Table.ToJson(), ((CalibrationTransformer)restored).Table.ToJson());
                Assert.Equal(c.RowsObserved, ((CalibrationTransformer)restored).RowsObserved);
                break;
            case QuantizedModelTransformer q:
                var rq = (QuantizedModelTransformer)restored;
                Assert.Equal(q.BatchSize, rq.BatchSize);
                Assert.Equal(q.IntraOpNumThreads, rq.IntraOpNumThreads);
                Assert.Equal(q.RequestedExecutionProvider, rq.RequestedExecutionProvider);
                Assert.Equal(q.Settings.FallbackToCpu, rq.Settings.FallbackToCpu);
                Assert.Equal(name == "PostTrainingNative" ? QuantizedBackend.Native : QuantizedBackend.OnnxRuntime, q.Backend);
                Assert.Equal(q.Backend, rq.Backend);
                Assert.Equal(q.RequestedBackend, rq.RequestedBackend);
                Assert.Equal(q.AllowBackendFallback, rq.AllowBackendFallback);
                Assert.Equal(q.Nodes, rq.Nodes);
                Assert.Equal(q.QuantizedModel.Length, rq.QuantizedModel.Length);   // int4 weights come back packed
                break;
        }
        foreach (var column in schema.Where(c => data.Schema.GetColumnOrNull(c.Name) is null))
            Assert.Equal(Column(expected, column.Name), Column(restored.Transform(data), column.Name));
        AssertPredictionEngineMatches(fresh, restored, expected, scoredColumns);

        // Inside a pipeline (a TransformerChain) the QatMl transformer is restored in place.
        var chain = context.Transforms.CopyColumns("copy", "input").Fit(data).Append(transformer);
        string chainPath = Path.Combine(_dir, name + "-chain.zip");
        context.Model.Save(chain, data.Schema, chainPath);
        var restoredChain = Assert.IsType<TransformerChain<ITransformer>>(fresh.Quantization.LoadModel(chainPath, out _));
        Assert.Equal(transformer.GetType(), restoredChain.Last().GetType());
        AssertPredictionEngineMatches(context, chain, expected, scoredColumns);
        AssertPredictionEngineMatches(fresh, restoredChain, expected, scoredColumns);
        // ML.NET's own OnnxTransformer (route 1) keeps its model file in TMPDIR until it is disposed.
        foreach (var t in new[] { transformer, plain, restored, restoredChain })
            (t as IDisposable)?.Dispose();
    }

    /// <summary>
    /// Scores the first rows through a PredictionEngine and compares every listed column the transformer outputs with
    /// <paramref name="expected"/> (Transform's values), bit for bit.
    /// </summary>
    private static void AssertPredictionEngineMatches(MLContext context, ITransformer transformer, IDataView expected, string[] columns)
    {
        var rows = FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 12));
        using var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, AnyScores>(transformer,
            new PredictionEngineOptions { OwnsTransformer = false });
        var present = columns.Where(c => engine.OutputSchema.GetColumnOrNull(c) is not null).ToArray();
        Assert.NotEmpty(present);
        var want = present.ToDictionary(c => c, c => Column(expected, c));
        for (int i = 0; i < rows.Count; i++)
        {
            AnyScores one = engine.Predict(rows[i]);
            foreach (string c in present)
                Assert.Equal(want[c][i], one.Get(c));
        }
    }

    /// <summary>Every column a QatMl transformer in these tests may output (PredictionEngine fills those the schema has).</summary>
    private sealed class AnyScores
    {
        public float[]? Scores { get; set; }

        public float[]? Pool1 { get; set; }

        [ColumnName("logits")]
        public float[]? Logits { get; set; }

        [ColumnName("input")]
        public float[]? Input { get; set; }

        public float[]? Get(string column) => column switch
        {
            "Scores" => Scores,
            "Pool1" => Pool1,
            "logits" => Logits,
            _ => Input,
        };
    }

    private static List<float[]> Column(IDataView view, string name)
    {
        var column = view.Schema[name];
        var result = new List<float[]>();
        using var cursor = view.GetRowCursor([column]);
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.DenseValues().ToArray());
        }
        return result;
    }

    private sealed class OtherRow
    {
        [Microsoft.ML.Data.VectorType(4)]
        public float[] Other { get; set; } = new float[4];
    }

    private sealed class DoubleRow
    {
        [Microsoft.ML.Data.VectorType(784)]
        [Microsoft.ML.Data.ColumnName("input")]
        public double[] Input { get; set; } = new double[784];
    }
}

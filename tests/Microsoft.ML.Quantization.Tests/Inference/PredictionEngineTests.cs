using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Inference;

/// <summary>
/// PredictionEngine over QatMl transformers (ConformanceTests covers every estimator and both persistence routes): after
/// ML.NET transforms in a TransformerChain, one engine per thread over one shared transformer, schema errors when the
/// engine is made, and use after Dispose. Every value is compared bit for bit with the batched Transform.
/// </summary>
public sealed class PredictionEngineTests
{
    private static readonly Lazy<List<FashionMnist.Row>> Rows = new(() => FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 48)));

    private static QuantizedModelTransformer Quantize(MLContext context, QuantizedBackend backend)
    {
        IDataView calibration = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 64));
        var options = new PostTrainingOptions
        {
            ModelPath = TestData.FmnistNet, SampleCount = 64, BatchSize = 16, IntraOpNumThreads = 1, Backend = backend, AllowBackendFallback = false,
        };
        QuantizedModelTransformer model = context.Quantization.PostTraining(options).Fit(calibration);
        Assert.Equal(backend, model.Backend);
        return model;
    }

    private static List<float[]> Logits(MLContext context, ITransformer model, IDataView data)
        => context.Data.CreateEnumerable<Scored>(model.Transform(data), reuseRowObject: false).Select(s => s.Logits).ToList();

    [Theory]
    [InlineData(QuantizedBackend.OnnxRuntime)]
    [InlineData(QuantizedBackend.Native)]
    public void AfterMLNetTransformsInAChain_PredictionEngineGivesTransformsValues(QuantizedBackend backend)
    {
        var context = new MLContext(seed: 1);
        using QuantizedModelTransformer quantized = Quantize(context, backend);
        // The rows arrive as doubles under another name: ML.NET's ConvertType makes the model's float "input".
        var raw = Rows.Value.Select(r => new RawRow { Pixels = r.Input.Select(v => (double)v).ToArray(), Label = r.Label }).ToList();
        IDataView data = context.Data.LoadFromEnumerable(raw);
        var chain = context.Transforms.Conversion.ConvertType("input", "Pixels", DataKind.Single)
            .Append(context.Transforms.CopyColumns("Target", "Label"))
            .Fit(data)
            .Append(quantized);
        List<float[]> expected = Logits(context, chain, data);
        Assert.Equal(Logits(context, quantized, context.Data.LoadFromEnumerable(Rows.Value)), expected);

        using var engine = context.Model.CreatePredictionEngine<RawRow, Scored>(chain, new PredictionEngineOptions { OwnsTransformer = false });
        for (int i = 0; i < raw.Count; i++)
            Assert.Equal(expected[i], engine.Predict(raw[i]).Logits);
    }

    [Theory]
    [InlineData(QuantizedBackend.OnnxRuntime)]
    [InlineData(QuantizedBackend.Native)]
    public void OneEnginePerThread_OverOneTransformer_EachGivesTransformsValues(QuantizedBackend backend)
    {
        var context = new MLContext(seed: 1);
        using QuantizedModelTransformer quantized = Quantize(context, backend);
        List<float[]> expected = Logits(context, quantized, context.Data.LoadFromEnumerable(Rows.Value));
        var mismatches = new int[4];
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            // PredictionEngine is not thread-safe; the pool pattern gives each thread its own over the shared transformer.
            using var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, Scored>(quantized, new PredictionEngineOptions { OwnsTransformer = false });
            for (int round = 0; round < 3; round++)
            {
                for (int i = 0; i < Rows.Value.Count; i++)
                {
                    int row = (i + t * 11) % Rows.Value.Count;
                    if (!engine.Predict(Rows.Value[row]).Logits.AsSpan().SequenceEqual(expected[row]))
                        mismatches[t]++;
                }
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Equal([0, 0, 0, 0], mismatches);
    }

    [Fact]
    public void ScoringIntermediateTensors_OfUnknownShape_PredictionEngineGivesTransformsValues()
    {
        var context = new MLContext(seed: 1);
        var options = new OnnxModelScoringOptions
        {
            ModelPath = TestData.FmnistNet, BatchSize = 16, IntraOpNumThreads = 1,
            Outputs = { new OnnxColumnBinding("logits", "logits"), new OnnxColumnBinding("Pool1", "/pool1/MaxPool_output_0") },
        };
        IDataView data = context.Data.LoadFromEnumerable(Rows.Value);
        using OnnxModelScoringTransformer scoring = context.Quantization.ScoreOnnxModel(options).Fit(data);
        var expected = context.Data.CreateEnumerable<ScoredWithPool>(scoring.Transform(data), reuseRowObject: false).ToList();
        using var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, ScoredWithPool>(scoring, new PredictionEngineOptions { OwnsTransformer = false });
        for (int i = 0; i < Rows.Value.Count; i++)
        {
            ScoredWithPool one = engine.Predict(Rows.Value[i]);
            Assert.Equal(expected[i].Logits, one.Logits);
            Assert.Equal(expected[i].Pool1, one.Pool1);
            Assert.True(one.Pool1.Length > one.Logits.Length);
        }
    }

    [Fact]
    public void AMissingInputColumn_FailsWhenTheEngineIsMade_NamingTheColumnsPresent()
    {
        var context = new MLContext(seed: 1);
        using QuantizedModelTransformer quantized = Quantize(context, QuantizedBackend.OnnxRuntime);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Model.CreatePredictionEngine<RawRow, Scored>(quantized));
        Assert.Contains("Could not find input column 'input'", error.Message);
        Assert.Contains("'Pixels'", error.Message);
    }

    [Fact]
    public void TransformerDisposed_PredictThrowsObjectDisposedNamingTheType_AndANewEngineIsRefused()
    {
        var context = new MLContext(seed: 1);
        QuantizedModelTransformer quantized = Quantize(context, QuantizedBackend.Native);
        var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, Scored>(quantized, new PredictionEngineOptions { OwnsTransformer = false });
        Assert.Equal(10, engine.Predict(Rows.Value[0]).Logits.Length);
        quantized.Dispose();
        var error = Assert.Throws<ObjectDisposedException>(() => engine.Predict(Rows.Value[1]));
        Assert.Equal(nameof(QuantizedModelTransformer), error.ObjectName);
        Assert.Throws<ObjectDisposedException>(() => context.Model.CreatePredictionEngine<FashionMnist.Row, Scored>(quantized));
    }

    [Fact]
    public void AnEngineMadeWithMLNetsDefaults_OwnsTheTransformer()
    {
        // ML.NET's rule (PredictionEngineOptions.OwnsTransformer defaults to true): disposing the engine disposes the model.
        var context = new MLContext(seed: 1);
        QuantizedModelTransformer quantized = Quantize(context, QuantizedBackend.OnnxRuntime);
        using (var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, Scored>(quantized))
            Assert.Equal(10, engine.Predict(Rows.Value[0]).Logits.Length);
        Assert.Throws<ObjectDisposedException>(() => quantized.Transform(context.Data.LoadFromEnumerable(Rows.Value)));
    }

    private sealed class RawRow
    {
        [VectorType(FashionMnist.Pixels)]
        public double[] Pixels { get; set; } = [];

        public uint Label { get; set; }
    }

    private sealed class Scored
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }

    private sealed class ScoredWithPool
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];

        public float[] Pool1 { get; set; } = [];
    }
}

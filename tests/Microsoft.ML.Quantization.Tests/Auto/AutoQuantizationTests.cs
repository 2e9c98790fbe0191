using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Auto;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Auto;

/// <summary>
/// mlContext.Quantization.Auto on FmnistNet with real Fashion-MNIST rows: the chosen model meets the constraint on the
/// validation rows (re-measured with Compare), is no larger than the best plain scheme that meets it, reports every
/// trial, and saves and loads to the same scores.
/// </summary>
public sealed class AutoQuantizationTests
{
    private static readonly Lazy<List<FashionMnist.Row>> Train =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 200)));
    private static readonly Lazy<List<FashionMnist.Row>> Validation =
        new(() => FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 1000)));

    private static AutoQuantizationOptions Options() => new()
    {
        PostTraining = new PostTrainingOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 200 },
        LabelColumnName = "Label", MaxAccuracyDrop = 0.5, AdaRound = false,
    };

    [Fact]
    public void AccuracyConstraint_TheChosenModelMeetsIt_IsNoLargerThanTheBestPlainScheme_AndSavesAndLoads()
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value), validation = context.Data.LoadFromEnumerable(Validation.Value);
        var options = Options();
        var reported = new List<QuantizationTrial>();
        options.Progress = new SynchronousProgress<QuantizationTrial>(reported.Add);
        using var result = context.Quantization.Auto(options).Execute(train, validation);

        Assert.Equal("accuracy", result.Metric);
        Assert.True(result.ConstraintMet, result.ToString());
        Assert.InRange(result.Trials.Count, 4, options.MaxTrials);
        Assert.Equal(result.Trials, reported);
        Assert.Equal(3, result.Trials.Count(t => t.FixedScheme));
        Assert.All(result.Trials.Where(t => t.Accepted), t => Assert.True(result.FloatMetric - t.Metric <= 0.5 + 1e-9, t.ToString()));
        Assert.All(result.Trials.Where(t => !t.Accepted), t => Assert.StartsWith("accuracy drop", t.Reason));
        QuantizationTrial fixedBest = result.BestFixedScheme ?? throw new Xunit.Sdk.XunitException("no plain scheme met 0.5 points:\n" + result);
        Assert.True(result.BestTrial.SizeBytes <= fixedBest.SizeBytes, result.ToString());
        Assert.Equal(result.Trials.Where(t => t.Accepted).Min(t => t.SizeBytes), result.BestTrial.SizeBytes);
        Assert.Contains(result.BestTrial, result.ParetoFront);
        Assert.All(result.ParetoFront, p => Assert.DoesNotContain(result.Trials, u => u.Metric > p.Metric && u.SizeBytes < p.SizeBytes && u.LatencyMilliseconds < p.LatencyMilliseconds));

        // The transformer is the chosen trial's model: Compare on the validation rows gives the trial's accuracy.
        Assert.Equal(result.BestTrial.SizeBytes, result.Model.QuantizedModel.LongLength);
        var comparison = context.Quantization.Compare(TestData.FmnistNet, result.Model, validation,
            new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
        Assert.Equal(result.BestTrial.Metric, comparison.QuantizedAccuracy!.Value * 100, 6);
        Assert.Equal(result.FloatMetric, comparison.FloatAccuracy!.Value * 100, 6);

        AssertSavesAndLoads(context, result.Model, validation.Schema, Validation.Value[0]);
    }

    /// <summary>Saves and loads <paramref name="model"/>: the same QDQ bytes, and the same scores for <paramref name="row"/> through a PredictionEngine.</summary>
    internal static void AssertSavesAndLoads(MLContext context, QuantizedModelTransformer model, DataViewSchema schema, FashionMnist.Row row)
    {
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"qatml-auto-{Guid.NewGuid():N}.zip");
        try
        {
            context.Model.Save(model, schema, path);
            using var restored = Assert.IsType<QuantizedModelTransformer>(context.Quantization.LoadModel(path, out _));
            Assert.Equal(model.QuantizedModel, restored.QuantizedModel);
            var engine = context.Model.CreatePredictionEngine<FashionMnist.Row, Scores>(restored);
            var direct = context.Model.CreatePredictionEngine<FashionMnist.Row, Scores>(model);
            Assert.Equal(direct.Predict(row).Logits, engine.Predict(row).Logits);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void WithoutALabel_TheOutputCosineIsTheConstraint()
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value), validation = context.Data.LoadFromEnumerable(Validation.Value.Take(300));
        var options = Options();
        options.LabelColumnName = null;
        options.MinOutputCosine = 0.999;
        options.MaxTrials = 8;
        using var result = context.Quantization.Auto(options).Execute(train, validation);
        Assert.Equal("output cosine", result.Metric);
        Assert.True(result.ConstraintMet, result.ToString());
        Assert.True(result.Trials.Count <= 8);
        Assert.Contains(result.Trials, t => !t.Accepted && t.Reason!.StartsWith("output cosine", StringComparison.Ordinal));   // W4A4 misses 0.999
        var comparison = context.Quantization.Compare(TestData.FmnistNet, result.Model, validation, new ComparisonOptions { PerLayer = false, MeasureLatency = false });
        Assert.True(comparison.MeanCosineSimilarity >= 0.999, $"{comparison.MeanCosineSimilarity}");
    }

    [Fact]
    public void NativeBackend_TrialsAreScoredOnTheEngineTheResultRunsOn()
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value), validation = context.Data.LoadFromEnumerable(Validation.Value.Take(300));
        var options = Options();
        options.PostTraining.Backend = Microsoft.ML.Quantization.Inference.QuantizedBackend.Native;
        options.MaxTrials = 4;
        using var result = context.Quantization.Auto(options).Execute(train, validation);
        Assert.True(result.ConstraintMet, result.ToString());
        Assert.Null(result.Model.BackendFallbackReason);
        Assert.All(result.Trials.Where(t => t.Accepted), t => Assert.True(t.LatencyMilliseconds > 0, t.ToString()));
        // Compare runs the chosen model on its backend, the native engine: the same accuracy as the trial measured.
        var comparison = context.Quantization.Compare(TestData.FmnistNet, result.Model, validation,
            new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
        Assert.Equal(result.BestTrial.Metric, comparison.QuantizedAccuracy!.Value * 100, 6);
    }

    [Fact]
    public void Cancellation_AndBadOptions_AreReported()
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value.Take(32));
        var options = Options();
        options.CancellationToken = new CancellationToken(canceled: true);
        Assert.ThrowsAny<OperationCanceledException>(() => context.Quantization.Auto(options).Execute(train, train));

        options = Options();
        options.MaxTrials = 0;
        Assert.Contains("MaxTrials", Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Auto(options)).Message);
        options = Options();
        options.LabelColumnName = "NoSuchColumn";
        var error = Assert.ThrowsAny<Exception>(() => context.Quantization.Auto(options).Execute(train, train));
        Assert.Contains("NoSuchColumn", error.Message);
    }

    private sealed class Scores
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }
}

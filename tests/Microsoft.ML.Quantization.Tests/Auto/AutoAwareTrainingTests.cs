using Microsoft.ML.Quantization.Auto;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Auto;

/// <summary>
/// Quantization-aware training as the automatic search's last resort, on FmnistNet with real Fashion-MNIST rows: no post-training
/// trial loses nothing on 1000 test images, one epoch of QAT on 512 training images does; it is scored like the others (the same
/// rows, Compare reproduces its accuracy), chosen, and saved. It does not run when turned off or without a training label.
/// </summary>
public sealed class AutoAwareTrainingTests
{
    private static readonly Lazy<List<FashionMnist.Row>> Train =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 512)));
    private static readonly Lazy<List<FashionMnist.Row>> Validation =
        new(() => FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 1000)));

    /// <summary>Four trials: the three plain schemes and one more (QAT when it can run, INT8 with Auto calibration otherwise).</summary>
    private static AutoQuantizationOptions Options() => new()
    {
        PostTraining = new PostTrainingOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 256 },
        LabelColumnName = "Label", MaxAccuracyDrop = 0, MaxTrials = 4, AwareTrainingEpochs = 1, ValidationRowCount = 1000,
    };

    [Fact]
    public void NoPostTrainingTrialMeetsTheConstraint_QatIsTheLastTrial_ScoredOnTheSameRows_AndChosen()
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value), validation = context.Data.LoadFromEnumerable(Validation.Value);
        var options = Options();
        var reported = new List<QuantizationTrial>();
        options.Progress = new SynchronousProgress<QuantizationTrial>(reported.Add);
        using var result = context.Quantization.Auto(options).Execute(train, validation);

        Assert.Equal(result.Trials, reported);
        Assert.Equal(4, result.Trials.Count);
        Assert.All(result.Trials.Take(3), t => Assert.False(t.Accepted, t.ToString()));   // INT8 loses 0.1 points on these rows
        Assert.All(result.Trials.Take(3), t => Assert.Equal(0, t.AwareTrainingEpochs));
        QuantizationTrial qat = result.Trials[^1];
        Assert.Equal(1, qat.AwareTrainingEpochs);
        Assert.StartsWith("QAT 1 epoch from #", qat.Configuration, StringComparison.Ordinal);
        // It starts from the closest miss, the post-training trial with the best accuracy.
        QuantizationTrial miss = result.Trials.Take(3).MaxBy(t => t.Metric)!;
        Assert.StartsWith($"QAT 1 epoch from #{miss.Index}:", qat.Configuration, StringComparison.Ordinal);
        Assert.Equal(miss.Precision, qat.Precision);
        Assert.True(qat.Accepted, result.ToString());
        Assert.True(qat.LatencyMilliseconds > 0, qat.ToString());
        Assert.Same(qat, result.BestTrial);

        // The chosen model is the trained one, and Compare on the same validation rows gives the trial's accuracy.
        Assert.Equal(qat.SizeBytes, result.Model.QuantizedModel.LongLength);
        var comparison = context.Quantization.Compare(TestData.FmnistNet, result.Model, validation,
            new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
        Assert.Equal(qat.Metric, comparison.QuantizedAccuracy!.Value * 100, 6);
        Assert.True(comparison.QuantizedAccuracy.Value * 100 >= result.FloatMetric, result.ToString());

        AutoQuantizationTests.AssertSavesAndLoads(context, result.Model, validation.Schema, Validation.Value[0]);
    }

    public static TheoryData<string> WithoutTraining => ["disabled", "no label column in the training rows", "no label"];

    [Theory]
    [MemberData(nameof(WithoutTraining))]
    public void QatDoesNotRun_WhenDisabled_OrWithoutATrainingLabel(string why)
    {
        var context = new MLContext(seed: 1);
        IDataView train = context.Data.LoadFromEnumerable(Train.Value), validation = context.Data.LoadFromEnumerable(Validation.Value);
        var options = Options();
        switch (why)
        {
            case "disabled":
                options.AwareTrainingEpochs = 0;
                break;
            case "no label column in the training rows":
                train = context.Transforms.DropColumns("Label").Fit(train).Transform(train);
                break;
            default:
                options.LabelColumnName = null;   // the output cosine, which no trial meets here
                options.MinOutputCosine = 0.99999;
                break;
        }
        using var result = context.Quantization.Auto(options).Execute(train, validation);
        Assert.False(result.ConstraintMet, result.ToString());
        Assert.Equal(4, result.Trials.Count);   // the trial kept for QAT went to the post-training search
        Assert.All(result.Trials, t => Assert.Equal(0, t.AwareTrainingEpochs));
        Assert.DoesNotContain(result.Trials, t => t.Configuration.StartsWith("QAT", StringComparison.Ordinal));
    }

    [Fact]
    public void AwareTraining_StopsBetweenEpochs_WhenAskedTo()
    {
        var context = new MLContext(seed: 1);
        var asked = new List<int>();
        var options = new AwareTrainingOptions
        {
            ModelPath = TestData.FmnistNet, Epochs = 3, CalibrationSampleCount = 128, IntraOpNumThreads = 1,
            ContinueAfterEpoch = (done, time) => { asked.Add(done); Assert.True(time > TimeSpan.Zero); return done < 2; },
        };
        var (model, report) = AwareTrainer.Fit(context, options, context.Data.LoadFromEnumerable(Train.Value.Take(256)));
        using (model)
        {
            Assert.Equal([1, 2], asked);
            Assert.Equal(2, report.Epochs.Count);
        }
    }
}

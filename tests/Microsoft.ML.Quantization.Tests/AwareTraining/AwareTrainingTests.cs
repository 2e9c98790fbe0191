using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;
using TorchSharp;

namespace Microsoft.ML.Quantization.Tests.AwareTraining;

/// <summary>QAT on FmnistNet (with its BatchNormalization) on the shipped Fashion-MNIST images.</summary>
public sealed class AwareTrainingTests
{
    private static readonly Lazy<List<FashionMnist.Row>> Train =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 512)));

    private static readonly Lazy<List<FashionMnist.Row>> Validation =
        new(() => FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 1000)));

    private static AwareTrainingOptions Options(MLContext context) => new()
    {
        ModelPath = TestData.FmnistNetBn,
        Epochs = 2,
        TrainingBatchSize = 64,
        ValidationData = context.Data.LoadFromEnumerable(Validation.Value),
        CalibrationSampleCount = 256,
        IntraOpNumThreads = 1,
    };

    [Fact]
    public void Int8_TrainsExportsTheSameQdqForm_DeployedMatchesFakeQuantized()
    {
        TorchSharpRuntime.EnsureLoaded();
        var context = new MLContext(seed: 1);
        var messages = new List<string>();
        context.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var progress = new List<AwareTrainingProgress>();
        var options = Options(context);
        options.Progress = new Progress(progress.Add);
        using QuantizedModelTransformer model = context.Quantization.AwareTraining(options).Fit(context.Data.LoadFromEnumerable(Train.Value));

        var report = model.AwareTraining!;
        Assert.Equal("AwareTraining", report.Path);
        Assert.Equal(2, report.Epochs.Count);
        Assert.All(report.Epochs, e => Assert.True(double.IsFinite(e.MeanLoss) && e.RowsPerSecond > 0));
        Assert.Equal(16, progress.Count);                                     // 2 epochs x 8 steps of 64
        Assert.Equal(Enumerable.Range(0, 16).Select(i => (long)i), progress.Select(p => p.Step));
        Assert.Contains(messages, m => m.Contains("Epoch 2/2"));

        // The deployed QDQ model: BN folded, Conv/Gemm on int8 weights, and its accuracy equals the fake-quantized one.
        var g = OnnxModel.Parse(model.QuantizedModel).Graph;
        Assert.DoesNotContain(g.Nodes, n => n.OpType == "BatchNormalization");
        Assert.All(g.Nodes.Where(n => n.OpType is "Conv" or "Gemm"), n => Assert.Equal("DequantizeLinear", g.Producer(n.Inputs[1])?.OpType));
        Assert.InRange(report.DeployedAccuracy!.Value, 0.85, 1.0);
        Assert.InRange(Math.Abs(report.DeployedAccuracy.Value - report.FakeQuantizedAccuracy!.Value) * 100, 0, 0.2);

        // The transformer is PTQ's: it scores in an IDataView pipeline.
        var scored = context.Data.CreateEnumerable<Scored>(model.Transform(context.Data.LoadFromEnumerable(Validation.Value.Take(10))), false).ToList();
        Assert.Equal(10, scored.Count);
        Assert.All(scored, s => Assert.Equal(10, s.logits.Length));
    }

    [Fact]
    public void PtqFirst_WithinBudget_SkipsTraining_AndSaysWhy()
    {
        TorchSharpRuntime.EnsureLoaded();
        var context = new MLContext(seed: 1);
        var options = Options(context);
        options.MaxAccuracyDrop = 2.0;
        using var model = context.Quantization.AwareTraining(options).Fit(context.Data.LoadFromEnumerable(Train.Value));
        var report = model.AwareTraining!;
        Assert.Equal("PostTraining", report.Path);
        Assert.Contains("within the 2.00-point budget", report.Reason);
        Assert.Empty(report.Epochs);
        Assert.True(report.FloatAccuracy - report.PostTrainingAccuracy <= 0.02);

        options.MaxAccuracyDrop = -100;    // impossible: PTQ cannot be 100 points better, so training runs
        options.Epochs = 1;
        using var trained = context.Quantization.AwareTraining(options).Fit(context.Data.LoadFromEnumerable(Train.Value));
        Assert.Equal("AwareTraining", trained.AwareTraining!.Path);
        Assert.Contains("more than the -100.00-point budget", trained.AwareTraining.Reason);
    }

    [Fact]
    public void CheckpointResume_EndsBitIdenticalToAnUninterruptedRun_RefusesAnotherSchedule_CountsRowsPerSecondOverTheTimedRows()
    {
        TorchSharpRuntime.EnsureLoaded();
        string dir = Directory.CreateTempSubdirectory("qatml-ckpt-").FullName;
        try
        {
            var context = new MLContext(seed: 1);
            IDataView data = context.Data.LoadFromEnumerable(Train.Value.Take(256));
            // Each run's clock advances one second per step (in the progress report), so rows/s is exact: 32 rows a step.
            AwareTrainingOptions Make(string? checkpoint)
            {
                var clock = new SteppedClock();
                return new()
                {
                    ModelPath = TestData.FmnistNetBn, Epochs = 2, TrainingBatchSize = 32, CalibrationSampleCount = 64, IntraOpNumThreads = 1,
                    ActivationRanges = RangeLearning.LearnedStepSize, LearnWeightStepSizes = true, CheckpointPath = checkpoint, CheckpointEverySteps = 3, Seed = 5,
                    Clock = clock, Progress = new Progress(_ => clock.Advance()),
                };
            }
            using var uninterrupted = context.Quantization.AwareTraining(Make(null)).Fit(data);
            Assert.Equal([32.0, 32.0], uninterrupted.AwareTraining!.Epochs.Select(e => e.RowsPerSecond));

            // "Killed" after step 10 (the last checkpoint is after step 9, 1 step into epoch 2), then resumed from that checkpoint.
            string path = Path.Combine(dir, "qat.ckpt");
            using var cancel = new CancellationTokenSource();
            var killed = Make(path);
            var advance = killed.Progress!;
            killed.CancellationToken = cancel.Token;
            killed.Progress = new Progress(p => { advance.Report(p); if (p.Step == 10) cancel.Cancel(); });
            Assert.ThrowsAny<OperationCanceledException>(() => context.Quantization.AwareTraining(killed).Fit(data));
            Assert.True(File.Exists(path));
            Assert.Single(Directory.GetFiles(dir));                          // no temporary file left

            // A checkpoint of another run is refused, naming what differs.
            var other = Make(path);
            other.Seed = 6;
            Assert.Contains("Seed is 5 in the checkpoint, 6 in this run", Assert.Throws<InvalidDataException>(() => context.Quantization.AwareTraining(other).Fit(data)).Message);
            var schedule = Make(path);
            (schedule.BatchNormFreezeEpoch, schedule.WarmupFraction, schedule.GradualBitWidth, schedule.DistillationWeight) = (0, 0.3, true, 0.5);
            string refused = Assert.Throws<InvalidDataException>(() => context.Quantization.AwareTraining(schedule).Fit(data)).Message;
            Assert.Contains($"Cannot resume from checkpoint '{path}'", refused);
            Assert.Contains("BatchNormFreezeEpoch is 1 in the checkpoint, 0 in this run", refused);
            Assert.Contains("WarmupFraction is 0.15 in the checkpoint, 0.3 in this run", refused);
            Assert.Contains("GradualBitWidth is False in the checkpoint, True in this run", refused);
            Assert.Contains("DistillationWeight is 0 in the checkpoint, 0.5 in this run", refused);
            Assert.DoesNotContain("Seed", refused);

            // A temporary file of a write the kill interrupted is removed by the next run.
            File.WriteAllBytes(path + ".tmp-0123456789abcdef", [1, 2, 3]);
            var messages = new List<string>();
            context.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
            using var resumed = context.Quantization.AwareTraining(Make(path)).Fit(data);
            Assert.Contains(messages, m => m.Contains("Resuming from checkpoint") && m.Contains("step 9"));
            Assert.Equal(uninterrupted.QuantizedModel, resumed.QuantizedModel);
            // The resumed epoch: 1 step timed before the kill, 7 after, 256 rows.
            Assert.Equal([32.0, 32.0], resumed.AwareTraining!.Epochs.Select(e => e.RowsPerSecond));
            Assert.Equal(uninterrupted.AwareTraining.Epochs.Select(e => e.MeanLoss), resumed.AwareTraining.Epochs.Select(e => e.MeanLoss));
            Assert.Empty(Directory.GetFiles(dir));                            // a finished run removes its checkpoint
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void FloatFineTune_TheSameLoopWithoutQuantization_ExportsARunnableFloatModel()
    {
        TorchSharpRuntime.EnsureLoaded();
        var context = new MLContext(seed: 1);
        var options = Options(context);
        options.FloatFineTune = true;
        options.Backend = QuantizedBackend.Native;       // a float model runs on ONNX Runtime whatever the backend
        using var model = context.Quantization.AwareTraining(options).Fit(context.Data.LoadFromEnumerable(Train.Value));
        var report = model.AwareTraining!;
        Assert.Equal("FloatFineTune", report.Path);
        Assert.Null(report.FakeQuantizedAccuracy);
        Assert.Equal(2, report.Epochs.Count);
        Assert.True(report.Epochs[1].MeanLoss < report.Epochs[0].MeanLoss, $"loss {report.Epochs[0].MeanLoss} then {report.Epochs[1].MeanLoss}");

        // A float graph (BN folded, no Q/DQ), trained: its weights moved from the original's, and it scores sensibly.
        var g = OnnxModel.Parse(model.QuantizedModel).Graph;
        Assert.DoesNotContain(g.Nodes, n => n.OpType is "QuantizeLinear" or "DequantizeLinear" or "BatchNormalization");
        Assert.All(g.Initializers, t => Assert.Equal(OnnxElementType.Float, t.ElementType));
        Assert.InRange(report.DeployedAccuracy!.Value, 0.85, 1.0);
        var validation = context.Data.LoadFromEnumerable(Validation.Value);
        var comparison = context.Quantization.Compare(TestData.FmnistNetBn, model, validation, new ComparisonOptions { LabelColumnName = "Label", PerLayer = false, MeasureLatency = false });
        Assert.Equal(report.DeployedAccuracy.Value, comparison.QuantizedAccuracy!.Value, 6);   // Transform's accuracy is the report's
        Assert.InRange(comparison.MeanCosineSimilarity, 0.9, 0.99999);                        // near the original, not equal to it

        options.MaxAccuracyDrop = 1;
        Assert.Contains("leave MaxAccuracyDrop null", Assert.Throws<ArgumentException>(() => context.Quantization.AwareTraining(options)).Message);
    }

    [Fact]
    public void Distillation_Pact_AndAValidationSplit_TrainW4A8()
    {
        TorchSharpRuntime.EnsureLoaded();
        var context = new MLContext(seed: 1);
        var options = Options(context);
        options.ValidationData = null;
        options.ValidationFraction = 0.25;                 // 384 rows train, 128 validate
        options.Precision = QuantizationPrecision.W4A8;
        options.DistillationWeight = 0.7;
        options.DistillationTemperature = 4;
        options.GradualBitWidth = true;
        options.ActivationRanges = RangeLearning.LearnedClipping;   // PACT
        options.LearnWeightStepSizes = true;                          // LSQ for weights
        options.Epochs = 1;
        using var model = context.Quantization.AwareTraining(options).Fit(context.Data.LoadFromEnumerable(Train.Value));
        var report = model.AwareTraining!;
        Assert.True(double.IsFinite(report.Epochs[0].MeanLoss) && report.Epochs[0].MeanLoss > 0);
        Assert.InRange(report.DeployedAccuracy!.Value, 0.7, 1.0);        // measured on the 128 held-out rows
        Assert.Equal(report.FakeQuantizedAccuracy!.Value, report.DeployedAccuracy.Value, 3);
        var g = OnnxModel.Parse(model.QuantizedModel).Graph;
        Assert.Contains(g.Initializers, t => t.ElementType == OnnxElementType.Int4);
    }

    [Fact]
    public void BadInput_ClearErrors()
    {
        TorchSharpRuntime.EnsureLoaded();
        var context = new MLContext(seed: 1);
        var data = context.Data.LoadFromEnumerable(Train.Value.Take(10));
        var noLabel = Options(context);
        noLabel.LabelColumnName = "Class";
        Assert.Contains("Could not find input column 'Class'", Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.AwareTraining(noLabel).Fit(data)).Message);
        var wrongLabel = Options(context);
        wrongLabel.LabelColumnName = "input";
        Assert.Contains("Schema mismatch for input column 'input'", Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.AwareTraining(wrongLabel).Fit(data)).Message);
        Assert.Contains("training data is empty", Assert.Throws<InvalidOperationException>(() =>
            context.Quantization.AwareTraining(Options(context)).Fit(context.Data.LoadFromEnumerable(Train.Value.Take(0)))).Message);

        var nan = Train.Value.Take(64).Select(r => new FashionMnist.Row { Input = Enumerable.Repeat(float.NaN, 784).ToArray(), Label = r.Label }).ToList();
        var nanOptions = Options(context);
        nanOptions.CalibrationSampleCount = 1;
        nanOptions.ValidationData = null;
        var nanError = Assert.Throws<InvalidOperationException>(() => context.Quantization.AwareTraining(nanOptions).Fit(context.Data.LoadFromEnumerable(
            Train.Value.Take(1).Concat(nan))));
        Assert.Contains("loss became NaN", nanError.Message);

        var model = OnnxModel.Load(TestData.FmnistNetBn);
        model.Graph.Nodes.First(n => n.OpType == "Relu").OpType = "Elu";
        var unsupported = Options(context);
        unsupported.ModelPath = null;
        unsupported.ModelBytes = model.ToBytes();
        Assert.Contains("op Elu is not supported", Assert.Throws<NotSupportedException>(() => context.Quantization.AwareTraining(unsupported).Fit(data)).Message);
    }

    private sealed class Progress(Action<AwareTrainingProgress> report) : IProgress<AwareTrainingProgress>
    {
        public void Report(AwareTrainingProgress value) => report(value);
    }

    /// <summary>A clock that moves only when told: one second per <see cref="Advance"/>.</summary>
    private sealed class SteppedClock : TimeProvider
    {
        private long _seconds;

        public override long TimestampFrequency => 1;

        public override long GetTimestamp() => _seconds;

        public void Advance() => _seconds++;
    }

    private sealed class Scored
    {
        public float[] logits { get; set; } = [];
    }
}

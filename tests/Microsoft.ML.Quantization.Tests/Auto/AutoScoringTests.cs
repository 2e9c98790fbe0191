using Google.Protobuf;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Auto;
using Microsoft.ML.Quantization.Onnx.Proto;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;
using Xunit.Abstractions;

namespace Microsoft.ML.Quantization.Tests.Auto;

/// <summary>
/// The label metrics of mlContext.Quantization.Auto scored with ML.NET's evaluators on real tasks: binary AUC of FmnistNet used
/// one-vs-rest ("is it a shirt", the hardest class; the score is the shirt logit) and regression R-squared of FmnistNet's trunk with
/// a linear head fitted here to a real quantity of each image, its ink coverage; the output SQNR without a label; and the schema
/// errors, thrown before any trial.
/// </summary>
public sealed class AutoScoringTests(ITestOutputHelper output)
{
    private const int Shirt = 6;

    private static readonly Lazy<FashionMnist.Set> Calibration = new(() => FashionMnist.ReadCalibration(TestData.FashionMnistFolder));
    private static readonly Lazy<FashionMnist.Set> Test = new(() => FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 400));

    /// <summary>FmnistNet's trunk with fc2 replaced by a ridge regression of the ink coverage on the 128 fc1 features (1000 calibration images).</summary>
    private static readonly Lazy<byte[]> InkNet = new(FitInkNet);

    [Fact]
    public void BinaryAuc_OneVsRest_IsMlNetsAuc_OfTheChosenModel()
    {
        var context = new MLContext(seed: 1);
        IDataView train = Rows(context, Calibration.Value, 200), validation = Rows(context, Test.Value, 400);
        var options = Options(TestData.FmnistNet);
        options.Metric = AutoQuantizationMetric.AreaUnderRocCurve;
        options.LabelColumnName = nameof(TaskRow.IsShirt);
        options.ScoreIndex = Shirt;
        options.MaxAccuracyDrop = 0.002;
        using var result = context.Quantization.Auto(options).Execute(train, validation);

        output.WriteLine($"float AUC {result.FloatMetric:F5}\n{result}");
        Assert.Equal(AutoQuantizationMetric.AreaUnderRocCurve, result.MetricKind);
        Assert.Equal("AUC", result.Metric);
        // The float figure is ML.NET's AUC of the float model's shirt logit, computed here without QatMl.
        double floatAuc = Auc(context, validation, Logits(File.ReadAllBytes(TestData.FmnistNet), Test.Value, 400), 10);
        Assert.Equal(floatAuc, result.FloatMetric, 9);
        Assert.InRange(floatAuc, 0.85, 1.0);
        Assert.True(result.ConstraintMet, result.ToString());
        Assert.All(result.Trials.Where(t => t.Accepted), t => Assert.True(result.FloatMetric - t.Metric <= 0.002 + 1e-9, t.ToString()));
        Assert.All(result.Trials.Where(t => !t.Accepted && !double.IsNaN(t.Metric)), t => Assert.StartsWith("AUC drop", t.Reason));
        Assert.All(result.Trials, t => Assert.Equal(t.Accepted, !double.IsNaN(t.LatencyMilliseconds)));
        Assert.All(result.Trials.Where(t => t.Accepted), t => Assert.True(t.LatencyMilliseconds > 0, t.ToString()));

        // The chosen transformer's own shirt scores give the trial's AUC.
        Assert.Equal(result.BestTrial.Metric, Auc(context, validation, Scores(context, result.Model, validation), 10), 9);
    }

    [Fact]
    public void RegressionRSquared_OfARealTarget_IsMlNetsRSquared_OfTheChosenModel()
    {
        var context = new MLContext(seed: 1);
        IDataView train = Rows(context, Calibration.Value, 200), validation = Rows(context, Test.Value, 400);
        var options = Options(InkNet.Value);
        options.Metric = AutoQuantizationMetric.RSquared;
        options.LabelColumnName = nameof(TaskRow.Ink);
        options.MaxAccuracyDrop = 0.01;
        options.Objective = AutoQuantizationObjective.Latency;
        using var result = context.Quantization.Auto(options).Execute(train, validation);

        output.WriteLine($"float R-squared {result.FloatMetric:F5}\n{result}");
        Assert.Equal("R-squared", result.Metric);
        double floatR2 = RSquared(context, validation, Logits(InkNet.Value, Test.Value, 400));
        Assert.Equal(floatR2, result.FloatMetric, 9);
        Assert.InRange(floatR2, 0.7, 1.0);   // the head predicts ink coverage on unseen images: a real regression, not noise
        Assert.True(result.ConstraintMet, result.ToString());
        Assert.All(result.Trials.Where(t => !t.Accepted && !double.IsNaN(t.Metric)), t => Assert.StartsWith("R-squared drop", t.Reason));
        Assert.Equal(result.BestTrial.Metric, RSquared(context, validation, Scores(context, result.Model, validation)), 9);
        // The latency objective picks the accepted trial with the least measured latency; the Pareto front holds it.
        Assert.Equal(result.Trials.Where(t => t.Accepted).Min(t => t.LatencyMilliseconds), result.BestTrial.LatencyMilliseconds);
        Assert.Contains(result.BestTrial, result.ParetoFront);
        Assert.All(result.ParetoFront, p => Assert.True(p.Accepted));
    }

    [Fact]
    public void OutputSqnr_WithoutALabel_IsCompareSqnr()
    {
        var context = new MLContext(seed: 1);
        IDataView train = Rows(context, Calibration.Value, 100), validation = Rows(context, Test.Value, 200);
        var options = Options(TestData.FmnistNet);
        options.Metric = AutoQuantizationMetric.OutputSqnr;
        options.MinOutputSqnr = 25;
        options.MaxTrials = 4;
        using var result = context.Quantization.Auto(options).Execute(train, validation);
        Assert.Equal("output SQNR", result.Metric);
        Assert.True(result.ConstraintMet, result.ToString());
        Assert.Contains(result.Trials, t => t.Reason?.StartsWith("output SQNR", StringComparison.Ordinal) == true);   // W4A4 misses 25 dB
        var comparison = context.Quantization.Compare(TestData.FmnistNet, result.Model, validation, new ComparisonOptions { PerLayer = false, MeasureLatency = false });
        Assert.Equal(comparison.OutputSqnrDb, result.BestTrial.Metric, 3);
        Assert.True(result.BestTrial.Metric >= 25);
    }

    [Fact]
    public void SchemaErrors_NameTheColumnOrOutput_BeforeAnyTrial()
    {
        var context = new MLContext(seed: 1);
        IDataView rows = Rows(context, Calibration.Value, 32);
        var trials = new List<QuantizationTrial>();

        AutoQuantizationOptions With(AutoQuantizationMetric metric, string label, Action<AutoQuantizationOptions>? change = null)
        {
            var options = Options(TestData.FmnistNet);
            options.Metric = metric;
            options.LabelColumnName = label;
            options.Progress = new SynchronousProgress<QuantizationTrial>(trials.Add);
            change?.Invoke(options);
            return options;
        }

        // AUC on a class-index label: ML.NET's binary label is Boolean.
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Auto(With(AutoQuantizationMetric.AreaUnderRocCurve, "Label")).Execute(rows, rows));
        Assert.Contains("label column 'Label'", error.Message);
        Assert.Contains("Boolean", error.Message);
        Assert.Contains("UInt32", error.Message);
        // R-squared on a Boolean label.
        error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Auto(With(AutoQuantizationMetric.RSquared, nameof(TaskRow.IsShirt))).Execute(rows, rows));
        Assert.Contains("'IsShirt'", error.Message);
        Assert.Contains("Single", error.Message);
        // A missing label column lists the columns there are.
        error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Auto(With(AutoQuantizationMetric.MulticlassAccuracy, "Class")).Execute(rows, rows));
        Assert.Contains("'Class'", error.Message);
        Assert.Contains("'Ink'", error.Message);
        // A score output the model does not have.
        error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Auto(With(AutoQuantizationMetric.RSquared, nameof(TaskRow.Ink),
            o => o.ScoreOutputName = "ink")).Execute(rows, rows));
        Assert.Contains("'ink'", error.Message);
        Assert.Contains("'logits'", error.Message);
        // Ten logits and no ScoreIndex: which one is the score?
        error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Auto(With(AutoQuantizationMetric.RSquared, nameof(TaskRow.Ink))).Execute(rows, rows));
        Assert.Contains("10 values per row", error.Message);
        Assert.Contains("ScoreIndex", error.Message);
        error = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Auto(With(AutoQuantizationMetric.AreaUnderRocCurve, nameof(TaskRow.IsShirt),
            o => o.ScoreIndex = 10)).Execute(rows, rows));
        Assert.Contains("ScoreIndex 10", error.Message);
        Assert.Empty(trials);

        // A label metric without a label column is an options error.
        var missing = Assert.Throws<ArgumentException>(() => context.Quantization.Auto(With(AutoQuantizationMetric.AreaUnderRocCurve, null!)));
        Assert.Contains("LabelColumnName", missing.Message);
    }

    private static AutoQuantizationOptions Options(string modelPath) => Options(new PostTrainingOptions { ModelPath = modelPath, IntraOpNumThreads = 1, SampleCount = 200 });

    private static AutoQuantizationOptions Options(byte[] model) => Options(new PostTrainingOptions { ModelBytes = model, IntraOpNumThreads = 1, SampleCount = 200 });

    private static AutoQuantizationOptions Options(PostTrainingOptions postTraining) => new() { PostTraining = postTraining, MaxTrials = 6 };

    /// <summary>One image with the targets of the three tasks.</summary>
    private sealed class TaskRow
    {
        [VectorType(FashionMnist.Pixels)]
        [ColumnName("input")]
        public float[] Input { get; set; } = [];

        public uint Label { get; set; }

        public bool IsShirt { get; set; }

        /// <summary>The ink coverage: the fraction of the image's pixels at half intensity or more.</summary>
        public float Ink { get; set; }
    }

    private static List<TaskRow> TaskRows(FashionMnist.Set set, int count)
    {
        var rows = new List<TaskRow>();
        foreach (var (row, i) in FashionMnist.Rows(set).Take(count).Select((r, i) => (r, i)))
        {
            var pixels = set.Images.AsSpan(i * FashionMnist.Pixels, FashionMnist.Pixels);
            int inked = 0;
            foreach (byte p in pixels)
                inked += p >= 128 ? 1 : 0;
            rows.Add(new TaskRow { Input = row.Input, Label = row.Label, IsShirt = row.Label == Shirt, Ink = (float)inked / FashionMnist.Pixels });
        }
        return rows;
    }

    private static IDataView Rows(MLContext context, FashionMnist.Set set, int count) => context.Data.LoadFromEnumerable(TaskRows(set, count));

    /// <summary>The model's first output for the first <paramref name="count"/> images, row-major (ONNX Runtime directly).</summary>
    private static float[] Logits(byte[] model, FashionMnist.Set set, int count, string? output = null)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(model, options);
        var input = TaskRows(set, count).SelectMany(r => r.Input).ToArray();
        var feed = new[] { NamedOnnxValue.CreateFromTensor("input", new DenseTensor<float>(input, [count, 1, 28, 28])) };
        using var results = session.Run(feed, [output ?? session.OutputMetadata.Keys.First()]);
        return [.. results.First().AsTensor<float>()];
    }

    private static float[] Scores(MLContext context, ITransformer model, IDataView data)
        => [.. context.Data.CreateEnumerable<LogitsRow>(model.Transform(data), reuseRowObject: false).SelectMany(r => r.Logits)];

    private static double Auc(MLContext context, IDataView validation, float[] logits, int classes)
    {
        var labels = context.Data.CreateEnumerable<TaskRow>(validation, reuseRowObject: false).Select(r => r.IsShirt).ToList();
        var scored = context.Data.LoadFromEnumerable(labels.Select((l, r) => new BinaryScore { Label = l, Score = logits[r * classes + Shirt], PredictedLabel = logits[r * classes + Shirt] > 0 }));
        return context.BinaryClassification.EvaluateNonCalibrated(scored).AreaUnderRocCurve;
    }

    private static double RSquared(MLContext context, IDataView validation, float[] predictions)
    {
        var labels = context.Data.CreateEnumerable<TaskRow>(validation, reuseRowObject: false).Select(r => r.Ink).ToList();
        var scored = context.Data.LoadFromEnumerable(labels.Select((l, r) => new RegressionScore { Label = l, Score = predictions[r] }));
        return context.Regression.Evaluate(scored).RSquared;
    }

    /// <summary>
    /// FmnistNet with its last layer (fc2, 128 -> 10) replaced by a ridge regression (128 -> 1) of the ink coverage on the fc1
    /// features of the 1000 calibration images: a real regression model whose first 400 test images are unseen.
    /// </summary>
    private static byte[] FitInkNet()
    {
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(TestData.FmnistNet));
        NodeProto fc2 = model.Graph.Node.Last(n => n.OpType == "Gemm");
        string featureName = fc2.Input[0];
        var probe = model.Clone();
        probe.Graph.Output.Add(new ValueInfoProto
        {
            Name = featureName, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } },
        });
        int n = Calibration.Value.Count;
        float[] features = Logits(probe.ToByteArray(), Calibration.Value, n, featureName);
        int k = features.Length / n;
        float[] ink = [.. TaskRows(Calibration.Value, n).Select(r => r.Ink)];

        // Normal equations of [features, 1] with a small ridge on the weights (not the intercept), solved by Gaussian elimination.
        int d = k + 1;
        var a = new double[d, d + 1];
        for (int r = 0; r < n; r++)
            for (int i = 0; i < d; i++)
            {
                double xi = i < k ? features[r * k + i] : 1;
                for (int j = 0; j < d; j++)
                    a[i, j] += xi * (j < k ? features[r * k + j] : 1);
                a[i, d] += xi * ink[r];
            }
        for (int i = 0; i < k; i++)
            a[i, i] += 1.0;
        for (int col = 0; col < d; col++)
        {
            int pivot = Enumerable.Range(col, d - col).MaxBy(r => Math.Abs(a[r, col]));
            for (int j = 0; j <= d; j++)
                (a[col, j], a[pivot, j]) = (a[pivot, j], a[col, j]);
            for (int r = 0; r < d; r++)
            {
                if (r == col)
                    continue;
                double f = a[r, col] / a[col, col];
                for (int j = col; j <= d; j++)
                    a[r, j] -= f * a[col, j];
            }
        }
        float[] weights = [.. Enumerable.Range(0, k).Select(i => (float)(a[i, d] / a[i, i]))];
        float bias = (float)(a[k, d] / a[k, k]);

        // fc2 computes features x W^T + b: W [1, k], b [1]; the output's class dimension becomes 1.
        var weight = model.Graph.Initializer.Single(t => t.Name == fc2.Input[1]);
        var biasTensor = model.Graph.Initializer.Single(t => t.Name == fc2.Input[2]);
        Assert.Equal(1, fc2.Attribute.Single(x => x.Name == "transB").I);
        weight.Dims.Clear();
        weight.Dims.AddRange([1, k]);
        SetFloats(weight, weights);
        biasTensor.Dims.Clear();
        biasTensor.Dims.Add(1);
        SetFloats(biasTensor, [bias]);
        model.Graph.Output[0].Type.TensorType.Shape.Dim[1].DimValue = 1;
        return model.ToByteArray();
    }

    private static void SetFloats(TensorProto tensor, float[] values)
    {
        tensor.FloatData.Clear();
        tensor.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
    }

    private sealed class LogitsRow
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }

    private sealed class BinaryScore
    {
        public bool Label { get; set; }

        public float Score { get; set; }

        public bool PredictedLabel { get; set; }
    }

    private sealed class RegressionScore
    {
        public float Label { get; set; }

        public float Score { get; set; }
    }
}

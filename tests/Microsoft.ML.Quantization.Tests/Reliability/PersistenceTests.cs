using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Reliability;

/// <summary>
/// Model zips: no model copies left in TMPDIR, and tampered zips (settings the options would refuse, nulls, swapped or
/// garbage ONNX entries, decompression bombs) refused by LoadModel with errors naming the zip, the entry and the problem.
/// </summary>
public sealed class PersistenceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qatml-persist-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly Lazy<IDataView> Rows = new(() => FashionMnist.Load(new MLContext(1), FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 64)));

    /// <summary>A quantized FmnistNet saved once per test class run; each test tampers with a copy.</summary>
    private static readonly Lazy<byte[]> QuantizedZip = new(() =>
    {
        var context = new MLContext(1);
        using var quantized = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 64, IntraOpNumThreads = 1 }).Fit(Rows.Value);
        string path = Path.Combine(Path.GetTempPath(), $"qatml-base-{Guid.NewGuid():N}.zip");
        try
        {
            context.Model.Save(quantized, Rows.Value.Schema, path);
            return File.ReadAllBytes(path);
        }
        finally
        {
            File.Delete(path);
        }
    });

    /// <summary>A copy of the quantized zip with the entries ending in <paramref name="entry"/> edited (null: removed).</summary>
    private string Tampered(string entry, Func<byte[], byte[]?> edit, string name = "tampered.zip")
    {
        string path = Path.Combine(_dir, name);
        using var source = new ZipArchive(new MemoryStream(QuantizedZip.Value), ZipArchiveMode.Read);
        using var target = ZipFile.Open(path, ZipArchiveMode.Create);
        bool found = false;
        foreach (var e in source.Entries)
        {
            using var input = e.Open();
            using var copy = new MemoryStream();
            input.CopyTo(copy);
            byte[]? bytes = copy.ToArray();
            if (e.FullName.EndsWith("/" + entry, StringComparison.Ordinal))
            {
                found = true;
                bytes = edit(bytes);
            }
            if (bytes is null)
                continue;
            using var output = target.CreateEntry(e.FullName).Open();
            output.Write(bytes);
        }
        Assert.True(found, $"no entry {entry}");
        return path;
    }

    private string TamperedSettings(Action<JsonObject> edit)
        => Tampered(ModelSaving.QuantizedEntry, bytes =>
        {
            var json = JsonNode.Parse(bytes)!.AsObject();
            edit(json);
            return Encoding.UTF8.GetBytes(json.ToJsonString());
        });

    /// <summary>Asserts a substring, printing the whole message when it is missing.</summary>
    internal static void Has(string message, string expected)
        => Assert.True(message.Contains(expected, StringComparison.Ordinal), $"'{expected}' not in: {message}");

    private static InvalidDataException LoadFails(string path)
        => Assert.Throws<InvalidDataException>(() => new MLContext(1).Quantization.LoadModel(path, out _));

    [Fact]
    public void UntamperedZip_Loads()
    {
        string path = Tampered(ModelSaving.QuantizedEntry, b => b);
        var restored = Assert.IsType<QuantizedModelTransformer>(new MLContext(1).Quantization.LoadModel(path, out _));
        Assert.Equal("output cosine", restored.Sensitivity?.Metric);
        restored.Dispose();
    }

    [Theory]
    [InlineData("""{"Rows": -1}""", "holds settings the options refuse: The sensitivity report has a negative row or evaluation count (-1, ")]
    [InlineData("""{"Metric": null}""", "holds settings the options refuse: The sensitivity report lacks its metric or node list")]
    [InlineData("""{"Nodes": [{"Name": null, "OpType": "Conv", "Alone": 0.5, "KeptFloat": true}]}""", "The sensitivity report lacks its metric or node list, or a node's name or op type.")]
    [InlineData("""{"Nodes": [{"Name": "conv", "OpType": "Conv", "Alone": 0.5, "KeptFloat": false, "Raised": {"WeightBits": 1, "ActivationBits": 8}}]}""",
        "Sensitivity node 'conv': WeightBits must be between 2 and 8; got 1.")]
    public void SensitivityReportsTheAnalysisCouldNotHaveWritten_AreRefused(string patch, string expected)
    {
        var e = LoadFails(TamperedSettings(json =>
        {
            foreach (var (key, value) in JsonNode.Parse(patch)!.AsObject())
                json["Sensitivity"]![key] = value?.DeepClone();
        }));
        Has(e.Message, $"QatMl entry 'TransformerChain/{ModelSaving.QuantizedEntry}' ");
        Has(e.Message, expected);
    }

    public static TheoryData<string, string> BadSettings() => new()
    {
        { """{"BatchSize": 0}""", "BatchSize must be between 1 and 1048576." },
        { """{"BatchSize": -7}""", "BatchSize must be between 1 and 1048576." },
        { """{"BatchSize": 2147483647}""", "BatchSize must be between 1 and 1048576." },
        { """{"IntraOpNumThreads": -1}""", "IntraOpNumThreads must be 0" },
        { """{"Backend": 7}""", "Unknown backend." },
        { """{"ExecutionProvider": 9}""", "Unknown execution provider." },
        { """{"GraphOptimization": 12}""", "Unknown graph optimisation level." },
        { """{"InputShapes": {"input": [-1, 28, 28]}}""", "InputShapes['input'] = [-1, 28, 28]: every dimension must be at least 1." },
        { """{"InputShapes": {"input": [100000, 100000, 100000]}}""", "InputShapes['input'] = [100000, 100000, 100000]: more values per row than one buffer holds" },
        { """{"InputShapes": {"input": null}}""", "InputShapes['input'] is null." },
        { """{"Inputs": null}""", "Inputs is null." },
        { """{"Outputs": [null]}""", "A column binding (or its column or tensor name) is null." },
    };

    [Theory]
    [MemberData(nameof(BadSettings))]
    public void SettingsTheOptionsWouldRefuse_AreRefusedWithTheSameMessage(string patch, string expected)
    {
        string path = TamperedSettings(json =>
        {
            foreach (var (key, value) in JsonNode.Parse(patch)!.AsObject())
                json["Settings"]![key] = value?.DeepClone();
        });
        var e = LoadFails(path);
        Has(e.Message, $"Model '{path}': QatMl entry 'TransformerChain/{ModelSaving.QuantizedEntry}' holds settings the options refuse");
        Has(e.Message, expected);
    }

    [Fact]
    public void SettingsMessages_AreTheOptionsOwn()
    {
        // The messages LoadModel wraps are exactly what the options say at construction.
        var context = new MLContext(1);
        foreach (int batch in new[] { 0, -7, int.MaxValue })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, BatchSize = batch }));
            Assert.StartsWith("BatchSize must be between 1 and 1048576.", e.Message);
        }
        var options = new PostTrainingOptions { ModelPath = TestData.FmnistNet, Backend = (QuantizedBackend)7 };
        Assert.StartsWith("Unknown backend.", Assert.Throws<ArgumentOutOfRangeException>(() => context.Quantization.PostTraining(options)).Message);
        var shapes = new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet, InputShapes = { ["input"] = [-1, 28, 28] } };
        Assert.Equal("InputShapes['input'] = [-1, 28, 28]: every dimension must be at least 1.",
            Assert.Throws<ArgumentException>(() => context.Quantization.ScoreOnnxModel(shapes)).Message);
    }

    [Theory]
    [InlineData("Settings", "holds no Settings.")]
    [InlineData("Nodes", "lacks its node list (Nodes)")]
    public void NullSettingsOrNodes_AreRefused(string property, string expected)
    {
        var e = LoadFails(TamperedSettings(json => json[property] = null));
        Has(e.Message, $"QatMl entry 'TransformerChain/{ModelSaving.QuantizedEntry}' {expected}");
    }

    [Fact]
    public void InvalidJson_IsRefusedNamingTheEntry()
    {
        var e = LoadFails(Tampered(ModelSaving.QuantizedEntry, _ => "{ not json"u8.ToArray()));
        Has(e.Message, $"QatMl entry 'TransformerChain/{ModelSaving.QuantizedEntry}' is not valid");
    }

    [Fact]
    public void AnotherModelInMlNetsEntry_IsRefusedByTheHash()
    {
        // A valid ONNX model, just not the one QatMl saved: ML.NET and LoadModel would run different models.
        byte[] other = File.ReadAllBytes(TestData.FmnistNet);
        var e = LoadFails(Tampered(ModelSaving.OnnxModelEntry, _ => [.. BitConverter.GetBytes(other.Length), .. other]));
        Has(e.Message, "'TransformerChain/OnnxModel' is not the model QatMl saved (its SHA-256 differs in 'TransformerChain/QatMl.Model.sha256')");
    }

    [Fact]
    public void GarbageOnnxEntry_SaysSoInsteadOfErrorDuringClassInstantiation()
    {
        var garbage = new byte[5000];
        new Random(5).NextBytes(garbage);
        byte[] entry = [.. BitConverter.GetBytes(garbage.Length), .. garbage];
        // With the hash left alone: the hash says it.
        Has(LoadFails(Tampered(ModelSaving.OnnxModelEntry, _ => entry)).Message, "'TransformerChain/OnnxModel' is not the model QatMl saved");

        // With the hash updated too: the parser says it, naming the entry.
        string path = Tampered(ModelSaving.OnnxModelEntry, _ => entry, "garbage.zip");
        string rehashed = Path.Combine(_dir, "rehashed.zip");
        File.Copy(path, rehashed);
        using (var zip = ZipFile.Open(rehashed, ZipArchiveMode.Update))
        {
            zip.GetEntry($"TransformerChain/{ModelSaving.HashEntry}")!.Delete();
            using var w = zip.CreateEntry($"TransformerChain/{ModelSaving.HashEntry}").Open();
            w.Write(Encoding.UTF8.GetBytes(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(garbage)) + "  OnnxModel\n"));
        }
        var e = Assert.Throws<InvalidOnnxModelException>(() => new MLContext(1).Quantization.LoadModel(rehashed, out _));
        Has(e.Message, $"ONNX model '{rehashed}:TransformerChain/OnnxModel' is truncated or not an ONNX ModelProto");

        // A zip without QatMl entries: ML.NET's own failure, its cause on top.
        string plain = Tampered(ModelSaving.QuantizedEntry, _ => null, "plain.zip");
        using (var zip = ZipFile.Open(plain, ZipArchiveMode.Update))
        {
            zip.GetEntry("TransformerChain/OnnxModel")!.Delete();
            using var w = zip.CreateEntry("TransformerChain/OnnxModel").Open();
            w.Write(entry);
        }
        var mlnet = LoadFails(plain);
        Assert.StartsWith($"Model '{plain}' could not be loaded by ML.NET: ", mlnet.Message);
        Assert.DoesNotContain("Error during class instantiation", mlnet.Message);
    }

    [Fact]
    public void MissingHashEntry_IsRefused()
    {
        var e = LoadFails(Tampered(ModelSaving.HashEntry, _ => null));
        Has(e.Message, $"has QatMl settings in 'TransformerChain' but no '{ModelSaving.HashEntry}' entry beside them");
    }

    [Fact]
    public void NotAZip_OrNotAFile_ClearErrors()
    {
        string text = Path.Combine(_dir, "text.zip");
        File.WriteAllText(text, "hello");
        Assert.StartsWith($"Model '{text}' is not a model zip", LoadFails(text).Message);
        Assert.Equal($"Model '{_dir}' is a directory, not a file.", LoadFails(_dir).Message);
        Assert.Throws<FileNotFoundException>(() => new MLContext(1).Quantization.LoadModel(Path.Combine(_dir, "missing.zip"), out _));
    }

    [Theory]
    [InlineData("honest")]
    [InlineData("lying")]
    public void DecompressionBomb_IsRefusedWithoutReadingItWhole(string declared)
        => ChildProcess.Run("zip-bomb", [_dir, declared], TimeSpan.FromMinutes(2), heapLimitBytes: 1L << 30).AssertSucceeded();

    [ChildMode("zip-bomb")]
    internal static int ZipBomb(string[] args)
    {
        string dir = args[0];
        int inflated = ModelPersistence.MaxSettingsBytes + (64 << 20);
        string path = new BombZip(dir).Write(inflated, lie: args[1] == "lying");
        var e = Assert.Throws<InvalidDataException>(() => new MLContext(1).Quantization.LoadModel(path, out _));
        if (args[1] == "lying")
        {
            // .NET's zip reader stops at the declared size (LoadModel's own cap would stop it past 256 MB otherwise).
            Has(e.Message, $"QatMl entry 'TransformerChain/{ModelSaving.QuantizedEntry}' is not valid");
        }
        else
        {
            Has(e.Message, $"entry 'TransformerChain/{ModelSaving.QuantizedEntry}' is larger than the {ModelPersistence.MaxSettingsBytes} bytes QatMl reads for it (it declares {inflated})");
        }
        Console.WriteLine(e.Message);
        return 0;
    }

    /// <summary>Writes a zip whose settings entry inflates to a given size, optionally declaring 1000 bytes in both headers.</summary>
    private sealed class BombZip(string dir)
    {
        public string Write(int inflated, bool lie)
        {
            string path = Path.Combine(dir, "bomb.zip");
            using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
            {
                using var w = zip.CreateEntry($"TransformerChain/{ModelSaving.QuantizedEntry}", CompressionLevel.Fastest).Open();
                var spaces = new byte[1 << 20];
                Array.Fill(spaces, (byte)' ');
                for (int written = 0; written < inflated; written += spaces.Length)
                    w.Write(spaces, 0, Math.Min(spaces.Length, inflated - written));
            }
            if (lie)
            {
                // Uncompressed size: offset 22 in the local header (PK\3\4) and 24 in the central directory (PK\1\2).
                byte[] bytes = File.ReadAllBytes(path);
                Patch(bytes, [0x50, 0x4B, 0x03, 0x04], 22);
                Patch(bytes, [0x50, 0x4B, 0x01, 0x02], 24);
                File.WriteAllBytes(path, bytes);
            }
            return path;
        }

        private static void Patch(byte[] zip, byte[] signature, int offset)
        {
            int at = zip.AsSpan().IndexOf(signature);
            Assert.True(at >= 0);
            BitConverter.TryWriteBytes(zip.AsSpan(at + offset, 4), 1000);
        }
    }

    [Fact]
    public void SaveAndLoad_LeaveNothingInTmpdir()
    {
        string tmp = Path.Combine(_dir, "tmp");
        Directory.CreateDirectory(tmp);
        string zip = Path.Combine(_dir, "model.zip");
        ChildResult result = ChildProcess.Run("save-and-load", [zip], TimeSpan.FromMinutes(3), environment: new Dictionary<string, string> { ["TMPDIR"] = tmp + "/" })
            .AssertSucceeded();
        Assert.True(File.Exists(zip), result.Transcript);
        // ONNX Runtime itself leaves a 51-byte session marker (".ses"); no copy of any model stays behind.
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(tmp), e => Path.GetFileName(e) != ".ses");
    }

    [ChildMode("save-and-load")]
    internal static int SaveAndLoad(string[] args)
    {
        string zip = args[0];
        var context = new MLContext(seed: 1);
        IDataView rows = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 64));
        using (var quantized = context.Quantization.PostTraining(new PostTrainingOptions { ModelPath = TestData.FmnistNet, SampleCount = 64, IntraOpNumThreads = 1, Precision = QuantizationPrecision.W4A8 }).Fit(rows))
            context.Model.Save(quantized, rows.Schema, zip);
        using (var scoring = context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet }).Fit(rows))
            context.Model.Save(scoring, rows.Schema, zip + ".scoring.zip");
        // Nothing but ONNX Runtime's marker and the runtime's own diagnostics sockets while the process lives.
        string[] during = Directory.EnumerateFileSystemEntries(Path.GetTempPath()).Select(Path.GetFileName)
            .Where(n => n != ".ses" && !n!.StartsWith("clr-debug-pipe-", StringComparison.Ordinal) && !n.StartsWith("dotnet-diagnostic-", StringComparison.Ordinal)).ToArray()!;
        Assert.Empty(during);
        foreach (string path in new[] { zip, zip + ".scoring.zip" })
            ((IDisposable)context.Quantization.LoadModel(path, out _)).Dispose();
        Console.WriteLine("ok");
        return 0;
    }

    [Fact]
    public void PrivateTempDirectory_IsOwnerOnlyAndRemoved()
    {
        string path;
        using (var scratch = new PrivateTempDirectory("qatml-test-"))
        {
            path = scratch.Path;
            File.WriteAllText(Path.Combine(path, "f"), "x");
            if (!OperatingSystem.IsWindows())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(path));
        }
        Assert.False(Directory.Exists(path));
    }
}

using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Tests.Onnx;

public sealed class OnnxModelTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("qatml-onnx-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static readonly int[] FmnistDims = [4, 1, 28, 28];

    [Fact]
    public void ReadWrite_Fmnist_GivesIdenticalOrtOutputs()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        Assert.Equal(13, model.DefaultOpset);
        Assert.Contains(model.Graph.Nodes, n => n.OpType == "Gemm");
        float[] input = OrtRunner.RandomInput(4 * 28 * 28, 1);
        float[] expected = OrtRunner.Run(File.ReadAllBytes(TestData.FmnistNet), input, FmnistDims);
        float[] actual = OrtRunner.Run(model.ToBytes(), input, FmnistDims);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void ReadWrite_KeepsFieldsTheSchemaDoesNotKnow()
    {
        // Field 20 (training_info) and 25 (functions) are not in the subset schema: they must come back byte for byte.
        byte[] original = File.ReadAllBytes(TestData.FmnistNet);
        byte[] extra = [0xA2, 0x01, 3, 0x0A, 0x01, 0x7A, 0xCA, 0x01, 2, 0x12, 0x00]; // tags 20 and 25, length-delimited
        var model = OnnxModel.Parse([.. original, .. extra], sourceName: "with-unknown.onnx");
        byte[] written = model.ToBytes();
        Assert.True(written.AsSpan().IndexOf(extra.AsSpan(0, 6)) >= 0, "training_info lost");
        Assert.True(written.AsSpan().IndexOf(extra.AsSpan(6)) >= 0, "functions lost");
    }

    [Fact]
    public void ResNet18_TypedFloatData_ReadsAndRoundTrips()
    {
        var model = OnnxModel.Load(TestData.ResNet18Path);
        Assert.Equal(3, model.IrVersion);
        Assert.Equal(8, model.DefaultOpset);
        var conv = model.Graph.Nodes.First(n => n.OpType == "Conv");
        Assert.True(model.Graph.TryGetInitializer(conv.Inputs[1], out var w));
        Assert.False(w.IsRaw); // CNTK writes float_data
        float[] values = w.ToFloatArray();
        Assert.Equal(w.ElementCount, values.Length);
        var raw = OnnxTensor.FromFloats("w", w.Dims, values);
        Assert.True(raw.IsRaw);
        Assert.Equal(values, raw.ToFloatArray());
    }

    [Fact]
    public void Tensors_AllTypesRoundTrip()
    {
        long[] dims = [5];
        Assert.Equal(new sbyte[] { -8, -1, 0, 3, 7 }, OnnxTensor.FromInt4("a", dims, [-8, -1, 0, 3, 7]).ToInt4Array());
        var u4 = OnnxTensor.FromUInt4("b", dims, [0, 15, 1, 2, 9]);
        Assert.Equal(new byte[] { 0, 15, 1, 2, 9 }, u4.ToUInt4Array());
        Assert.Equal(3, u4.ToRawBytes().Length); // two per byte, low nibble first
        Assert.Equal(0xF0, u4.ToRawBytes()[0]);
        Assert.Equal(new sbyte[] { -128, 0, 1, 2, 127 }, OnnxTensor.FromInt8("c", dims, [-128, 0, 1, 2, 127]).ToInt8Array());
        Assert.Equal(new byte[] { 0, 1, 2, 3, 255 }, OnnxTensor.FromUInt8("d", dims, [0, 1, 2, 3, 255]).ToUInt8Array());
        Assert.Equal(new short[] { -1, 2, 3, 4, 5 }, OnnxTensor.FromInt16("e", dims, [-1, 2, 3, 4, 5]).ToInt16Array());
        Assert.Equal(new ushort[] { 1, 2, 3, 4, 65535 }, OnnxTensor.FromUInt16("f", dims, [1, 2, 3, 4, 65535]).ToUInt16Array());
        Assert.Equal(new[] { -1, 2, 3, 4, int.MaxValue }, OnnxTensor.FromInt32("g", dims, [-1, 2, 3, 4, int.MaxValue]).ToInt32Array());
        Assert.Equal(new[] { -1L, 2, 3, 4, long.MaxValue }, OnnxTensor.FromInt64("h", dims, [-1, 2, 3, 4, long.MaxValue]).ToInt64Array());
        Assert.Equal(new[] { 0.5f, -2f, 0f, 1f, 65504f }, OnnxTensor.FromFloat16("i", dims, [(Half)0.5f, (Half)(-2f), (Half)0f, (Half)1f, (Half)65504f]).ToFloatArray());

        // Typed-field storage (int32_data for int8 and float16, one value each) reads the same as raw.
        var typed = new TensorProto { Name = "t", DataType = (int)OnnxElementType.Int8 };
        typed.Dims.Add(3);
        typed.Int32Data.AddRange([-3, 0, 5]);
        Assert.Equal(new sbyte[] { -3, 0, 5 }, new OnnxTensor(typed).ToInt8Array());
        var half = new TensorProto { Name = "h", DataType = (int)OnnxElementType.Float16 };
        half.Dims.Add(1);
        half.Int32Data.Add(BitConverter.HalfToUInt16Bits((Half)1.5f));
        Assert.Equal(new[] { 1.5f }, new OnnxTensor(half).ToFloatArray());
    }

    [Fact]
    public void ExternalData_SaveAndLoad_GivesSameOutputs()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        string path = Path.Combine(_folder, "ext.onnx");
        model.Save(path, new OnnxSaveOptions { ExternalDataThreshold = 1024 });
        Assert.True(File.Exists(path + ".data"));
        Assert.True(new FileInfo(path).Length < 100_000, "large tensors should be in the side file");

        float[] input = OrtRunner.RandomInput(4 * 28 * 28, 2);
        float[] expected = OrtRunner.Run(model.ToBytes(), input, FmnistDims);
        var reloaded = OnnxModel.Load(path);
        Assert.Equal(expected, OrtRunner.Run(reloaded.ToBytes(), input, FmnistDims));
        // ORT itself reads the externalized file from disk.
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(path);
        Assert.Single(session.OutputMetadata);
    }

    private string WriteExternalModel(string location)
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        var w = model.Graph.Initializers.First(t => t.ElementCount > 100);
        w.Proto.RawData = Google.Protobuf.ByteString.Empty;
        w.Proto.FloatData.Clear();
        w.Proto.DataLocation = TensorProto.Types.DataLocation.External;
        w.Proto.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        string path = Path.Combine(_folder, "model", "m.onnx");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, model.ToBytes());
        return path;
    }

    [Theory]
    [InlineData("../secret.bin")]
    [InlineData("sub/../../secret.bin")]
    [InlineData("/etc/passwd")]
    public void ExternalData_EscapingTheFolder_IsRefused(string location)
    {
        File.WriteAllBytes(Path.Combine(_folder, "secret.bin"), new byte[1 << 20]);
        string path = WriteExternalModel(location);
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Load(path));
        Assert.Contains($"External data location '{location}'", e.Message);
        Assert.Contains("escapes the model folder", e.Message);
    }

    [Fact]
    public void ExternalData_LinkOutOfTheFolder_IsRefused()
    {
        File.WriteAllBytes(Path.Combine(_folder, "secret.bin"), new byte[1 << 20]);
        string path = WriteExternalModel("weights.bin");
        File.CreateSymbolicLink(Path.Combine(Path.GetDirectoryName(path)!, "weights.bin"), Path.Combine(_folder, "secret.bin"));
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Load(path));
        Assert.Contains("escapes the model folder", e.Message);
        Assert.Contains("link", e.Message);
    }

    [Fact]
    public void TruncatedFile_ClearError()
    {
        byte[] bytes = File.ReadAllBytes(TestData.FmnistNet);
        string path = Path.Combine(_folder, "truncated.onnx");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Load(path));
        Assert.Contains("truncated.onnx' is truncated or not an ONNX ModelProto", e.Message);
    }

    [Fact]
    public void RandomBytes_ClearError()
    {
        for (int seed = 0; seed < 20; seed++)
        {
            var bytes = new byte[1000];
            new Random(seed).NextBytes(bytes);
            var e = Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Parse(bytes, sourceName: "random.onnx"));
            Assert.Contains("'random.onnx'", e.Message);
        }
        Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Parse([], sourceName: "empty.onnx"));
        Assert.Throws<InvalidOnnxModelException>(() => OnnxModel.Load(Path.Combine(_folder, "missing.onnx")));
    }

    [Fact]
    public void CorruptedBytes_OnlyClearErrors()
    {
        // Truncations and byte flips of a real model: either a model comes back (and validates or not) or a
        // clear InvalidOnnxModelException; never another exception type.
        byte[] original = File.ReadAllBytes(TestData.FmnistNetBn);
        var random = new Random(9);
        for (int i = 0; i < 60; i++)
        {
            byte[] bytes = i < 30 ? original[..random.Next(1, original.Length)] : (byte[])original.Clone();
            if (i >= 30)
                for (int k = 0; k < 8; k++)
                    bytes[random.Next(Math.Min(bytes.Length, 4096))] = (byte)random.Next(256);
            try
            {
                var model = OnnxModel.Parse(bytes, _folder, "corrupt.onnx");
                OnnxValidator.Validate(model);
            }
            catch (InvalidOnnxModelException e)
            {
                Assert.Contains("corrupt.onnx", e.Message);
            }
        }
    }

    [Fact]
    public void Save_IsAtomicAndOverwrites()
    {
        var model = OnnxModel.Load(TestData.FmnistNet);
        string path = Path.Combine(_folder, "out.onnx");
        File.WriteAllText(path, "old");
        model.Save(path);
        Assert.Equal(model.ToBytes(), File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(_folder)); // no temporary left behind
    }
}

using System.Globalization;
using System.Text;
using QatMl.Tool.Data;

namespace QatMl.Tool.Tests;

/// <summary>The other commands and data formats on FmnistNet, and how bad input and Ctrl-C end.</summary>
public sealed class CommandTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void QuantizeFromIdxWithLabelsMeasuresAccuracy()
    {
        string output = Path.Combine(_temp.Path, "idx");
        var result = ToolRunner.Run(["quantize", ToolRunner.FmnistNet, "--data", ToolRunner.TestImages, "--labels", ToolRunner.TestLabels, "--limit", "400",
            .. ToolRunner.FmnistPreprocessing, "--calibration-rows", "100", "--precision", "int8", "--backend", "native", "--out", output,
            "--library-project", ToolRunner.LibraryProject]);
        Assert.True(result.ExitCode == 0, result.Output);
        Assert.Contains("accuracy", result.Output);
        Assert.Contains("QatMl native", result.Output);
        string program = File.ReadAllText(Path.Combine(output, "consumer", "Program.cs"));
        Assert.Contains("[VectorType(784)]", program);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(output, "consumer", "samples", "samples.csv")).Length);
    }

    [Fact]
    public void CsvAndNpyReadTheSameRows()
    {
        ArrayData images = ArrayFiles.ReadIdx(ToolRunner.TestImages, 5);
        ArrayData labels = ArrayFiles.ReadIdx(ToolRunner.TestLabels, 5);
        string csv = Path.Combine(_temp.Path, "rows.csv");
        File.WriteAllLines(csv, new[] { "label," + string.Join(",", Enumerable.Range(0, 784).Select(i => "p" + i)) }
            .Concat(Enumerable.Range(0, 5).Select(r => labels.Values[r] + "," + string.Join(",", images.Row(r).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture))))));
        RawData fromCsv = RawData.Load(csv, DataFormat.Auto, "label");
        Assert.Equal(5, fromCsv.Count);
        Assert.Equal(labels.Values.Select(v => (uint)v), fromCsv.Labels!);
        Assert.Equal(images.Values, fromCsv.Vectors!.Values);

        string npy = Path.Combine(_temp.Path, "rows.npy");
        WriteNpy(npy, images.Values, [5, 28, 28]);
        ArrayData fromNpy = ArrayFiles.ReadNpy(npy);
        Assert.Equal([5, 28, 28], fromNpy.Shape);
        Assert.Equal(images.Values, fromNpy.Values);
    }

    [Fact]
    public void BadInputEndsWithAClearMessage()
    {
        var missing = ToolRunner.Run("quantize", Path.Combine(_temp.Path, "nope.onnx"), "--data", _temp.Path);
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("nope.onnx' does not exist", missing.Output);

        var precision = ToolRunner.Run("quantize", ToolRunner.FmnistNet, "--data", ToolRunner.TestImages, "--precision", "int3", "--out", Path.Combine(_temp.Path, "o"));
        Assert.Equal(2, precision.ExitCode);
        Assert.Contains("'int3' is not int8, w4a8 or auto", precision.Output);

        string csv = Path.Combine(_temp.Path, "short.csv");
        File.WriteAllLines(csv, ["1,2,3", "4,5,6"]);
        var shape = ToolRunner.Run("quantize", ToolRunner.FmnistNet, "--data", csv, "--out", Path.Combine(_temp.Path, "o"));
        Assert.Equal(2, shape.ExitCode);
        Assert.Contains("3 values but model input 'input' takes 784", shape.Output);
        Assert.False(Directory.Exists(Path.Combine(_temp.Path, "o")));
    }

    [Fact]
    public void CancelledQuantizeLeavesNothing()
    {
        using var cancel = new CancellationTokenSource();
        cancel.Cancel();
        string output = Path.Combine(_temp.Path, "cancelled");
        var result = ToolRunner.Run(cancel.Token, ["quantize", ToolRunner.FmnistNet, "--data", ToolRunner.TestImages, "--labels", ToolRunner.TestLabels,
            "--limit", "200", .. ToolRunner.FmnistPreprocessing, "--out", output]);
        Assert.Equal(130, result.ExitCode);
        Assert.False(Directory.Exists(output));
        Assert.Empty(Directory.GetFileSystemEntries(_temp.Path));
    }

    [Fact]
    public void InspectReportsQuantizationFusionsEngineAndVerdict()
    {
        var result = ToolRunner.Run("inspect", ToolRunner.FmnistNet, "--seconds", "0.3");
        Assert.True(result.ExitCode == 0, result.Output);
        string output = result.Output;
        Assert.Contains("input", output);
        Assert.Contains("[batch, 1, 28, 28]", output);
        Assert.Contains("10 of 10 nodes quantized", output);
        // FmnistNet's QDQ graph: ONNX Runtime fuses both convolutions and both Gemms into integer kernels.
        Assert.Contains("2 QLinearConv", output);
        Assert.Contains("runs the whole model", output);
        Assert.Contains("will INT8 be faster here?", output);
        Assert.Contains("ONNX Runtime FP32:", output);
        Assert.Contains("QatMl native INT8:", output);
    }

    [Fact]
    public void BenchmarkTimesEachConfiguration()
    {
        var result = ToolRunner.Run("benchmark", ToolRunner.FmnistNet, "--backends", "float,native", "--batches", "1,16", "--thread-counts", "1",
            "--rows", "32", "--seconds", "0.2");
        Assert.True(result.ExitCode == 0, result.Output);
        Assert.Contains("ONNX Runtime FP32", result.Output);
        Assert.Contains("QatMl native INT8", result.Output);
        Assert.Contains("timing: 4/4 configurations", result.Output);
    }

    private static void WriteNpy(string path, float[] values, int[] shape)
    {
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}), }}";
        header = header.PadRight(((10 + header.Length + 1 + 63) / 64 * 64) - 10 - 1) + "\n";
        using var file = File.Create(path);
        file.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        file.Write(BitConverter.GetBytes((ushort)header.Length));
        file.Write(Encoding.Latin1.GetBytes(header));
        foreach (float v in values)
            file.Write(BitConverter.GetBytes(v));
    }
}

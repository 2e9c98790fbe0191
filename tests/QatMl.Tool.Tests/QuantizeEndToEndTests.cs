using System.Diagnostics;
using System.Xml;
using System.Xml.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Calibration;
using QatMl.Tool.Commands;

namespace QatMl.Tool.Tests;

/// <summary>
/// The main workflow on FmnistNet: Fashion-MNIST test images exported to an image folder (one subfolder per class),
/// then <c>qatml quantize --precision auto --budget 0.5</c>, once for the class; the tests check what it wrote.
/// </summary>
public sealed class QuantizeFixture : IDisposable
{
    public TempFolder Folder { get; } = new();

    public string Images => Path.Combine(Folder.Path, "images");

    public string Out => Path.Combine(Folder.Path, "out");

    public Spectre.Console.Cli.Testing.CommandAppResult Export { get; }

    public Spectre.Console.Cli.Testing.CommandAppResult Quantize { get; }

    public QuantizeFixture()
    {
        Export = ToolRunner.Run("data", "export-idx", ToolRunner.TestImages, "--labels", ToolRunner.TestLabels, "--out", Images, "--limit", "300");
        Quantize = ToolRunner.Run(["quantize", ToolRunner.FmnistNet, "--data", Images, .. ToolRunner.FmnistPreprocessing, "--precision", "auto", "--budget", "0.5",
            "--calibration-rows", "100", "--out", Out, "--library-project", ToolRunner.LibraryProject]);
    }

    public void Dispose() => Folder.Dispose();
}

public sealed class QuantizeEndToEndTests(QuantizeFixture fixture) : IClassFixture<QuantizeFixture>
{
    [Fact]
    public void ExportWritesOneFolderPerClass()
    {
        Assert.Equal(0, fixture.Export.ExitCode);
        string[] classes = Directory.GetDirectories(fixture.Images).Select(Path.GetFileName).OfType<string>().Order().ToArray();
        Assert.Equal(Enumerable.Range(0, 10).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), classes);
        Assert.Equal(300, Directory.GetFiles(fixture.Images, "*.png", SearchOption.AllDirectories).Length);
    }

    [Fact]
    public void QuantizeRunsTheSweepAndWritesEveryOutput()
    {
        Assert.True(fixture.Quantize.ExitCode is 0, fixture.Quantize.Output);
        string output = fixture.Quantize.Output;
        Assert.Contains("calibration (MinMax): 100/100 rows", output);
        Assert.Contains("trial 1: INT8", output);
        Assert.Contains("kept", output);
        foreach (string file in new[] { "model.onnx", "model.zip", "calibration.json", "recipe.json", "report.html", "consumer/Program.cs" })
            Assert.True(File.Exists(Path.Combine(fixture.Out, file)), file);
        // Written whole: no staging folder is left beside the output.
        Assert.Empty(Directory.GetDirectories(fixture.Folder.Path, ".*qatml*"));
        // The calibration table is the library's format.
        CalibrationTable table = CalibrationTable.Load(Path.Combine(fixture.Out, "calibration.json"));
        Assert.Contains(table.Entries, e => e.TensorName == "input");
    }

    [Fact]
    public void TheModelZipTakesImagePathsAndClassifiesLikeTheFloatModel()
    {
        var mlContext = new MLContext();
        ITransformer model = mlContext.Quantization.LoadModel(Path.Combine(fixture.Out, "model.zip"), out DataViewSchema schema);
        Assert.NotNull(schema.GetColumnOrNull("ImagePath"));
        var files = Directory.GetFiles(fixture.Images, "*.png", SearchOption.AllDirectories).Order().Take(100).ToList();
        var rows = files.Select(f => new ImageInput { ImagePath = f }).ToList();
        var scores = mlContext.Data.CreateEnumerable<Scores>(model.Transform(mlContext.Data.LoadFromEnumerable(rows)), reuseRowObject: false).ToList();
        int correct = files.Zip(scores).Count(p => ArgMax(p.Second.Logits) == int.Parse(Path.GetFileName(Path.GetDirectoryName(p.First))!, System.Globalization.CultureInfo.InvariantCulture));
        // FmnistNet reaches 92% on the test set; 100 images of it through the zip's image pipeline and INT8 model.
        Assert.InRange(correct, 82, 100);
        (model as IDisposable)?.Dispose();
    }

    [Fact]
    public void ReportIsWellFormedWithEveryChart()
    {
        string html = File.ReadAllText(Path.Combine(fixture.Out, "report.html"));
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.DoesNotContain("http://", html.Replace("http://www.w3.org/", "", StringComparison.Ordinal));
        Assert.DoesNotContain("https://", html);
        using var reader = XmlReader.Create(new StringReader(html), new XmlReaderSettings { DtdProcessing = DtdProcessing.Ignore });
        XDocument doc = XDocument.Load(reader);
        XNamespace svg = "http://www.w3.org/2000/svg";
        XElement Chart(string id) => doc.Descendants().Single(e => (string?)e.Attribute("id") == id);
        foreach (string id in new[] { "chart-trials", "chart-sqnr", "chart-confusion" })
        {
            var chart = Chart(id).Element(svg + "svg");
            Assert.NotNull(chart);
            Assert.True(chart!.Descendants().Count() > 20, id);
        }
        var histograms = Chart("chart-histograms").Elements("figure").ToList();
        Assert.InRange(histograms.Count, 1, 6);
        Assert.All(histograms, h => Assert.NotNull(h.Element(svg + "svg")));
        // Summary: the kept scheme, the budget verdict and a latency row per backend.
        string summary = string.Concat(Chart("summary").DescendantNodes().OfType<XText>().Select(t => t.Value + " "));
        Assert.Contains("budget", summary);
        Assert.Contains("ONNX Runtime, float", summary);
        Assert.Contains("QatMl native, quantized", summary);
        // One trials-table row per trial printed on the console.
        int trials = fixture.Quantize.Output.Split('\n').Count(l => l.Contains("  trial ", StringComparison.Ordinal));
        Assert.Equal(trials, Chart("trials").Descendants("tr").Count() - 1);
        // Non-void elements are never self-closed (HTML would read them as open tags).
        Assert.DoesNotContain("<div/>", html.Replace(" ", "", StringComparison.Ordinal));
        Assert.DoesNotContain("<td/>", html.Replace(" ", "", StringComparison.Ordinal));
    }

    [Fact]
    public void GeneratedProjectBuildsAndPredicts()
    {
        string project = Path.Combine(fixture.Out, "consumer");
        var (code, output) = Dotnet(project, "build", "-nologo", "-v", "q", "-clp:ErrorsOnly");
        Assert.True(code == 0, output);
        (code, output) = Dotnet(project, "run", "--no-build");
        // The batch part (Transform) predicts each sample image; the samples are named after their class folder.
        var batch = output.Split('\n').Where(l => l.StartsWith("batch ", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, batch.Count);
        Assert.True(batch.Count(l => l.Contains($": class {l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1][0]} ", StringComparison.Ordinal)) >= 3, output);
        // The single prediction goes through ML.NET's PredictionEngine over QatMl's transformer (a row-to-row mapper).
        Assert.True(code == 0, output);
        Assert.Contains("single ", output, StringComparison.Ordinal);
    }

    [Fact]
    public void CompareReadsTheZipAndMatchesTheReport()
    {
        var result = ToolRunner.Run("compare", ToolRunner.FmnistNet, Path.Combine(fixture.Out, "model.zip"), "--data", fixture.Images, "--budget", "5");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("accuracy", result.Output);
        Assert.Contains("within 5 points", result.Output);
        Assert.Contains("scoring float vs quantized: 600/600 rows", result.Output);
    }

    [Fact]
    public void AnExistingOutputIsKeptWithoutForce()
    {
        string before = File.ReadAllText(Path.Combine(fixture.Out, "report.html"));
        var result = ToolRunner.Run(["quantize", ToolRunner.FmnistNet, "--data", fixture.Images, .. ToolRunner.FmnistPreprocessing, "--out", fixture.Out]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--force", result.Output);
        Assert.Equal(before, File.ReadAllText(Path.Combine(fixture.Out, "report.html")));
    }

    private static (int Code, string Output) Dotnet(string folder, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = folder, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
            start.ArgumentList.Add(a);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }

    private static int ArgMax(float[] v) => Array.IndexOf(v, v.Max());

    private sealed class ImageInput
    {
        public string ImagePath { get; set; } = "";
    }

    private sealed class Scores
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }
}

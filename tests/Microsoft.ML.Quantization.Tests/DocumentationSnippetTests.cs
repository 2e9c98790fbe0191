using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Microsoft.ML.Quantization.Tests;

/// <summary>
/// Every ```csharp block of README.md and docs/*.md compiles against the library as a user's Program.cs would: the
/// SDK's implicit usings of a console app, the block's own using directives (none added for QatMl or ML.NET), nullable
/// on, warnings count. The only names a block may use without declaring them are the user's data as the docs call it
/// (<see cref="AmbientNames"/>). A failure names the doc file and line.
/// </summary>
public sealed partial class DocumentationSnippetTests
{
    /// <summary>What the docs take as given: an MLContext and the user's rows (a block may declare its own).</summary>
    private const string AmbientNames = """
        global using static DocSnippetAmbient;

        internal static class DocSnippetAmbient
        {
            public static Microsoft.ML.MLContext mlContext = new();
            public static Microsoft.ML.IDataView calibrationRows = null!, testRows = null!, trainingRows = null!, validationRows = null!;
        }
        """;

    // Microsoft.NET.Sdk's ImplicitUsings for a console app.
    private const string ImplicitUsings = """
        global using System;
        global using System.Collections.Generic;
        global using System.IO;
        global using System.Linq;
        global using System.Net.Http;
        global using System.Threading;
        global using System.Threading.Tasks;
        """;

    private static readonly Lazy<MetadataReference[]> References = new(() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => p.EndsWith(".dll", StringComparison.Ordinal))
            .Select(p => (MetadataReference)MetadataReference.CreateFromFile(p)).ToArray());

    [Fact]
    public void EveryCSharpBlockInTheDocs_Compiles()
    {
        string root = TestData.RepoRoot;
        var files = new[] { Path.Combine(root, "README.md") }
            .Concat(Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Order(StringComparer.Ordinal)).ToList();
        var blocks = files.SelectMany(f => Blocks(Path.GetRelativePath(root, f), File.ReadAllText(f))).ToList();
        Assert.True(blocks.Count(b => b.File == "README.md") >= 3, "README.md should hold its C# examples");
        var errors = blocks.SelectMany(b => Compile(b)).ToList();
        Assert.True(errors.Count == 0, $"{errors.Count} problem(s) in the docs' C# blocks:\n" + string.Join('\n', errors));
    }

    [Fact]
    public void ABrokenBlock_IsReportedAtItsDocLine()
    {
        const string markdown = "# Doc\n\ntext\n\n```csharp\nusing Microsoft.ML;\n\nvar options = new PostTrainingOptions();\n```\n";
        var blocks = Blocks("docs/example.md", markdown).ToList();
        string error = Assert.Single(blocks.SelectMany(b => Compile(b)));
        // Line 8 of the markdown: the type's namespace (Microsoft.ML.Quantization.PostTraining) is not imported.
        Assert.StartsWith("docs/example.md:8: error CS0246", error);
        Assert.Contains("PostTrainingOptions", error);
    }

    [Fact]
    public void EveryPublicType_IsUnambiguous_BesideEveryMLNetNamespace()
    {
        var block = TypeReferences();
        var errors = Compile(block).ToList();
        Assert.True(errors.Count == 0, "QatMl type names that clash with ML.NET, ONNX Runtime or TorchSharp when both namespaces are imported:\n" + string.Join('\n', errors));
    }

    [Fact]
    public void TheAmbiguityCheck_ReportsAClash()
    {
        // ML.NET's Microsoft.ML.Transforms.Onnx.OnnxScoringEstimator, and a QatMl type of that name (QatMl's old name).
        const string clash = "namespace Microsoft.ML.Quantization.Inference { public sealed class OnnxScoringEstimator { } }";
        var block = TypeReferences() with { Code = TypeReferences().Code + "\n_ = typeof(OnnxScoringEstimator);\n" };
        string error = Assert.Single(Compile(block, clash), e => e.Contains("CS0104", StringComparison.Ordinal));
        Assert.Contains("'OnnxScoringEstimator' is an ambiguous reference between 'Microsoft.ML.Quantization.Inference.OnnxScoringEstimator' and 'Microsoft.ML.Transforms.Onnx.OnnxScoringEstimator'", error);
    }

    /// <summary>
    /// A program that imports every namespace with public types of ML.NET, ONNX Runtime and TorchSharp (as the app has them)
    /// and every QatMl namespace, and names each public QatMl type by its simple name: a clash is error CS0104.
    /// </summary>
    private static Block TypeReferences()
    {
        var qatMl = typeof(QuantizationCatalog).Assembly;
        var probe = CSharpCompilation.Create("Probe", references: References.Value);
        var namespaces = new SortedSet<string>(StringComparer.Ordinal);
        void Walk(INamespaceSymbol ns)
        {
            if (ns.GetTypeMembers().Any(t => t.DeclaredAccessibility == Accessibility.Public && IsOthers(t.ContainingAssembly.Name)))
                namespaces.Add(ns.ToDisplayString());
            foreach (INamespaceSymbol child in ns.GetNamespaceMembers())
                Walk(child);
        }
        static bool IsOthers(string assembly) => (assembly.StartsWith("Microsoft.ML", StringComparison.Ordinal) || assembly.StartsWith("TorchSharp", StringComparison.Ordinal))
            && assembly != "Microsoft.ML.Quantization";
        Walk(probe.GlobalNamespace);
        Assert.Contains("Microsoft.ML.Transforms.Onnx", namespaces);
        Assert.Contains("Microsoft.ML.OnnxRuntime", namespaces);
        Assert.Contains("TorchSharp", namespaces);
        var types = qatMl.GetExportedTypes().Where(t => !t.IsNested && !t.Name.Contains('<')).ToList();
        foreach (Type t in types)
            namespaces.Add(t.Namespace!);
        string code = string.Concat(namespaces.Select(n => $"using {n};\n"))
            + string.Concat(types.Select(t => $"_ = typeof({t.Name});\n"));
        return new Block("(every QatMl type beside every ML.NET namespace)", 1, code);
    }

    private sealed record Block(string File, int FirstLine, string Code);

    [GeneratedRegex(@"^```(csharp|cs|c#)\s*$")]
    private static partial Regex CSharpFence();

    private static IEnumerable<Block> Blocks(string file, string markdown)
    {
        string[] lines = markdown.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (!CSharpFence().IsMatch(lines[i].TrimEnd('\r')))
                continue;
            int first = i + 1, end = first;
            while (end < lines.Length && !lines[end].TrimEnd('\r').StartsWith("```", StringComparison.Ordinal))
                end++;
            yield return new Block(file, first + 1, string.Join('\n', lines[first..end]));
            i = end;
        }
    }

    /// <summary>Compiles a block as the top-level statements of a console app; returns "file:line: error CSxxxx: message" for each problem.</summary>
    private static IEnumerable<string> Compile(Block block, params string[] extraSources)
    {
        var parse = new CSharpParseOptions(LanguageVersion.CSharp14);
        SyntaxTree program = CSharpSyntaxTree.ParseText(block.Code, parse, path: block.File);
        var compilation = CSharpCompilation.Create("DocSnippet",
            [program, CSharpSyntaxTree.ParseText(ImplicitUsings, parse), CSharpSyntaxTree.ParseText(AmbientNames, parse),
             .. extraSources.Select(s => CSharpSyntaxTree.ParseText(s, parse))],
            References.Value,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        return compilation.GetDiagnostics()
            .Where(d => d.Severity >= DiagnosticSeverity.Warning)
            .Select(d =>
            {
                FileLinePositionSpan span = d.Location.GetLineSpan();
                string where = d.Location.SourceTree == program ? $"{block.File}:{block.FirstLine + span.StartLinePosition.Line}" : $"{block.File}:{block.FirstLine} (harness)";
                return $"{where}: {d.Severity.ToString().ToLowerInvariant()} {d.Id}: {d.GetMessage()}";
            });
    }
}

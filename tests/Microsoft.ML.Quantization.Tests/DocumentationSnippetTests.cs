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
        var errors = blocks.SelectMany(Compile).ToList();
        Assert.True(errors.Count == 0, $"{errors.Count} problem(s) in the docs' C# blocks:\n" + string.Join('\n', errors));
    }

    [Fact]
    public void ABrokenBlock_IsReportedAtItsDocLine()
    {
        const string markdown = "# Doc\n\ntext\n\n```csharp\nusing Microsoft.ML;\n\nvar options = new PostTrainingOptions();\n```\n";
        var blocks = Blocks("docs/example.md", markdown).ToList();
        string error = Assert.Single(blocks.SelectMany(Compile));
        // Line 8 of the markdown: the type's namespace (Microsoft.ML.Quantization.PostTraining) is not imported.
        Assert.StartsWith("docs/example.md:8: error CS0246", error);
        Assert.Contains("PostTrainingOptions", error);
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
    private static IEnumerable<string> Compile(Block block)
    {
        var parse = new CSharpParseOptions(LanguageVersion.CSharp14);
        SyntaxTree program = CSharpSyntaxTree.ParseText(block.Code, parse, path: block.File);
        var compilation = CSharpCompilation.Create("DocSnippet",
            [program, CSharpSyntaxTree.ParseText(ImplicitUsings, parse), CSharpSyntaxTree.ParseText(AmbientNames, parse)],
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

using System.ComponentModel;
using System.Globalization;
using QatMl.Tool.Cli;
using QatMl.Tool.Data;
using SkiaSharp;
using Spectre.Console;
using Spectre.Console.Cli;

namespace QatMl.Tool.Commands;

internal sealed class ExportIdxSettings : CommonSettings
{
    [CommandArgument(0, "<IMAGES>")]
    [Description("IDX images file (e.g. t10k-images-idx3-ubyte.gz): N x height x width bytes.")]
    public string Images { get; init; } = "";

    [CommandOption("--labels <IDX>")]
    [Description("IDX labels file; each image goes to the subfolder of its label (class index). Without it: one flat folder.")]
    public string? Labels { get; init; }

    [CommandOption("--out <DIR>")]
    [Description("The image folder to write (must not exist or be empty).")]
    public string Out { get; init; } = "";

    [CommandOption("--limit <N>")]
    [Description("Write the first N images only.")]
    public int? Limit { get; init; }
}

/// <summary><c>qatml data export-idx</c>: IDX images as 8-bit gray PNGs in a Model Builder-style image folder.</summary>
internal sealed class ExportIdxCommand(ToolEnvironment environment) : Command<ExportIdxSettings>
{
    public override int Execute(CommandContext context, ExportIdxSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Plain)
            environment.UsePlainOutput();
        if (settings.Out.Length == 0)
            throw new ToolException("--out is required: the image folder to write.");
        if (settings.Limit is <= 0)
            throw new ToolException("--limit must be at least 1.");
        ArrayData images = ArrayFiles.ReadIdx(settings.Images, settings.Limit);
        if (images.Shape.Length != 3)
            throw new ToolException($"'{settings.Images}' has shape [{string.Join(", ", images.Shape)}]; expected images [N, height, width].");
        uint[]? labels = null;
        if (settings.Labels is { } labelPath)
        {
            ArrayData l = ArrayFiles.ReadIdx(labelPath, settings.Limit);
            if (l.Rows != images.Rows || l.RowElements != 1)
                throw new ToolException($"Labels '{labelPath}' have shape [{string.Join(", ", l.Shape)}]; expected [{images.Rows}].");
            labels = l.Values.Select(v => (uint)v).ToArray();
        }
        int height = images.Shape[1], width = images.Shape[2];
        using var staging = new StagingDirectory(settings.Out, overwrite: false);
        environment.Progress().Run(board =>
        {
            var step = board.Add("writing PNG images", images.Rows, "images");
            var pixels = new byte[width * height];
            for (int i = 0; i < images.Rows; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                ReadOnlySpan<float> row = images.Row(i);
                for (int p = 0; p < pixels.Length; p++)
                    pixels[p] = (byte)Math.Clamp(row[p], 0, 255);
                string folder = labels is null ? staging.Folder : Path.Combine(staging.Folder, labels[i].ToString(CultureInfo.InvariantCulture));
                Directory.CreateDirectory(folder);
                using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Gray8, SKAlphaType.Opaque));
                System.Runtime.InteropServices.Marshal.Copy(pixels, 0, bitmap.GetPixels(), pixels.Length);
                using SKData png = bitmap.Encode(SKEncodedImageFormat.Png, 100);
                using (var file = File.Create(Path.Combine(folder, i.ToString("D5", CultureInfo.InvariantCulture) + ".png")))
                    png.SaveTo(file);
                step.Report(i + 1);
            }
            step.Complete();
            return 0;
        });
        staging.Commit();
        environment.Console.MarkupLine($"wrote {images.Rows} images to {Markup.Escape(staging.Target)}" + (labels is null ? "" : $" in {labels.Distinct().Count()} class folders"));
        return 0;
    }
}

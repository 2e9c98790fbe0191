using System.ComponentModel;
using System.Globalization;
using QatMl.Tool.Data;
using Spectre.Console.Cli;

namespace QatMl.Tool.Commands;

/// <summary>Options every command has.</summary>
internal class CommonSettings : CommandSettings
{
    [CommandOption("--plain")]
    [Description("Plain line-by-line output, no live progress (automatic when the output is not a terminal or CI=true).")]
    public bool Plain { get; init; }

    [CommandOption("--threads <N>")]
    [Description("Threads per inference call (ONNX Runtime intra-op, or the native engine); 0 = one per core.")]
    [DefaultValue(0)]
    public int Threads { get; init; }

    [CommandOption("--batch <N>")]
    [Description("Rows per inference call.")]
    [DefaultValue(64)]
    public int Batch { get; init; } = 64;

    public override Spectre.Console.ValidationResult Validate()
    {
        if (Threads < 0)
            return Spectre.Console.ValidationResult.Error("--threads must be 0 or more.");
        if (Batch < 1)
            return Spectre.Console.ValidationResult.Error("--batch must be at least 1.");
        return base.Validate();
    }
}

/// <summary>Where rows come from and how they become model inputs.</summary>
internal class DataSettings : CommonSettings
{
    [CommandOption("--data <PATH>")]
    [Description("Rows: an image folder (one subfolder per class, or a flat folder), a .csv, an IDX file (.gz too) or a .npy.")]
    public string? Data { get; init; }

    [CommandOption("--labels <LABELS>")]
    [Description("Labels: IDX/.npy file of class indices (IDX, .npy data), the label column (CSV), or a class-names file in output order (image folder).")]
    public string? Labels { get; init; }

    [CommandOption("--format <FORMAT>")]
    [Description("auto (default), images, csv, idx or npy.")]
    [DefaultValue("auto")]
    public string Format { get; init; } = "auto";

    [CommandOption("--recipe <JSON>")]
    [Description("Preprocessing recipe (JSON: layout, channels, width, height, resize, scale, mean, std, preprocessModel); options below override it.")]
    public string? Recipe { get; init; }

    [CommandOption("--resize <WxH>")]
    [Description("Image size fed to the model (default: the model input's).")]
    public string? Resize { get; init; }

    [CommandOption("--scale <X>")]
    [Description("Divide raw values by X first (255: pixels to [0, 1]).")]
    public float? Scale { get; init; }

    [CommandOption("--mean <M>")]
    [Description("Subtract after scaling: one value or one per channel (0.485,0.456,0.406).")]
    public string? Mean { get; init; }

    [CommandOption("--std <S>")]
    [Description("Divide after the mean: one value or one per channel.")]
    public string? Std { get; init; }

    [CommandOption("--layout <LAYOUT>")]
    [Description("nchw (default) or nhwc.")]
    public string? Layout { get; init; }

    [CommandOption("--channels <ORDER>")]
    [Description("rgb, bgr or gray (default: from the model input's channel count).")]
    public string? Channels { get; init; }

    [CommandOption("--preprocess-model <ONNX>")]
    [Description("An ONNX graph run on the pixels before the model (e.g. ResNetPreprocess.onnx).")]
    public string? PreprocessModel { get; init; }

    [CommandOption("--input-shape <DIMS>")]
    [Description("Per-row input shape when the model does not fix it, e.g. 3x224x224.")]
    public string? InputShape { get; init; }

    [CommandOption("--limit <N>")]
    [Description("Read at most N rows of the data.")]
    public int? Limit { get; init; }

    public DataFormat ParsedFormat => Format.ToLowerInvariant() switch
    {
        "auto" => DataFormat.Auto,
        "images" or "image" => DataFormat.Images,
        "csv" => DataFormat.Csv,
        "idx" => DataFormat.Idx,
        "npy" => DataFormat.Npy,
        _ => throw new ToolException($"--format: '{Format}' is not auto, images, csv, idx or npy."),
    };

    public int[]? ParsedInputShape => InputShape is null ? null
        : InputShape.Split('x', 'X', ',').Select(d => int.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v
            : throw new ToolException($"--input-shape: '{InputShape}' is not dimensions like 3x224x224.")).ToArray();

    /// <summary>The recipe file (if any) with the command-line options applied over it.</summary>
    public Preprocessing BuildRecipe()
    {
        Preprocessing recipe = Recipe is null ? new Preprocessing() : Preprocessing.Load(Recipe);
        if (Resize is not null)
            (recipe.Width, recipe.Height) = Preprocessing.ParseSize(Resize);
        if (Scale is { } s)
            recipe.Scale = s;
        if (Mean is not null)
            recipe.Mean = Preprocessing.ParseList(Mean, "--mean");
        if (Std is not null)
            recipe.Std = Preprocessing.ParseList(Std, "--std");
        if (Layout is not null)
            recipe.Layout = Layout.ToLowerInvariant() switch
            {
                "nchw" => TensorLayout.Nchw,
                "nhwc" => TensorLayout.Nhwc,
                _ => throw new ToolException($"--layout: '{Layout}' is not nchw or nhwc."),
            };
        if (Channels is not null)
            recipe.Channels = Channels.ToLowerInvariant() switch
            {
                "rgb" => ChannelOrder.Rgb,
                "bgr" => ChannelOrder.Bgr,
                "gray" or "grey" => ChannelOrder.Gray,
                _ => throw new ToolException($"--channels: '{Channels}' is not rgb, bgr or gray."),
            };
        if (PreprocessModel is not null)
            recipe.PreprocessModel = Path.GetFullPath(PreprocessModel);
        recipe.Validate("options");
        return recipe;
    }

    public RawData LoadData(string? path = null)
    {
        string data = path ?? Data ?? throw new ToolException("--data is required: an image folder, .csv, IDX or .npy file.");
        if (Limit is <= 0)
            throw new ToolException("--limit must be at least 1.");
        return RawData.Load(data, ParsedFormat, Labels, Limit);
    }
}

using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace QatMl.Tool.Data;

/// <summary>Memory order of an image tensor: planar (N, C, H, W) or interleaved (N, H, W, C).</summary>
internal enum TensorLayout
{
    Nchw,
    Nhwc,
}

/// <summary>Which colour planes an image gives the model, in order.</summary>
internal enum ChannelOrder
{
    Rgb,
    Bgr,
    Gray,
}

/// <summary>How an image is brought to the model's size (ML.NET's ResizeImages kinds).</summary>
internal enum ResizeMode
{
    Fill,
    Pad,
    Crop,
}

/// <summary>
/// How raw data becomes the model's input: <c>value = (pixel / Scale - Mean[c]) / Std[c]</c>, images resized to
/// Width x Height, channels in <see cref="Channels"/> order and <see cref="Layout"/>, then optionally an ONNX graph
/// (<see cref="PreprocessModel"/>, e.g. ResNet18's mean-image subtraction). Read from a JSON recipe, overridden by
/// command-line options; sizes and channel count default to the model input's shape.
/// </summary>
internal sealed class Preprocessing
{
    public TensorLayout Layout { get; set; } = TensorLayout.Nchw;

    /// <summary>Null: from the model input (1 channel: gray; 3: rgb).</summary>
    public ChannelOrder? Channels { get; set; }

    /// <summary>Target size; null: the model input's.</summary>
    public int? Width { get; set; }

    public int? Height { get; set; }

    public ResizeMode Resize { get; set; } = ResizeMode.Fill;

    /// <summary>Raw values are divided by this first (255: pixels to [0, 1]). Default 1.</summary>
    public float Scale { get; set; } = 1;

    /// <summary>Subtracted after scaling: one value, or one per channel.</summary>
    public float[] Mean { get; set; } = [0];

    /// <summary>Divides after the mean: one value, or one per channel.</summary>
    public float[] Std { get; set; } = [1];

    /// <summary>An ONNX graph run on the extracted pixels before the model (relative paths: to the recipe file).</summary>
    public string? PreprocessModel { get; set; }

    /// <summary>True when nothing changes the values (scale 1, mean 0, std 1).</summary>
    [JsonIgnore]
    public bool IsIdentityNormalization => Scale == 1 && Mean.All(m => m == 0) && Std.All(s => s == 1);

    /// <summary>True when one mean and std serve every channel.</summary>
    [JsonIgnore]
    public bool IsUniform => Mean.Distinct().Count() == 1 && Std.Distinct().Count() == 1;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Reads a recipe; errors name the file and the problem.</summary>
    public static Preprocessing Load(string path)
    {
        if (!File.Exists(path))
            throw new ToolException($"Preprocessing recipe '{path}' does not exist.");
        Preprocessing recipe;
        try
        {
            recipe = JsonSerializer.Deserialize<Preprocessing>(File.ReadAllText(path), Json)
                ?? throw new ToolException($"Preprocessing recipe '{path}' is empty.");
        }
        catch (JsonException e)
        {
            throw new ToolException($"Preprocessing recipe '{path}' is not valid: {e.Message}");
        }
        if (recipe.PreprocessModel is { } model && !Path.IsPathRooted(model))
            recipe.PreprocessModel = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, model));
        recipe.Validate($"recipe '{path}'");
        return recipe;
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public void Validate(string where)
    {
        if (!(Scale > 0) || !float.IsFinite(Scale))
            throw new ToolException($"Preprocessing ({where}): scale must be a positive number; got {Scale}.");
        if (Mean.Length == 0 || Std.Length == 0)
            throw new ToolException($"Preprocessing ({where}): mean and std need at least one value.");
        if (Std.Any(s => !(s > 0) || !float.IsFinite(s)))
            throw new ToolException($"Preprocessing ({where}): every std must be a positive number; got {Format(Std)}.");
        if (Mean.Any(m => !float.IsFinite(m)))
            throw new ToolException($"Preprocessing ({where}): every mean must be finite; got {Format(Mean)}.");
        if (Width is <= 0 || Height is <= 0)
            throw new ToolException($"Preprocessing ({where}): width and height must be positive.");
        if (PreprocessModel is { } model && !File.Exists(model))
            throw new ToolException($"Preprocessing ({where}): preprocess model '{model}' does not exist.");
    }

    /// <summary>The mean and std of channel <paramref name="channel"/> (one value serves all).</summary>
    public (float Mean, float Std) ForChannel(int channel, int channels, string where)
    {
        foreach (var (values, name) in new[] { (Mean, "mean"), (Std, "std") })
            if (values.Length != 1 && values.Length != channels)
                throw new ToolException($"Preprocessing ({where}): {name} has {values.Length} values but the input has {channels} channel(s); give one value or {channels}.");
        return (Mean.Length == 1 ? Mean[0] : Mean[channel], Std.Length == 1 ? Std[0] : Std[channel]);
    }

    /// <summary>Parses "0.485,0.456,0.406" (invariant culture).</summary>
    public static float[] ParseList(string text, string option)
    {
        try
        {
            return text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(v => float.Parse(v, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (FormatException)
        {
            throw new ToolException($"{option}: '{text}' is not a comma-separated list of numbers.");
        }
    }

    /// <summary>Parses "224x224" or "224".</summary>
    public static (int Width, int Height) ParseSize(string text)
    {
        string[] parts = text.Split('x', 'X');
        if (parts.Length is 1 or 2 && parts.All(p => int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0))
        {
            int w = int.Parse(parts[0], CultureInfo.InvariantCulture);
            return (w, parts.Length == 2 ? int.Parse(parts[1], CultureInfo.InvariantCulture) : w);
        }
        throw new ToolException($"--resize: '{text}' is not WIDTHxHEIGHT (e.g. 224x224).");
    }

    public override string ToString()
    {
        var parts = new List<string> { Layout.ToString().ToUpperInvariant() };
        if (Channels is { } c) parts.Add(c.ToString().ToLowerInvariant());
        if (Width is { } w && Height is { } h) parts.Add($"{w}x{h} ({Resize.ToString().ToLowerInvariant()})");
        parts.Add(string.Create(CultureInfo.InvariantCulture, $"(x / {Scale:G} - {Format(Mean)}) / {Format(Std)}"));
        if (PreprocessModel is { } m) parts.Add("then " + Path.GetFileName(m));
        return string.Join(", ", parts);
    }

    private static string Format(float[] values)
        => values.Length == 1 ? values[0].ToString("G", CultureInfo.InvariantCulture) : "[" + string.Join(", ", values.Select(v => v.ToString("G", CultureInfo.InvariantCulture))) + "]";
}

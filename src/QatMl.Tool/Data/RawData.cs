using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace QatMl.Tool.Data;

/// <summary>The data formats <c>--data</c> takes.</summary>
internal enum DataFormat
{
    Auto,
    Images,
    Csv,
    Idx,
    Npy,
}

/// <summary>
/// Rows as the user gave them, before preprocessing: image files (an image folder with one subfolder per class, as
/// Model Builder takes them, or a flat folder) or numeric vectors (CSV, IDX, .npy), each with an optional class label.
/// These are the rows the saved model zip takes as input: column <see cref="ImagePathColumn"/> or
/// <see cref="FeaturesColumn"/>, plus <see cref="LabelColumn"/>.
/// </summary>
internal sealed class RawData
{
    public const string ImagePathColumn = "ImagePath";
    public const string FeaturesColumn = "Features";
    public const string LabelColumn = "Label";

    private static readonly string[] ImageExtensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];

    private RawData(string description, IReadOnlyList<string>? imagePaths, ArrayData? vectors, uint[]? labels, IReadOnlyList<string>? classNames)
    {
        Description = description;
        ImagePaths = imagePaths;
        Vectors = vectors;
        Labels = labels;
        ClassNames = classNames;
    }

    public string Description { get; }

    public bool IsImages => ImagePaths is not null;

    public IReadOnlyList<string>? ImagePaths { get; }

    public ArrayData? Vectors { get; }

    /// <summary>Class index per row (the model output's index), or null without labels.</summary>
    public uint[]? Labels { get; }

    /// <summary>Class names by index, when known (image folder names, or a names file).</summary>
    public IReadOnlyList<string>? ClassNames { get; }

    public int Count => ImagePaths?.Count ?? Vectors!.Rows;

    /// <summary>
    /// Reads <paramref name="path"/> in <paramref name="format"/> (Auto: a folder is images; .csv, .npy; otherwise IDX).
    /// <paramref name="labels"/>: for an image folder a text file of class names in the model's output order; for CSV
    /// the label column (name or 0-based index); for IDX and .npy a file of one integer label per row.
    /// </summary>
    public static RawData Load(string path, DataFormat format, string? labels, int? limit = null)
    {
        if (format == DataFormat.Auto)
            format = Directory.Exists(path) ? DataFormat.Images
                : path.EndsWith(".csv", StringComparison.OrdinalIgnoreCase) ? DataFormat.Csv
                : path.EndsWith(".npy", StringComparison.OrdinalIgnoreCase) ? DataFormat.Npy
                : File.Exists(path) && ArrayFiles.LooksLikeIdx(path) ? DataFormat.Idx
                : File.Exists(path) ? throw new ToolException($"Data '{path}': unknown format; give --format images|csv|idx|npy.")
                : throw new ToolException($"Data '{path}' does not exist.");
        return format switch
        {
            DataFormat.Images => LoadImages(path, labels),
            DataFormat.Csv => LoadCsv(path, labels, limit),
            DataFormat.Idx => LoadArrays(path, labels, ArrayFiles.ReadIdx(path, limit), limit),
            _ => LoadArrays(path, labels, ArrayFiles.ReadNpy(path, limit), limit),
        };
    }

    /// <summary>The rows at <paramref name="indices"/> as an IDataView with the raw columns.</summary>
    public IDataView ToDataView(MLContext context, IReadOnlyList<int> indices)
    {
        if (ImagePaths is not null)
            return context.Data.LoadFromEnumerable(indices.Select(i => new ImageRow { ImagePath = ImagePaths[i], Label = Labels?[i] ?? 0 }));
        var schema = SchemaDefinition.Create(typeof(VectorRow));
        schema[nameof(VectorRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, Vectors!.RowElements);
        return context.Data.LoadFromEnumerable(indices.Select(i => new VectorRow { Features = Vectors.Row(i).ToArray(), Label = Labels?[i] ?? 0 }), schema);
    }

    private static RawData LoadImages(string folder, string? namesFile)
    {
        if (!Directory.Exists(folder))
            throw new ToolException($"Image folder '{folder}' does not exist.");
        string[] classFolders = Directory.GetDirectories(folder).Select(Path.GetFileName).OfType<string>()
            .Where(d => !d.StartsWith('.')).Order(StringComparer.Ordinal).ToArray();
        var paths = new List<string>();
        if (classFolders.Length == 0)
        {
            paths.AddRange(ImagesIn(folder));
            if (paths.Count == 0)
                throw new ToolException($"Image folder '{folder}' holds no images ({string.Join(", ", ImageExtensions)}) and no class subfolders.");
            return new RawData($"{paths.Count} images in '{folder}' (no labels)", paths, null, null, null);
        }

        // The class index is the model output's: a names file gives the order; folder names that are numbers give it;
        // otherwise the folders' sorted order (said in the description).
        IReadOnlyList<string> names;
        Func<string, int> indexOf;
        string order;
        if (namesFile is not null)
        {
            if (!File.Exists(namesFile))
                throw new ToolException($"--labels: class names file '{namesFile}' does not exist.");
            names = File.ReadAllLines(namesFile).Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
            var map = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
            indexOf = d => map.TryGetValue(d, out int i) ? i : throw new ToolException($"Image folder '{Path.Combine(folder, d)}' is not a class in '{namesFile}'.");
            order = $"class order from '{namesFile}'";
        }
        else if (classFolders.All(d => int.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
        {
            int max = classFolders.Max(d => int.Parse(d, CultureInfo.InvariantCulture));
            names = Enumerable.Range(0, max + 1).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList();
            indexOf = d => int.Parse(d, CultureInfo.InvariantCulture);
            order = "folder names are the class indices";
        }
        else
        {
            names = classFolders;
            indexOf = d => Array.IndexOf(classFolders, d);
            order = "class index = folder name's sorted position";
        }
        var labels = new List<uint>();
        foreach (string d in classFolders)
        {
            int index = indexOf(d);
            foreach (string image in ImagesIn(Path.Combine(folder, d)))
            {
                paths.Add(image);
                labels.Add((uint)index);
            }
        }
        if (paths.Count == 0)
            throw new ToolException($"Image folder '{folder}': its class subfolders hold no images ({string.Join(", ", ImageExtensions)}).");
        return new RawData($"{paths.Count} images in {classFolders.Length} classes in '{folder}' ({order})", paths, null, [.. labels], names);
    }

    private static IEnumerable<string> ImagesIn(string folder)
        => Directory.EnumerateFiles(folder).Where(f => ImageExtensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
            .Select(Path.GetFullPath).Order(StringComparer.Ordinal);

    private static RawData LoadCsv(string path, string? labelColumn, int? limit)
    {
        if (!File.Exists(path))
            throw new ToolException($"CSV file '{path}' does not exist.");
        var lines = File.ReadLines(path).Where(l => l.Trim().Length > 0);
        string[]? header = null;
        int labelIndex = -1;
        var values = new List<float>();
        var labels = new List<uint>();
        int width = -1, rows = 0, lineNumber = 0;
        foreach (string line in lines)
        {
            lineNumber++;
            string[] cells = line.Split(',', StringSplitOptions.TrimEntries);
            if (lineNumber == 1 && cells.Any(c => c.Length > 0 && !float.TryParse(c, NumberStyles.Float, CultureInfo.InvariantCulture, out _)))
            {
                header = cells;
                continue;
            }
            if (width < 0)
            {
                width = cells.Length;
                if (labelColumn is not null)
                {
                    labelIndex = header is not null && Array.IndexOf(header, labelColumn) is int named and >= 0 ? named
                        : int.TryParse(labelColumn, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < width ? i
                        : throw new ToolException($"CSV '{path}' has no label column '{labelColumn}'" + (header is null ? " (no header: give a 0-based column index)." : $" (columns: {string.Join(", ", header)})."));
                }
            }
            if (cells.Length != width)
                throw new ToolException($"CSV '{path}' line {lineNumber}: {cells.Length} values, expected {width}.");
            for (int c = 0; c < cells.Length; c++)
            {
                if (!float.TryParse(cells[c], NumberStyles.Float, CultureInfo.InvariantCulture, out float v))
                    throw new ToolException($"CSV '{path}' line {lineNumber}, column {c + 1}: '{cells[c]}' is not a number.");
                if (c == labelIndex)
                {
                    if (v < 0 || v != MathF.Floor(v))
                        throw new ToolException($"CSV '{path}' line {lineNumber}: label '{cells[c]}' is not a class index (0, 1, 2, ...).");
                    labels.Add((uint)v);
                }
                else
                    values.Add(v);
            }
            if (++rows == limit)
                break;
        }
        if (rows == 0)
            throw new ToolException($"CSV '{path}' has no data rows.");
        int features = width - (labelIndex >= 0 ? 1 : 0);
        var data = new ArrayData([rows, features], [.. values]);
        return new RawData($"{rows} rows of {features} values in '{path}'" + (labelIndex >= 0 ? $", labels in column {labelIndex + 1}" : ""), null, data,
            labelIndex >= 0 ? [.. labels] : null, null);
    }

    private static RawData LoadArrays(string path, string? labelsPath, ArrayData data, int? limit)
    {
        if (data.Shape.Length < 2)
            throw new ToolException($"'{path}' has shape [{string.Join(", ", data.Shape)}]: expected rows of values (2 or more dimensions).");
        uint[]? labels = null;
        if (labelsPath is not null)
        {
            ArrayData l = labelsPath.EndsWith(".npy", StringComparison.OrdinalIgnoreCase) ? ArrayFiles.ReadNpy(labelsPath, limit) : ArrayFiles.ReadIdx(labelsPath, limit);
            if (l.Rows != data.Rows || l.RowElements != 1)
                throw new ToolException($"Labels '{labelsPath}' have shape [{string.Join(", ", l.Shape)}]; expected [{data.Rows}] (one per row of '{path}').");
            labels = l.Values.Select((v, i) => v >= 0 && v == MathF.Floor(v) ? (uint)v : throw new ToolException($"Labels '{labelsPath}' row {i}: {v} is not a class index.")).ToArray();
        }
        return new RawData($"{data.Rows} rows of shape [{string.Join(", ", data.Shape.Skip(1))}] in '{path}'" + (labels is null ? "" : $", labels in '{labelsPath}'"), null, data, labels, null);
    }

    private sealed class ImageRow
    {
        public string ImagePath { get; set; } = "";

        public uint Label { get; set; }
    }

    private sealed class VectorRow
    {
        public float[] Features { get; set; } = [];

        public uint Label { get; set; }
    }
}

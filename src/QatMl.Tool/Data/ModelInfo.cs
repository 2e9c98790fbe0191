using Microsoft.ML.Quantization;
using Microsoft.ML.Quantization.Onnx;

namespace QatMl.Tool.Data;

/// <summary>A graph input or output: name, element type, shape as declared (symbols and unknowns as null).</summary>
internal sealed record TensorInfo(string Name, string ElementType, IReadOnlyList<long?> Shape, IReadOnlyList<string?> Symbols)
{
    /// <summary>The shape without the batch dimension, when every other dimension is known.</summary>
    public int[]? RowShape => Shape.Count >= 1 && Shape.Skip(1).All(d => d is > 0) ? Shape.Skip(1).Select(d => checked((int)d!.Value)).ToArray() : null;

    public long? RowElements => RowShape?.Aggregate(1L, (a, b) => a * b);

    public string ShapeText => "[" + string.Join(", ", Shape.Select((d, i) => d?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? Symbols[i] ?? "?")) + "]";
}

/// <summary>What the tool needs to know about a float ONNX model before touching data.</summary>
internal sealed class ModelInfo
{
    private ModelInfo(string path, OnnxModel model)
    {
        Path = path;
        Model = model;
        var graph = model.Graph;
        Inputs = graph.RuntimeInputs.Select(Describe).ToList();
        Outputs = graph.Outputs.Select(Describe).ToList();
        if (Inputs.Count == 0)
            throw new ToolException($"Model '{path}' has no inputs to feed.");
    }

    public string Path { get; }

    /// <summary>The parsed graph (the library's internal ONNX reader).</summary>
    internal OnnxModel Model { get; }

    public IReadOnlyList<TensorInfo> Inputs { get; }

    public IReadOnlyList<TensorInfo> Outputs { get; }

    public TensorInfo Input => Inputs[0];

    public TensorInfo Output => Outputs[0];

    public long FileBytes => new FileInfo(Path).Length;

    /// <summary>Reads and checks a model file; every error names the file.</summary>
    public static ModelInfo Load(string path)
    {
        if (!File.Exists(path))
            throw new ToolException($"Model '{path}' does not exist.");
        OnnxModel model;
        try
        {
            model = OnnxModel.Load(path);
        }
        catch (InvalidOnnxModelException e)
        {
            throw new ToolException(e.Message);
        }
        var info = new ModelInfo(System.IO.Path.GetFullPath(path), model);
        if (info.Inputs.Count > 1)
            throw new ToolException($"Model '{path}' has {info.Inputs.Count} inputs ({string.Join(", ", info.Inputs.Select(i => i.Name))}); the tool feeds models with one input.");
        if (info.Input.ElementType != "Float")
            throw new ToolException($"Model '{path}' input '{info.Input.Name}' is {info.Input.ElementType}; the tool feeds float inputs.");
        return info;
    }

    /// <summary>The per-row input shape: from the graph, else from <paramref name="declared"/>.</summary>
    public int[] RowShape(int[]? declared = null)
        => declared ?? Input.RowShape
           ?? throw new ToolException($"Model '{Path}' input '{Input.Name}' has shape {Input.ShapeText}: give the per-row shape with --input-shape (e.g. 3x224x224).");

    /// <summary>(channels, height, width) of an image input in <paramref name="layout"/>, or null when the input is not 3-D per row.</summary>
    public (int Channels, int Height, int Width)? ImageGeometry(TensorLayout layout, int[]? declared = null)
    {
        int[] row = RowShape(declared);
        if (row.Length != 3)
            return null;
        return layout == TensorLayout.Nchw ? (row[0], row[1], row[2]) : (row[2], row[0], row[1]);
    }

    private static TensorInfo Describe(OnnxValueInfo v)
    {
        var shape = v.Shape ?? [];
        return new TensorInfo(v.Name, v.ElementType.ToString(), shape.Select(d => d.Value).ToList(), shape.Select(d => d.Param).ToList());
    }
}

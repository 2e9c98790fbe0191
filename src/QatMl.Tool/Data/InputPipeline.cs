using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace QatMl.Tool.Data;

/// <summary>
/// The ML.NET transforms from the raw rows (<see cref="RawData"/>) to the model's input column: for images
/// LoadImages, ResizeImages, (ConvertToGrayscale), ExtractPixels with the recipe's scale/mean/std (one ExtractPixels per
/// channel plus Concatenate when the channels differ), for vectors an Expression; then the recipe's ONNX graph
/// (ApplyOnnxModel). The same transforms go into the saved model zip, so the generated project feeds raw rows.
/// </summary>
internal static class InputPipeline
{
    public static IEstimator<ITransformer> Build(MLContext context, RawData data, ModelInfo model, Preprocessing recipe, int[]? declaredShape)
    {
        var t = context.Transforms;
        string target = model.Input.Name;
        string? preprocessInput = null, preprocessOutput = null;
        if (recipe.PreprocessModel is { } pre)
        {
            var graph = ModelInfo.Load(pre);
            preprocessInput = graph.Input.Name;
            preprocessOutput = graph.Output.Name;
        }
        // The column the normalised values land in: the preprocessing graph's input, else the model's.
        string values = preprocessInput ?? target;
        IEstimator<ITransformer> chain;
        if (data.IsImages)
        {
            int[] row = model.RowShape(declaredShape);
            var geometry = (preprocessInput is null ? model.ImageGeometry(recipe.Layout, declaredShape) : ModelInfo.Load(recipe.PreprocessModel!).ImageGeometry(recipe.Layout))
                ?? throw new ToolException($"Model input '{target}' has per-row shape [{string.Join(", ", row)}], not an image (C, H, W); give a recipe with a preprocessModel, or vector data.");
            int width = recipe.Width ?? geometry.Width, height = recipe.Height ?? geometry.Height;
            ChannelOrder channels = recipe.Channels ?? (geometry.Channels == 1 ? ChannelOrder.Gray : ChannelOrder.Rgb);
            int channelCount = channels == ChannelOrder.Gray ? 1 : 3;
            if (channelCount != geometry.Channels)
                throw new ToolException($"Model input '{values}' has {geometry.Channels} channel(s) ({recipe.Layout}) but the recipe gives {channels} ({channelCount}).");
            if (width != geometry.Width || height != geometry.Height)
                throw new ToolException($"The recipe resizes to {width}x{height} but model input '{values}' takes {geometry.Width}x{geometry.Height}.");
            chain = t.LoadImages("__Image", imageFolder: null!, RawData.ImagePathColumn)
                .Append(t.ResizeImages("__Resized", width, height, "__Image", recipe.Resize switch
                {
                    ResizeMode.Pad => ImageResizingEstimator.ResizingKind.IsoPad,
                    ResizeMode.Crop => ImageResizingEstimator.ResizingKind.IsoCrop,
                    _ => ImageResizingEstimator.ResizingKind.Fill,
                }));
            string pixels = "__Resized";
            if (channels == ChannelOrder.Gray)
            {
                chain = chain.Append(t.ConvertToGrayscale("__Gray", "__Resized"));
                pixels = "__Gray";
            }
            var planes = channels switch
            {
                ChannelOrder.Gray => new[] { ImagePixelExtractingEstimator.ColorBits.Red },
                ChannelOrder.Rgb => [ImagePixelExtractingEstimator.ColorBits.Red, ImagePixelExtractingEstimator.ColorBits.Green, ImagePixelExtractingEstimator.ColorBits.Blue],
                _ => [ImagePixelExtractingEstimator.ColorBits.Blue, ImagePixelExtractingEstimator.ColorBits.Green, ImagePixelExtractingEstimator.ColorBits.Red],
            };
            // ExtractPixels computes (pixel - offset) * scale; value = (pixel / Scale - mean) / std.
            (float Offset, float Scale) Affine(int c)
            {
                var (mean, std) = recipe.ForChannel(c, channelCount, "images");
                return (mean * recipe.Scale, 1 / (recipe.Scale * std));
            }
            if (recipe.IsUniform || channelCount == 1)
            {
                var (offset, scale) = Affine(0);
                var bits = planes.Aggregate((a, b) => a | b);
                chain = chain.Append(t.ExtractPixels(values, pixels, bits,
                    channels == ChannelOrder.Bgr ? ImagePixelExtractingEstimator.ColorsOrder.ABGR : ImagePixelExtractingEstimator.ColorsOrder.ARGB,
                    interleavePixelColors: recipe.Layout == TensorLayout.Nhwc, offsetImage: offset, scaleImage: scale));
            }
            else
            {
                if (recipe.Layout == TensorLayout.Nhwc)
                    throw new ToolException("Per-channel mean/std with layout NHWC is not supported by ML.NET's pixel extraction; use one mean and std, or a preprocessModel.");
                var columns = new List<string>();
                for (int c = 0; c < planes.Length; c++)
                {
                    var (offset, scale) = Affine(c);
                    string column = $"__Plane{c}";
                    chain = chain.Append(t.ExtractPixels(column, pixels, planes[c], offsetImage: offset, scaleImage: scale));
                    columns.Add(column);
                }
                chain = chain.Append(t.Concatenate(values, [.. columns]));
            }
        }
        else
        {
            long expected = (preprocessInput is null ? model.RowShape(declaredShape) : ModelInfo.Load(recipe.PreprocessModel!).RowShape()).Aggregate(1L, (a, b) => a * b);
            if (data.Vectors!.RowElements != expected)
                throw new ToolException($"Data rows have {data.Vectors.RowElements} values but model input '{values}' takes {expected} per row.");
            if (!recipe.IsUniform)
                throw new ToolException("Per-channel mean/std applies to images; for vector data give one mean and std (or preprocess the data).");
            chain = recipe.IsIdentityNormalization
                ? t.CopyColumns(values, RawData.FeaturesColumn)
                : t.Expression(values, string.Create(CultureInfo.InvariantCulture,
                    $"x : (x / {Number(recipe.Scale)} - {Number(recipe.Mean[0])}) / {Number(recipe.Std[0])}"), RawData.FeaturesColumn);
        }
        if (recipe.PreprocessModel is { } graphPath)
        {
            chain = chain.Append(t.ApplyOnnxModel([preprocessOutput!], [preprocessInput!], graphPath));
            if (preprocessOutput != target)
                chain = chain.Append(t.CopyColumns(target, preprocessOutput!));
        }
        return chain;
    }

    private static string Number(float v) => ((decimal)v).ToString("0.0##########", CultureInfo.InvariantCulture);

    /// <summary>
    /// Runs the fitted preprocessing over <paramref name="indices"/> of <paramref name="data"/> and keeps the model inputs
    /// (and labels) in memory, reporting each row.
    /// </summary>
    public static ModelRows Materialize(MLContext context, ITransformer preprocessing, RawData data, IReadOnlyList<int> indices, string inputColumn,
        Action<int>? rowDone, CancellationToken cancel)
    {
        IDataView view = preprocessing.Transform(data.ToDataView(context, indices));
        var input = view.Schema.GetColumnOrNull(inputColumn) ?? throw new ToolException($"Preprocessing did not produce column '{inputColumn}'.");
        if (input.Type is not VectorDataViewType { ItemType: var item } || item != NumberDataViewType.Single)
            throw new ToolException($"Preprocessing produced '{inputColumn}' as {input.Type}, not a vector of Single.");
        var label = view.Schema[RawData.LabelColumn];
        var inputs = new List<float[]>(indices.Count);
        var labels = new List<uint>(indices.Count);
        using (var cursor = view.GetRowCursor([input, label]))
        {
            var getInput = cursor.GetGetter<VBuffer<float>>(input);
            var getLabel = cursor.GetGetter<uint>(label);
            VBuffer<float> buffer = default;
            uint l = 0;
            while (cursor.MoveNext())
            {
                cancel.ThrowIfCancellationRequested();
                getInput(ref buffer);
                getLabel(ref l);
                inputs.Add(buffer.DenseValues().ToArray());
                labels.Add(l);
                rowDone?.Invoke(inputs.Count);
            }
        }
        return new ModelRows(inputColumn, inputs, data.Labels is null ? null : labels);
    }
}

/// <summary>Preprocessed model inputs held in memory, with labels when the data has them.</summary>
internal sealed class ModelRows(string inputColumn, IReadOnlyList<float[]> inputs, IReadOnlyList<uint>? labels)
{
    public string InputColumn => inputColumn;

    public int Count => inputs.Count;

    public bool HasLabels => labels is not null;

    public IReadOnlyList<uint>? Labels => labels;

    public int RowElements => inputs.Count == 0 ? 0 : inputs[0].Length;

    /// <summary>Rows [start, start + count) as an IDataView: the input column (Vector&lt;Single, n&gt;) and "Label" (UInt32).</summary>
    public IDataView ToDataView(MLContext context, int start = 0, int? count = null)
    {
        int n = Math.Min(count ?? Count - start, Count - start);
        var schema = SchemaDefinition.Create(typeof(Row));
        var column = schema[nameof(Row.Input)];
        column.ColumnName = inputColumn;
        column.ColumnType = new VectorDataViewType(NumberDataViewType.Single, RowElements);
        return context.Data.LoadFromEnumerable(Enumerable.Range(start, n).Select(i => new Row { Input = inputs[i], Label = labels?[i] ?? 0 }), schema);
    }

    private sealed class Row
    {
        public float[] Input { get; set; } = [];

        public uint Label { get; set; }
    }
}

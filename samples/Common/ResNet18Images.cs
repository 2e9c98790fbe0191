using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Transforms.Image;

namespace QatMl.Samples;

/// <summary>
/// ResNet18 from NuGet (Microsoft.ML.DnnImageFeaturizer.ResNet18, copied to the output folder as
/// DnnImageModels/) and images for it: Fashion-MNIST test images turned into 224x224 RGB through
/// ML.NET's image transforms (gray replicated to three channels, bilinear resize, planar pixels in
/// 0..255), then the package's own ResNetPreprocess graph (mean-image subtraction). The result is a
/// column "Input247" (ResNet18's input, Vector&lt;Single, 150528&gt;).
/// </summary>
public static class ResNet18Images
{
    public const string InputColumn = "Input247";
    public const string OutputTensor = "Pooling395_Output_0";
    public const int InputSize = 3 * 224 * 224;

    public static string ModelPath => Find("ResNet18Onnx", "ResNet18.onnx");

    public static string PreprocessPath => Find("ResNetPrepOnnx", "ResNetPreprocess.onnx");

    private sealed class GrayImage
    {
        [ImageType(28, 28)]
        public MLImage Image { get; set; } = null!;
    }

    /// <summary>The first <paramref name="count"/> images of <paramref name="set"/> as ResNet18 inputs, materialised in memory.</summary>
    public static IDataView Load(MLContext context, FashionMnist.Set set, int count)
    {
        using OnnxModelScoringTransformer transformer = Stream(context, set, count, out IDataView inputs);
        // Keep only the model input, in memory: the transformer is disposed when this returns.
        var rows = new List<Row>(Math.Min(count, set.Count));
        DataViewSchema.Column column = inputs.Schema[InputColumn];
        using DataViewRowCursor cursor = inputs.GetRowCursor([column]);
        ValueGetter<VBuffer<float>> getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            rows.Add(new Row { Input247 = value.DenseValues().ToArray() });
        }
        return context.Data.LoadFromEnumerable(rows);
    }

    /// <summary>
    /// The same images as a lazy view: each 224x224 input is made when a cursor reaches its row, so memory does not
    /// grow with <paramref name="count"/>. The returned preprocessing transformer must outlive every cursor.
    /// </summary>
    public static OnnxModelScoringTransformer Stream(MLContext context, FashionMnist.Set set, int count, out IDataView inputs)
    {
        count = Math.Min(count, set.Count);
        var images = new List<GrayImage>(count);
        var bgra = new byte[28 * 28 * 4];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> gray = set.Images.AsSpan(i * FashionMnist.Pixels, FashionMnist.Pixels);
            for (int p = 0; p < gray.Length; p++)
            {
                bgra[4 * p] = bgra[4 * p + 1] = bgra[4 * p + 2] = gray[p];
                bgra[4 * p + 3] = 255;
            }
            images.Add(new GrayImage { Image = MLImage.CreateFromPixels(28, 28, MLPixelFormat.Bgra32, bgra) });
        }
        IDataView raw = context.Data.LoadFromEnumerable(images);
        var pixels = context.Transforms.ResizeImages("Image224", 224, 224, "Image", ImageResizingEstimator.ResizingKind.Fill)
            .Append(context.Transforms.ExtractPixels("OriginalInput", "Image224", interleavePixelColors: false));
        IDataView pixelData = pixels.Fit(raw).Transform(raw);

        // The preprocessing graph has a fixed batch of 1.
        var preprocess = new OnnxModelScoringOptions { ModelPath = PreprocessPath, BatchSize = 1, IntraOpNumThreads = 1 };
        preprocess.Outputs.Add(new OnnxColumnBinding(InputColumn, "PreprocessedInput"));
        OnnxModelScoringTransformer transformer = context.Quantization.ScoreOnnxModel(preprocess).Fit(pixelData);
        inputs = transformer.Transform(pixelData);
        return transformer;
    }

    /// <summary>A ResNet18 input row.</summary>
    public sealed class Row
    {
        [VectorType(InputSize)]
        public float[] Input247 { get; set; } = [];
    }

    private static string Find(string folder, string file)
    {
        string local = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", folder, file);
        if (File.Exists(local))
            return local;
        string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string fromCache = Path.Combine(cache, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.24.0", "tools", "DnnImageModels", folder, file);
        if (File.Exists(fromCache))
            return fromCache;
        throw new FileNotFoundException($"ResNet18 model '{file}' not found in {local} or {fromCache}: reference NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18 0.24.0.");
    }
}

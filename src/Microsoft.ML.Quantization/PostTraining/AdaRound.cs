using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Quantization.PostTraining;

/// <summary>What AdaRound did to one layer: its reconstruction error (mean over output positions of the squared output error) before and after.</summary>
/// <param name="Node">The Conv, Gemm or MatMul node.</param>
/// <param name="NearestError">The error with round-to-nearest weights.</param>
/// <param name="LearnedError">The error with the learned rounding (kept only when lower).</param>
/// <param name="Changed">Weights rounded the other way than to the nearest level.</param>
/// <param name="Weights">Weights of the layer.</param>
internal sealed record AdaRoundLayer(string Node, double NearestError, double LearnedError, int Changed, int Weights);

/// <summary>The learned integer weights by node name (what <see cref="QdqPlan.Create"/> takes) and the per-layer figures.</summary>
internal sealed record AdaRoundResult(Dictionary<string, QuantizedConstant> Weights, IReadOnlyList<AdaRoundLayer> Layers)
{
    public string Summary => Layers.Count == 0
        ? "AdaRound: no Conv/Gemm/MatMul weights below 8 bits to round."
        : $"AdaRound on {Layers.Count} layers: reconstruction error {Layers.Sum(l => l.NearestError):G4} -> {Layers.Sum(l => Math.Min(l.NearestError, l.LearnedError)):G4} " +
          $"(summed), {Layers.Sum(l => l.Changed)} of {Layers.Sum(l => l.Weights)} weights rounded the other way.";
}

/// <summary>
/// AdaRound's orchestration (no libtorch here): which layers it learns, and the rows each layer learns from. Layers are
/// taken in graph order; each one's input is read from the QDQ model with the layers before it already rounded as
/// learned (so it also absorbs the activation quantization and the earlier layers' errors), and its target is the float
/// layer's output on the float model's input. The optimisation itself is <see cref="AdaRoundOptimizer"/> (TorchSharp).
/// </summary>
internal static class AdaRound
{
    /// <summary>Op types whose constant weights AdaRound learns (Conv with 2-D kernels).</summary>
    internal static bool Supports(OnnxNode node, QuantizedConstant weight)
        => node.Domain.Length == 0 && node.OpType switch
        {
            "Conv" => weight.Source.Dims.Length == 4 && (node.GetString("auto_pad") ?? "NOTSET") == "NOTSET",
            "Gemm" => weight.Source.Dims.Length == 2 && node.GetInt("transA", 0) == 0,
            "MatMul" => weight.Source.Dims.Length == 2,
            _ => false,
        };

    /// <summary>
    /// Learns the rounding of the plan's Conv/Gemm/MatMul weights below 8 bits (those in <paramref name="only"/> when given),
    /// layer by layer in graph order, on the first <see cref="PostTrainingOptions.AdaRoundRowCount"/> rows of <paramref name="data"/>.
    /// </summary>
    public static AdaRoundResult Learn(MLContext context, OnnxModel prepared, CalibrationTable table, PostTrainingOptions options, IDataView data, string modelName,
        IReadOnlyDictionary<string, string>? keptFloat, IReadOnlyDictionary<string, QuantizationPrecision>? precisions, IReadOnlyDictionary<string, float[]>? means,
        IChannel? channel, ISet<string>? only = null, IReadOnlyDictionary<string, QuantizedConstant>? learnedBefore = null, AdaRoundOptimizer.Settings? settings = null)
    {
        var plan = QdqPlan.Create(prepared.Clone(), table, options, keptFloat, precisions, means);
        var layers = plan.ComputeNodes
            .Where(n => (only is null || only.Contains(n)) && plan.Constants.TryGetValue((n, 1), out var w) && w.Bits < 8 && Supports(plan.Node(n), w))
            .ToList();
        // Layers learned earlier (with the same plan) keep their rounding, and the layers after them read their outputs.
        var learned = learnedBefore?.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal) ?? new Dictionary<string, QuantizedConstant>(StringComparer.Ordinal);
        var report = new List<AdaRoundLayer>();
        if (layers.Count == 0)
            return new AdaRoundResult(learned, report);

        RowSample rows = RowSample.Load(context, prepared, options, data, modelName, options.AdaRoundRowCount);
        settings ??= new AdaRoundOptimizer.Settings(options.AdaRoundIterations, Seed: 0);
        foreach (string name in layers)
        {
            options.CancellationToken.ThrowIfCancellationRequested();
            // Each layer leaves its activations (hundreds of MB at ResNet18's first layers) and model copies for the GC.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            OnnxNode node = plan.Node(name);
            QuantizedConstant nearest = plan.Constants[(name, 1)];
            var (floatInput, shape) = FloatInput(context, prepared, options, rows, modelName, node.Inputs[0]);
            if (LayerColumns.Create(node, nearest, shape, 1, 0) is { Underdetermined: true } columns)
            {
                channel?.Info(MessageSensitivity.None, "{0}", $"AdaRound '{name}' ({node.OpType}, {nearest.Bits}-bit): kept round-to-nearest, {columns.InputsPerOutput} inputs per output " +
                    $"and {columns.TotalColumns} columns ({rows.Count} rows) to learn from.");
                continue;
            }
            float[] quantizedInput = QuantizedInput(context, prepared, table, options, rows, modelName, keptFloat, precisions, means, learned, name);
            // The paper's f_a: a Relu that alone reads the output zeroes what the error would otherwise count.
            var consumers = prepared.Graph.Consumers(node.Outputs[0]);
            bool relu = consumers.Count == 1 && consumers[0].OpType == "Relu" && consumers[0].Domain.Length == 0 && !prepared.Graph.IsGraphOutput(node.Outputs[0]);
            var outcome = AdaRoundOptimizer.Learn(node, nearest, floatInput, quantizedInput, shape, relu, OutputGrid(plan, name), settings);
            if (outcome.LearnedError < outcome.NearestError)
                learned[name] = nearest with { Values = outcome.Values };
            var layer = new AdaRoundLayer(name, outcome.NearestError, outcome.LearnedError, outcome.LearnedError < outcome.NearestError ? outcome.Changed : 0, nearest.Values.Length);
            report.Add(layer);
            channel?.Info(MessageSensitivity.None, "{0}", $"AdaRound '{name}' ({node.OpType}, {nearest.Bits}-bit): reconstruction error {layer.NearestError:G4} -> {layer.LearnedError:G4} " +
                $"({(learned.ContainsKey(name) ? $"{layer.Changed} of {layer.Weights} weights rounded the other way" : "kept round-to-nearest")}, {rows.Count} rows).");
        }
        return new AdaRoundResult(learned, report);
    }

    /// <summary>
    /// The quantization of the layer's output (its folded Relu's output when there is one) when it has fewer than 8 bits:
    /// at 4 bits the output grid is as coarse as the weights', so the rounding learns against it (QDrop, BRECQ).
    /// </summary>
    private static AdaRoundOptimizer.OutputGrid? OutputGrid(QdqPlan plan, string layer)
    {
        string output = plan.Folds.TryGetValue(layer, out string? fold) ? plan.Node(fold).Outputs[0] : plan.Node(layer).Outputs[0];
        if (!plan.Activations.TryGetValue(output, out var quantization) || quantization.Bits >= 8)
            return null;
        var (min, max) = QuantizationParameters.GetTypeRange(quantization.Bits, quantization.Signed);
        return new AdaRoundOptimizer.OutputGrid(quantization.Params.Scale, quantization.Params.ZeroPoint, min, max);
    }

    /// <summary>The float model's values of <paramref name="tensor"/> on the rows, and their shape (rows first).</summary>
    private static (float[] Values, long[] Shape) FloatInput(MLContext context, OnnxModel prepared, PostTrainingOptions options, RowSample rows, string modelName, string tensor)
    {
        int k = Array.FindIndex(rows.Inputs, i => i.TensorName == tensor);
        if (k >= 0 && rows.Data[k] is float[] values && rows.Inputs[k].Batched)
            return (values[..(rows.Count * rows.Inputs[k].RowSize)], [rows.Count, .. rows.Inputs[k].RowDims.Select(d => (long)d)]);
        using var runner = new SampleRunner(context, prepared.Clone(), 0, options, modelName, rows, [tensor]);
        float[] run = runner.Run(null)[0];
        return (run, [rows.Count, .. runner.OutputShapes[0].Skip(1)]);
    }

    /// <summary>The input the layer reads in the QDQ model (its DequantizeLinear's output) with the layers learned so far.</summary>
    private static float[] QuantizedInput(MLContext context, OnnxModel prepared, CalibrationTable table, PostTrainingOptions options, RowSample rows, string modelName,
        IReadOnlyDictionary<string, string>? keptFloat, IReadOnlyDictionary<string, QuantizationPrecision>? precisions, IReadOnlyDictionary<string, float[]>? means,
        Dictionary<string, QuantizedConstant> learned, string layer)
    {
        var plan = QdqPlan.Create(prepared.Clone(), table, options, keptFloat, precisions, means, learned);
        QdqResult written = QdqWriter.Write(plan);
        string input = plan.Node(layer).Inputs[0];
        using var runner = new SampleRunner(context, written.Model, 0, options, modelName, rows, [input]);
        return runner.Run(null)[0];
    }
}

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Onnx;

namespace QatMl.Tool.Inspect;

/// <summary>How ONNX Runtime's graph optimizer treats a QDQ model, read from the optimized graph it writes out.</summary>
/// <param name="IntegerOps">Fused integer kernels by op type (QLinearConv, QGemm, ...), with their counts.</param>
/// <param name="IntegerMovement">Data movement and pooling left on integer tensors (their Q/DQ pair dropped).</param>
/// <param name="Unfused">Float nodes still fed by a DequantizeLinear: quantized data converted back to float around them.</param>
/// <param name="FloatOps">Other float nodes by op type.</param>
internal sealed record FusionReport(
    IReadOnlyDictionary<string, int> IntegerOps,
    IReadOnlyDictionary<string, int> IntegerMovement,
    IReadOnlyList<(string Node, string OpType)> Unfused,
    IReadOnlyDictionary<string, int> FloatOps,
    int QuantizeLinear,
    int DequantizeLinear);

/// <summary>
/// Asks ONNX Runtime itself: a session at the extended optimization level (where its QDQ selector/action transformer
/// runs: DQ -> Conv/MatMul/Gemm/Add/Mul/Concat/AveragePool/... -> Q become QLinear* or QGemm kernels; Q/DQ around
/// MaxPool, Reshape, Transpose, Flatten, Squeeze, Unsqueeze are dropped) writes the optimized graph, which is read back.
/// </summary>
internal static class OrtFusions
{
    /// <summary>Op types ONNX Runtime's QDQ transformer fuses into integer kernels (documentation; the result comes from ORT).</summary>
    public static readonly string[] FusablePatterns =
    [
        "Conv -> QLinearConv", "MatMul -> QLinearMatMul (or MatMulIntegerToFloat)", "Gemm -> QGemm", "Add -> QLinearAdd", "Mul -> QLinearMul",
        "Concat -> QLinearConcat", "AveragePool / GlobalAveragePool -> QLinear*", "Sigmoid, LeakyRelu, Softmax -> QLinear*",
        "MaxPool, Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Gather, Resize: Q/DQ dropped (run on int8)", "Relu / Clip after a quantized op: folded into its Q",
    ];

    private static readonly HashSet<string> IntegerKernels = new(StringComparer.Ordinal)
    {
        "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool",
        "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearWhere", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger",
        "DynamicQuantizeMatMul", "QLinearReduceMean", "QAttention", "NhwcQLinearConv",
    };

    public static FusionReport Analyze(byte[] qdqModel, int threads)
    {
        string optimized = Path.Combine(Path.GetTempPath(), $"qatml-ort-optimized-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimized, IntraOpNumThreads = Math.Max(threads, 1) })
            using (new InferenceSession(qdqModel, options))
            {
            }
            OnnxModel model = OnnxModel.Parse(File.ReadAllBytes(optimized), sourceName: "ONNX Runtime's optimized graph");
            return Classify(model.Graph);
        }
        finally
        {
            File.Delete(optimized);
        }
    }

    private static FusionReport Classify(OnnxGraph graph)
    {
        var producers = graph.ProducerMap();
        var nodes = graph.TopologicalOrder();
        var integerTensors = new HashSet<string>(StringComparer.Ordinal);
        var integerOps = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var movement = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var floatOps = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var unfused = new List<(string, string)>();
        int q = 0, dq = 0;
        foreach (var node in nodes)
        {
            string op = node.OpType;
            bool integerInput = node.Inputs.Count > 0 && integerTensors.Contains(node.Inputs[0]);
            if (op == "QuantizeLinear")
            {
                q++;
                integerTensors.UnionWith(node.Outputs);
            }
            else if (op == "DequantizeLinear")
                dq++;
            else if (IntegerKernels.Contains(op))
            {
                Count(integerOps, op);
                if (op != "MatMulIntegerToFloat")
                    integerTensors.UnionWith(node.Outputs);
            }
            else if (integerInput)
            {
                Count(movement, op);
                integerTensors.UnionWith(node.Outputs);
            }
            else
            {
                Count(floatOps, op);
                if (node.Inputs.Any(i => producers.TryGetValue(i, out var p) && p.OpType == "DequantizeLinear"))
                    unfused.Add((node.Name.Length > 0 ? node.Name : node.Outputs.FirstOrDefault() ?? "?", op));
            }
        }
        return new FusionReport(integerOps, movement, unfused, floatOps, q, dq);
    }

    private static void Count(SortedDictionary<string, int> counts, string key) => counts[key] = counts.GetValueOrDefault(key) + 1;
}

using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>How the output of a quantized op relates to its input quantization.</summary>
internal enum OutputQuantization
{
    /// <summary>The output gets its own calibrated range.</summary>
    Own,

    /// <summary>The output keeps its (first) input's scale and zero point (MaxPool, Reshape, Resize...): ONNX Runtime then drops the Q/DQ around the op.</summary>
    SharesInput,

    /// <summary>Inputs and output share one range, the union of theirs (Concat): QLinearConcat then only copies.</summary>
    Union,

    /// <summary>The output is not a float tensor (ArgMax) and is not quantized.</summary>
    None,
}

/// <summary>
/// What quantizing one op means: which inputs are activations read through a DequantizeLinear, which float
/// initializers become int8 constants, where its weight and bias are, and how its output is quantized. The QDQ
/// writer and the calibration plan share these rules, so the table holds exactly the tensors the writer needs.
/// </summary>
/// <param name="ActivationInputs">Inputs that are quantized when they are float activations (null: every input).</param>
/// <param name="ConstantInputs">Float initializer inputs quantized to int8 per tensor (null: every input that is not the weight or bias).</param>
/// <param name="WeightInput">The weight input (per output channel), or null.</param>
/// <param name="BiasInput">The bias input (int32 at scale s_in * s_w), or null.</param>
/// <param name="Output">How the output is quantized.</param>
/// <param name="AllOutputs">Every float output is quantized (Split); otherwise only the first.</param>
internal sealed record OpRule(int[]? ActivationInputs, int[]? ConstantInputs, int? WeightInput, int? BiasInput, OutputQuantization Output, bool AllOutputs = false)
{
    public bool IsActivationInput(int index) => ActivationInputs is null || Array.IndexOf(ActivationInputs, index) >= 0;

    public bool IsConstantInput(int index)
        => index != WeightInput && index != BiasInput && (ConstantInputs is null || Array.IndexOf(ConstantInputs, index) >= 0);
}

/// <summary>The ops the QDQ writer quantizes (at least ONNX Runtime's quantizer registry) and their rules.</summary>
internal static class QuantizableOps
{
    private static readonly int[] First = [0];
    private static readonly int[] None = [];

    private static readonly OpRule Weighted = new(First, None, 1, 2, OutputQuantization.Own);
    private static readonly OpRule Elementwise = new(null, null, null, null, OutputQuantization.Own);
    private static readonly OpRule Unary = new(First, None, null, null, OutputQuantization.Own);
    private static readonly OpRule PassThrough = new(First, None, null, null, OutputQuantization.SharesInput);

    private static readonly Dictionary<string, OpRule> Rules = new(StringComparer.Ordinal)
    {
        ["Conv"] = Weighted,
        ["ConvTranspose"] = Weighted,
        ["Gemm"] = new([0, 1], None, 1, 2, OutputQuantization.Own),
        ["MatMul"] = new([0, 1], None, 1, null, OutputQuantization.Own),
        ["Add"] = Elementwise,
        ["Mul"] = Elementwise,
        ["Where"] = new([1, 2], [1, 2], null, null, OutputQuantization.Own),
        ["Concat"] = new(null, null, null, null, OutputQuantization.Union),
        ["Split"] = new(First, None, null, null, OutputQuantization.SharesInput, AllOutputs: true),
        ["Resize"] = PassThrough,
        ["Pad"] = PassThrough,
        ["MaxPool"] = PassThrough,
        ["GlobalMaxPool"] = PassThrough,
        ["Transpose"] = PassThrough,
        ["Reshape"] = PassThrough,
        ["Squeeze"] = PassThrough,
        ["Unsqueeze"] = PassThrough,
        ["Flatten"] = PassThrough,
        ["Slice"] = PassThrough,
        ["Expand"] = PassThrough,
        ["DepthToSpace"] = PassThrough,
        ["SpaceToDepth"] = PassThrough,
        // Gather over activations passes them through; over a float table it is a weight-only quantized embedding.
        ["Gather"] = new(First, First, null, null, OutputQuantization.SharesInput),
        ["AveragePool"] = Unary,
        ["GlobalAveragePool"] = Unary,
        ["Relu"] = Unary,
        ["Clip"] = Unary,
        ["LeakyRelu"] = Unary,
        ["Sigmoid"] = Unary,
        ["HardSigmoid"] = Unary,
        ["HardSwish"] = Unary,
        ["Tanh"] = Unary,
        ["Softmax"] = Unary,
        ["InstanceNormalization"] = Unary,
        ["LayerNormalization"] = Unary,
        ["ArgMax"] = new(First, None, null, null, OutputQuantization.None),
    };

    /// <summary>Every op type the writer can quantize.</summary>
    public static IReadOnlyCollection<string> All => Rules.Keys;

    /// <summary>Ops whose output keeps the input's quantization.</summary>
    public static bool IsPassThrough(string opType) => Rules.TryGetValue(opType, out var r) && r.Output == OutputQuantization.SharesInput;

    public static OpRule? Get(OnnxNode node) => node.Domain.Length == 0 && Rules.TryGetValue(node.OpType, out var rule) ? rule : null;

    /// <summary>The output-channel axis of a weight, or null when the op gives it none (then per tensor).</summary>
    public static int? WeightAxis(OnnxNode node, int input, OnnxTensor tensor)
    {
        int rank = tensor.Dims.Length;
        if (input != 1 || rank < 2)
            return null;
        return node.OpType switch
        {
            "Conv" => 0,                                                   // [M, C/g, kH, kW]
            "ConvTranspose" => node.GetInt("group", 1) == 1 ? 1 : null,    // [C, M/g, kH, kW]: M/g channels match the bias only for group 1
            "Gemm" => node.GetInt("transB", 0) != 0 ? 0 : 1,              // B [N, K] or [K, N]
            "MatMul" => rank - 1,                                          // B [..., K, N]
            _ => null,
        };
    }

    /// <summary>
    /// Tensors whose values do not depend on the input data: computed only from initializers, Constant nodes and the
    /// shapes of other tensors (Shape, Size). Such subgraphs (Reshape targets, Concat of int64 dims, position ids)
    /// are never calibrated or quantized.
    /// </summary>
    public static HashSet<string> DataIndependentTensors(OnnxGraph graph)
    {
        var initializers = graph.Initializers.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var result = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.TopologicalOrder())
        {
            var inputs = node.Inputs.Where(i => i.Length > 0).ToList();
            bool independent = node.Domain.Length == 0 && node.OpType is "Shape" or "Size" or "Constant"
                               || (OnnxGraph.SubgraphOuterInputs(node.Proto).All(s => initializers.Contains(s) || result.Contains(s))
                                   && node.Proto.Attribute.All(a => a.G is null && a.Graphs.Count == 0)
                                   && inputs.All(i => initializers.Contains(i) || result.Contains(i)));
            if (independent)
                foreach (string o in node.Outputs.Where(o => o.Length > 0))
                    result.Add(o);
        }
        return result;
    }
}

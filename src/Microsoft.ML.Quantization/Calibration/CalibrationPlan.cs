using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>One weight to calibrate: the initializer and, when calibrated per channel, its channel axis.</summary>
internal sealed record PlannedWeight(string Name, OnnxTensor Tensor, int? Axis, CalibrationOptions Options);

/// <summary>One activation to observe while the model runs.</summary>
internal sealed record PlannedActivation(string Name, CalibrationOptions Options, bool IsGraphInput);

/// <summary>An activation that takes the entry of <paramref name="Source"/> (an observed activation) instead of its own.</summary>
internal sealed record SharedActivation(string Name, string Source);

/// <summary>
/// Which tensors of a (prepared) float graph get calibrated: the float inputs and outputs of the quantizable ops,
/// and their float initializers, weights per channel along the axis the op gives them.
/// </summary>
internal sealed class CalibrationPlan
{
    private CalibrationPlan(List<PlannedActivation> activations, List<SharedActivation> shared, List<PlannedWeight> weights, List<string> order)
    {
        Activations = activations;
        Shared = shared;
        Weights = weights;
        Order = order;
    }

    public IReadOnlyList<PlannedActivation> Activations { get; }

    /// <summary>Outputs of pass-through ops, which share their input's entry.</summary>
    public IReadOnlyList<SharedActivation> Shared { get; }

    /// <summary>Every tensor of the table, in graph order.</summary>
    public IReadOnlyList<string> Order { get; }

    public IReadOnlyList<PlannedWeight> Weights { get; }

    /// <summary>Activation functions ONNX Runtime fuses into the preceding Conv/Gemm in a QDQ graph.</summary>
    private static readonly HashSet<string> FusedActivations = ["Relu", "Clip"];

    /// <summary>Ops producing the tensors a quantized op consumes as its accumulation input.</summary>
    private static readonly HashSet<string> FusingProducers = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"];

    /// <summary>The rule of ops the writer has no rule for but the options list: every float input and the first output.</summary>
    private static readonly OpRule AnyOp = new(null, null, null, null, OutputQuantization.Own);

    public static CalibrationPlan Create(OnnxModel model, CalibrationEstimatorOptions options)
    {
        var graph = model.Graph;
        var index = graph.Index();
        var consumers = graph.ConsumerMap();
        var initializers = graph.Initializers.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var graphInputs = graph.RuntimeInputs.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var independent = QuantizableOps.DataIndependentTensors(graph);
        var activations = new List<PlannedActivation>();
        var shared = new List<SharedActivation>();
        var sharedRoots = new Dictionary<string, string>(StringComparer.Ordinal);
        var weights = new List<PlannedWeight>();
        var order = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        // Pre-activation tensors the quantized graph never materialises: skipped as outputs and as inputs.
        foreach (var node in graph.Nodes)
            foreach (string output in node.Outputs)
                if (output.Length > 0 && IsFusedIntoActivation(index, node, output, consumers) && !options.TensorOverrides.ContainsKey(output))
                    seen.Add(output);

        void AddActivation(string name)
        {
            // A chain of pass-through ops (MaxPool -> Flatten -> ...) is walked up to the first tensor with a range of
            // its own (or one planned already), then planned from there down; iterative, so any length is fine.
            var chain = new List<(string Name, string? Source)>();
            for (string? current = name; current is not null && seen.Add(current);)
            {
                string? source = options.SharePassThroughRanges && !options.TensorOverrides.ContainsKey(current)
                    ? PassThroughSource(index, current, initializers) : null;
                chain.Add((current, source));
                current = source;
            }
            for (int i = chain.Count - 1; i >= 0; i--)
            {
                var (tensor, source) = chain[i];
                if (source is null)
                {
                    activations.Add(new PlannedActivation(tensor, OptionsFor(options, tensor, options.Activations), graphInputs.Contains(tensor)));
                }
                else
                {
                    // Every tensor of a chain points at its first observed tensor.
                    string root = sharedRoots.GetValueOrDefault(source, source);
                    sharedRoots[tensor] = root;
                    shared.Add(new SharedActivation(tensor, root));
                }
                order.Add(tensor);
            }
        }

        foreach (var node in graph.TopologicalOrder())
        {
            if (node.Domain.Length != 0 || !options.OpTypes.Contains(node.OpType))
                continue;
            // Shape arithmetic and other data-independent subgraphs are never quantized.
            if (node.Outputs.Where(o => o.Length > 0).All(independent.Contains))
                continue;
            OpRule rule = QuantizableOps.Get(node) ?? AnyOp;
            for (int i = 0; i < node.Inputs.Count; i++)
            {
                string name = node.Inputs[i];
                if (name.Length == 0 || seen.Contains(name))
                    continue;
                if (initializers.TryGetValue(name, out var tensor))
                {
                    if (tensor.ElementType != OnnxElementType.Float || (i != rule.WeightInput && !rule.IsConstantInput(i)))
                        continue;
                    seen.Add(name);
                    int? axis = options.WeightsPerChannel && i == rule.WeightInput ? QuantizableOps.WeightAxis(node, i, tensor) : null;
                    weights.Add(new PlannedWeight(name, tensor, axis, OptionsFor(options, name, options.Weights)));
                    order.Add(name);
                }
                else if (rule.IsActivationInput(i) && !independent.Contains(name) && index.ElementTypeOf(name) == OnnxElementType.Float)
                {
                    AddActivation(name);
                }
            }
            if (rule.Output == OutputQuantization.None)
                continue;
            foreach (string name in rule.AllOutputs ? node.Outputs : node.Outputs.Take(1))
            {
                if (name.Length == 0 || seen.Contains(name) || index.ElementTypeOf(name) != OnnxElementType.Float)
                    continue;
                AddActivation(name);
            }
        }
        return new CalibrationPlan(activations, shared, weights, order);
    }

    /// <summary>The input of the pass-through op producing <paramref name="name"/>, when it is a float activation.</summary>
    private static string? PassThroughSource(GraphIndex graph, string name, Dictionary<string, OnnxTensor> initializers)
    {
        var producer = graph.Producer(name);
        if (producer is null || QuantizableOps.Get(producer) is not { Output: OutputQuantization.SharesInput } rule || (!rule.AllOutputs && producer.Outputs[0] != name))
            return null;
        string input = producer.Inputs.Count > 0 ? producer.Inputs[0] : "";
        return input.Length > 0 && !initializers.ContainsKey(input) && graph.ElementTypeOf(input) == OnnxElementType.Float ? input : null;
    }

    /// <summary>
    /// A Conv/Gemm/MatMul/Add output read only by a Relu or Clip is never quantized: ONNX Runtime fuses the pair,
    /// and only the activation's output gets a Q/DQ. Observing it would also stop that fusion while calibrating.
    /// </summary>
    private static bool IsFusedIntoActivation(GraphIndex graph, OnnxNode node, string output, Dictionary<string, List<OnnxNode>> consumers)
        => FusingProducers.Contains(node.OpType)
           && !graph.IsGraphOutput(output)
           && consumers.TryGetValue(output, out var users) && users.Count == 1
           && FusedActivations.Contains(users[0].OpType) && users[0].Domain.Length == 0
           && (users[0].OpType == "Relu" || ClipsAtZero(graph, users[0]))
           && node.Domain.Length == 0;

    /// <summary>A Clip whose lower bound is a constant 0 (Relu6): the only Clip the quantizer folds.</summary>
    internal static bool ClipsAtZero(GraphIndex graph, OnnxNode clip)
        => clip.Inputs.Count > 1 && clip.Inputs[1].Length > 0 && graph.TryGetInitializer(clip.Inputs[1], out var lo)
           && lo.ElementType == OnnxElementType.Float && lo.ElementCount == 1 && lo.ToFloatArray()[0] == 0;

    /// <summary>The output-channel axis of a weight, or null when the op gives it none (then per tensor).</summary>
    internal static int? WeightAxis(OnnxNode node, int input, OnnxTensor tensor) => QuantizableOps.WeightAxis(node, input, tensor);

    private static CalibrationOptions OptionsFor(CalibrationEstimatorOptions options, string tensor, CalibrationOptions fallback)
        => options.TensorOverrides.TryGetValue(tensor, out var specific) ? specific : fallback;
}

using Microsoft.ML.Quantization.Onnx;
using TorchSharp;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// A trainable TorchSharp module built from a float ONNX graph: float initializers become parameters (BatchNormalization
/// statistics buffers), nodes run in topological order through TorchSharp functions. Optional hooks fake-quantize
/// activations (by tensor name) and weights (by initializer name), and a Conv followed by a BatchNormalization can
/// run folded (weights scaled by the BN statistics and fake-quantized as the deployed, folded model will be).
/// </summary>
internal sealed class OnnxTorchModule : nn.Module<Tensor, Tensor>
{
    private readonly OnnxModel _model;
    private readonly List<OnnxNode> _order;
    private readonly Dictionary<string, Tensor> _values = new(StringComparer.Ordinal);   // parameters, buffers, constants
    private readonly string _input, _output;

    internal OnnxTorchModule(OnnxModel model, string name = "onnx") : base(name)
    {
        _model = model;
        TrainableGraph.Check(model);
        var g = model.Graph;
        _input = g.RuntimeInputs[0].Name;
        _output = g.Outputs[0].Name;
        _order = g.TopologicalOrder().ToList();

        var statistics = g.Nodes.Where(n => n.OpType == "BatchNormalization").SelectMany(n => n.Inputs.Skip(3).Take(2)).ToHashSet(StringComparer.Ordinal);
        int index = 0;
        foreach (var init in g.Initializers)
        {
            string safe = $"p{index++}";
            Tensor t = ToTorch(init);
            if (init.ElementType == OnnxElementType.Float && !statistics.Contains(init.Name))
            {
                var p = new Parameter(t, requires_grad: true);
                register_parameter(safe, p);
                _values[init.Name] = p;
            }
            else
            {
                register_buffer(safe, t);
                _values[init.Name] = t;
            }
            ParameterNames[init.Name] = safe;
        }
    }

    /// <summary>ONNX initializer name -> registered parameter/buffer name.</summary>
    internal Dictionary<string, string> ParameterNames { get; } = new(StringComparer.Ordinal);

    /// <summary>Applied to a tensor right after it is computed (fake quantization of activations), by tensor name.</summary>
    internal Dictionary<string, Func<Tensor, Tensor>> ActivationHooks { get; } = new(StringComparer.Ordinal);

    /// <summary>Applied to a weight before its op uses it (fake quantization of weights), by initializer name; gets the (possibly BN-folded) weight.</summary>
    internal Dictionary<string, Func<Tensor, Tensor>> WeightHooks { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Applied to a Conv/Gemm bias (by node name) with the float weight it goes with (BN-folded when folding): the
    /// int32 bias quantization of the deployed model, scale s_in * s_w.
    /// </summary>
    internal Dictionary<string, Func<Tensor, Tensor, Tensor>> BiasHooks { get; } = new(StringComparer.Ordinal);

    /// <summary>Run each Conv -> BatchNormalization pair folded with the running statistics (frozen BN), as deployed.</summary>
    internal bool FoldBatchNorm { get; set; }

    /// <summary>The current value of an initializer (trained parameter or buffer).</summary>
    internal Tensor Value(string initializer) => _values[initializer];

    public override Tensor forward(Tensor input)
    {
        var env = new Dictionary<string, Tensor>(StringComparer.Ordinal) { [_input] = Hook(_input, input) };
        var absorbed = new HashSet<OnnxNode>();
        foreach (var node in _order)
        {
            if (absorbed.Contains(node))
                continue;
            Tensor Get(int i) => node.Inputs[i] is { Length: > 0 } n
                ? env.TryGetValue(n, out var v) ? v : _values.TryGetValue(n, out var c) ? c : throw new InvalidOperationException($"{node.Describe}: input '{n}' has no value.")
                : throw new InvalidOperationException($"{node.Describe}: input {i} is missing.");
            bool Has(int i) => node.Inputs.Count > i && node.Inputs[i].Length > 0;

            Tensor result;
            switch (node.OpType)
            {
                case "Conv":
                {
                    Tensor w = Get(1);
                    Tensor? b = Has(2) ? Get(2) : null;
                    string output = node.Outputs[0];
                    if (FoldBatchNorm && SingleBatchNorm(node) is { } bn)
                    {
                        (w, b) = Fold(w, b, bn);
                        absorbed.Add(bn);
                        output = bn.Outputs[0];
                    }
                    if (b is not null && BiasHooks.TryGetValue(node.Name, out var conv))
                        b = conv(b, w);
                    w = WeightHook(node.Inputs[1], w);
                    result = Conv(node, Get(0), w, b);
                    env[output] = Hook(output, result);
                    continue;
                }
                case "ConvTranspose":
                {
                    long[] strides = node.GetInts("strides") ?? [1, 1];
                    long[] pads = node.GetInts("pads") ?? [0, 0, 0, 0];
                    long[] outPad = node.GetInts("output_padding") ?? [0, 0];
                    long[] dil = node.GetInts("dilations") ?? [1, 1];
                    result = F.conv_transpose2d(Get(0), WeightHook(node.Inputs[1], Get(1)), Has(2) ? Get(2) : null, strides,
                        [pads[0], pads[1]], outPad, dilation: dil, groups: node.GetInt("group", 1));
                    break;
                }
                case "Gemm":
                {
                    Tensor a = Get(0), bw = WeightHook(node.Inputs[1], Get(1));
                    if (node.GetInt("transA", 0) != 0) a = a.t();
                    if (node.GetInt("transB", 0) != 0) bw = bw.t();
                    result = a.matmul(bw) * node.GetFloat("alpha", 1f);
                    if (Has(2))
                    {
                        Tensor c = Get(2);
                        if (BiasHooks.TryGetValue(node.Name, out var gemm))
                            c = gemm(c, Get(1));
                        result = result + c * node.GetFloat("beta", 1f);
                    }
                    break;
                }
                case "MatMul": result = Get(0).matmul(WeightHook(node.Inputs[1], Get(1))); break;
                case "Add": result = Get(0) + Get(1); break;
                case "Sub": result = Get(0) - Get(1); break;
                case "Mul": result = Get(0) * Get(1); break;
                case "Div": result = Get(0) / Get(1); break;
                case "Relu": result = F.relu(Get(0)); break;
                case "Clip":
                {
                    Tensor x = Get(0);
                    float lo = Has(1) ? Get(1).item<float>() : float.MinValue, hi = Has(2) ? Get(2).item<float>() : float.MaxValue;
                    result = x.clamp(lo, hi);
                    break;
                }
                case "LeakyRelu": result = F.leaky_relu(Get(0), node.GetFloat("alpha", 0.01f)); break;
                case "Sigmoid": result = Get(0).sigmoid(); break;
                case "Tanh": result = Get(0).tanh(); break;
                case "HardSigmoid": result = (Get(0) * node.GetFloat("alpha", 0.2f) + node.GetFloat("beta", 0.5f)).clamp(0, 1); break;
                case "HardSwish": result = Get(0) * (Get(0) / 6f + 0.5f).clamp(0, 1); break;
                case "BatchNormalization":
                    result = F.batch_norm(Get(0), Get(3), Get(4), Get(1), Get(2), training && !FoldBatchNorm, 1 - node.GetFloat("momentum", 0.9f), node.GetFloat("epsilon", 1e-5f));
                    break;
                case "MaxPool":
                {
                    long[] k = node.GetInts("kernel_shape")!;
                    var (x, pads) = PadIfAsymmetric(Get(0), node.GetInts("pads"), float.NegativeInfinity);
                    result = F.max_pool2d(x, k, node.GetInts("strides") ?? k.Select(_ => 1L).ToArray(), pads,
                        node.GetInts("dilations") ?? [1, 1], node.GetInt("ceil_mode", 0) != 0);
                    break;
                }
                case "AveragePool":
                {
                    long[] k = node.GetInts("kernel_shape")!;
                    long[] p = node.GetInts("pads") ?? [0, 0, 0, 0];
                    if (p[0] != p[2] || p[1] != p[3])
                        throw new NotSupportedException($"{node.Describe}: asymmetric pads on AveragePool are not supported.");
                    result = F.avg_pool2d(Get(0), k, node.GetInts("strides") ?? k.Select(_ => 1L).ToArray(), [p[0], p[1]],
                        node.GetInt("ceil_mode", 0) != 0, node.GetInt("count_include_pad", 0) != 0);
                    break;
                }
                case "GlobalAveragePool": result = Get(0).mean([2L, 3L], keepdim: true); break;
                case "Flatten":
                {
                    Tensor x = Get(0);
                    long axis = node.GetInt("axis", 1);
                    if (axis < 0) axis += x.dim();
                    long outer = x.shape.Take((int)axis).Aggregate(1L, (p, d) => p * d);
                    result = x.reshape(outer, -1);
                    break;
                }
                case "Reshape":
                {
                    Tensor x = Get(0);
                    long[] shape = Get(1).data<long>().ToArray();
                    for (int i = 0; i < shape.Length; i++)
                        if (shape[i] == 0 && node.GetInt("allowzero", 0) == 0)
                            shape[i] = x.shape[i];
                    result = x.reshape(shape);
                    break;
                }
                case "Transpose":
                {
                    Tensor x = Get(0);
                    long[] perm = node.GetInts("perm") ?? Enumerable.Range(0, (int)x.dim()).Reverse().Select(i => (long)i).ToArray();
                    result = x.permute(perm);
                    break;
                }
                case "Concat": result = torch.cat(node.Inputs.Select((_, i) => Get(i)).ToList(), node.GetInt("axis", 1)); break;
                case "Squeeze":
                {
                    Tensor x = Get(0);
                    long[] axes = Has(1) ? Get(1).data<long>().ToArray() : node.GetInts("axes") ?? [];
                    result = axes.Length == 0 ? x.squeeze() : axes.Select(a => a < 0 ? a + x.dim() : a).OrderDescending().Aggregate(x, (t, a) => t.squeeze(a));
                    break;
                }
                case "Unsqueeze":
                {
                    Tensor x = Get(0);
                    long[] axes = Has(1) ? Get(1).data<long>().ToArray() : node.GetInts("axes")!;
                    long rank = x.dim() + axes.Length;
                    result = axes.Select(a => a < 0 ? a + rank : a).Order().Aggregate(x, (t, a) => t.unsqueeze(a));
                    break;
                }
                case "Softmax": result = F.softmax(Get(0), node.GetInt("axis", -1)); break;
                case "Dropout": case "Identity": result = Get(0).alias(); break;
                case "Constant": result = ToTorch(node.GetTensor("value") ?? throw new NotSupportedException($"{node.Describe}: only 'value' Constants are supported.")); break;
                default: throw new NotSupportedException($"{node.Describe}: op {node.OpType} is not supported.");
            }
            env[node.Outputs[0]] = Hook(node.Outputs[0], result);
        }
        return env[_output];
    }

    private Tensor Hook(string name, Tensor t) => ActivationHooks.TryGetValue(name, out var h) ? h(t) : t;

    private Tensor WeightHook(string name, Tensor w) => WeightHooks.TryGetValue(name, out var h) ? h(w) : w;

    /// <summary>The BatchNormalization that alone reads this Conv's output, if any.</summary>
    internal OnnxNode? SingleBatchNorm(OnnxNode conv)
    {
        var users = _model.Graph.Consumers(conv.Outputs[0]);
        return users.Count == 1 && users[0].OpType == "BatchNormalization" && !_model.Graph.IsGraphOutput(conv.Outputs[0]) ? users[0] : null;
    }

    /// <summary>W * gamma / sqrt(var + eps) per output channel, and the bias (b - mean) * gamma / sqrt(var + eps) + beta.</summary>
    private (Tensor W, Tensor B) Fold(Tensor w, Tensor? b, OnnxNode bn)
    {
        Tensor gamma = _values[bn.Inputs[1]], beta = _values[bn.Inputs[2]], mean = _values[bn.Inputs[3]], variance = _values[bn.Inputs[4]];
        Tensor factor = gamma / (variance + bn.GetFloat("epsilon", 1e-5f)).sqrt();
        Tensor folded = w * factor.reshape(-1, 1, 1, 1);
        Tensor bias = ((b ?? torch.zeros_like(mean)) - mean) * factor + beta;
        return (folded, bias);
    }

    private static Tensor Conv(OnnxNode node, Tensor x, Tensor w, Tensor? b)
    {
        long[] strides = node.GetInts("strides") ?? [1, 1];
        long[] dil = node.GetInts("dilations") ?? [1, 1];
        long[]? pads = node.GetInts("pads");
        if (node.GetString("auto_pad") is { } autoPad && autoPad != "NOTSET")
            throw new NotSupportedException($"{node.Describe}: auto_pad={autoPad} is not supported; use explicit pads.");
        var (padded, symmetric) = PadIfAsymmetric(x, pads, 0f);
        return F.conv2d(padded, w, b, strides, symmetric, dil, node.GetInt("group", 1));
    }

    /// <summary>Symmetric ONNX pads [t, l, b, r] go to the op; asymmetric ones are applied explicitly first.</summary>
    private static (Tensor X, long[] Pads) PadIfAsymmetric(Tensor x, long[]? pads, float value)
    {
        if (pads is null)
            return (x, [0, 0]);
        if (pads[0] == pads[2] && pads[1] == pads[3])
            return (x, [pads[0], pads[1]]);
        return (F.pad(x, [pads[1], pads[3], pads[0], pads[2]], value: value), [0, 0]);
    }

    internal static Tensor ToTorch(OnnxTensor t)
    {
        long[] dims = t.Dims;
        return t.ElementType switch
        {
            OnnxElementType.Float => torch.tensor(t.ToFloatArray(), dims),
            OnnxElementType.Int64 => torch.tensor(t.ToInt64Array(), dims),
            OnnxElementType.Int32 => torch.tensor(t.ToInt32Array(), dims),
            _ => throw new NotSupportedException($"Initializer '{t.Name}' of type {t.ElementType} cannot be used in training."),
        };
    }
}

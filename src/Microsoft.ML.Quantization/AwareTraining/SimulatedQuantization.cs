using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using TorchSharp;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// The fake quantization of one training run, hooked into an <see cref="OnnxTorchModule"/> at exactly the tensors the
/// QDQ writer quantizes: a <see cref="FakeQuantizer"/> per activation the calibration table observes, per-channel
/// symmetric weights (max|w| / qmax, or learned step sizes), and biases as the deployed int32. Owns the quantizers
/// and learned scales (disposed with it); the switches follow the training schedule.
/// </summary>
internal sealed class SimulatedQuantization : IDisposable
{
    private SimulatedQuantization() { }

    /// <summary>No quantization (a float fine-tune).</summary>
    public static SimulatedQuantization None() => new();

    /// <summary>Activation quantizers by tensor name, in the calibration table's order.</summary>
    public Dictionary<string, FakeQuantizer> Activations { get; } = new(StringComparer.Ordinal);

    /// <summary>Width and channel axis of each fake-quantized weight, by initializer name.</summary>
    public Dictionary<string, (int Bits, int? Axis)> Weights { get; } = new(StringComparer.Ordinal);

    /// <summary>Learned per-channel (or per-tensor) weight step sizes, by weight initializer name (LSQ for weights).</summary>
    public Dictionary<string, Parameter> WeightScales { get; } = new(StringComparer.Ordinal);

    private bool WeightsEnabled { get; set; }

    private int? BitsOverride { get; set; }

    /// <summary>Everything the optimizer trains besides the module's own parameters, in a fixed order.</summary>
    public IEnumerable<Parameter> Parameters
        => Activations.Values.SelectMany(q => q.parameters()).Concat(WeightScales.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value));

    /// <summary>Moving-average observers watch batches (until the observer freeze epoch).</summary>
    public void SetObserving(bool observing)
    {
        foreach (var q in Activations.Values)
            q.ObserverEnabled = observing;
    }

    /// <summary>Fake quantization on or off (float warm-up), with a wider width for now (gradual bit width) or null.</summary>
    public void SetQuantizing(bool quantizing, int? bitsOverride)
    {
        WeightsEnabled = quantizing;
        BitsOverride = bitsOverride;
        foreach (var q in Activations.Values)
            (q.FakeQuantEnabled, q.BitsOverride) = (quantizing, bitsOverride);
    }

    /// <summary>As deployed: observers frozen, every quantizer on at its own width.</summary>
    public void SetDeployed()
    {
        SetObserving(false);
        SetQuantizing(true, null);
    }

    /// <summary>Writes the range state (observers, learned activation and weight scales) for a checkpoint, in a fixed order.</summary>
    public void WriteState(BinaryWriter writer)
    {
        foreach (var q in Activations.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            q.Value.WriteState(writer);
        using var scope = torch.NewDisposeScope();
        foreach (var ws in WeightScales.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            foreach (float v in ws.Value.detach().data<float>().ToArray())
                writer.Write(v);
    }

    /// <summary>Restores what <see cref="WriteState"/> wrote.</summary>
    public void ReadState(BinaryReader reader)
    {
        foreach (var q in Activations.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            q.Value.ReadState(reader);
        foreach (var ws in WeightScales.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var values = new float[ws.Value.numel()];
            for (int i = 0; i < values.Length; i++)
                values[i] = reader.ReadSingle();
            using var loaded = torch.tensor(values).reshape(ws.Value.shape);
            using (torch.no_grad())
                ws.Value.copy_(loaded);
        }
    }

    /// <summary>The table of the deployed graph with the trained ranges in place of calibrated ones.</summary>
    public CalibrationTable TrainedRanges(CalibrationTable table)
    {
        var result = new CalibrationTable();
        using var scope = torch.NewDisposeScope();
        foreach (var e in table)
        {
            if (e.Kind == TensorKind.Weight && WeightScales.TryGetValue(e.TensorName, out var learned)
                && Weights.TryGetValue(e.TensorName, out var spec) && e.Axis == spec.Axis)
            {
                // The learned step sizes, as the symmetric ranges the writer turns back into them (max|w| = s * qmax).
                float[] steps = learned.detach().abs().data<float>().ToArray();
                int qmax = (1 << (spec.Bits - 1)) - 1;
                float[] max = steps.Select(v => v * qmax).ToArray();
                result.Add(new CalibrationTableEntry(e.TensorName, e.Kind, e.Method, e.Bits, e.IsSigned, e.IsSymmetric, e.Axis,
                    max.Select(v => -v).ToArray(), max, steps, new int[steps.Length], e.Histogram));
            }
            else if (e.Kind == TensorKind.Activation && e.RangeSource is null && Activations.TryGetValue(e.TensorName, out var q))
            {
                var (min, max) = q.Range;
                var p = QuantizationParameters.Compute(min, max, e.Bits, e.IsSigned, e.IsSymmetric);
                result.Add(new CalibrationTableEntry(e.TensorName, e.Kind, e.Method, e.Bits, e.IsSigned, e.IsSymmetric, null,
                    [min], [max], [p.Scale], [p.ZeroPoint], e.Histogram));
            }
            else
                result.Add(e);
        }
        // Shared entries follow their (updated) sources.
        foreach (var e in result.Where(e => e.RangeSource is not null).ToList())
            result.Set(result[e.RangeSource!].SharedAs(e.TensorName));
        return result;
    }

    public void Dispose()
    {
        foreach (var q in Activations.Values)
            q.Dispose();
        foreach (var s in WeightScales.Values)
            s.Dispose();
    }

    /// <summary>
    /// Hooks fake quantization into <paramref name="module"/> (built from <paramref name="floatGraph"/>) where the writer
    /// quantizes <paramref name="deployed"/> (the BN-folded graph), initialised from its calibration table.
    /// </summary>
    public static SimulatedQuantization Attach(OnnxTorchModule module, OnnxModel floatGraph, OnnxModel deployed, CalibrationTable initial, AwareTrainingOptions options)
    {
        var result = new SimulatedQuantization();
        try
        {
            result.AttachTo(module, floatGraph, deployed, initial, options);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    private void AttachTo(OnnxTorchModule module, OnnxModel floatGraph, OnnxModel deployed, CalibrationTable initial, AwareTrainingOptions options)
    {
        var g = deployed.Graph;
        var weighted = g.TopologicalOrder().Where(n => n.OpType is "Conv" or "Gemm" or "MatMul" && n.Inputs.Count > 1 && g.IsInitializer(n.Inputs[1])).ToList();
        QuantizationPrecision PrecisionOf(OnnxNode? n) => n is null ? options.Precision
            : n == weighted.FirstOrDefault() && options.FirstLayerPrecision is { } f ? f
            : n == weighted.LastOrDefault() && options.LastLayerPrecision is { } l ? l
            : options.Precision;
        // The node that writes an activation in the quantized graph (a Relu's output is written by the op before it).
        OnnxNode? Writer(string tensor)
        {
            var p = g.Producer(tensor);
            if (p is { OpType: "Relu" or "Clip" } && g.Producer(p.Inputs[0]) is { } before && before.OpType is "Conv" or "Gemm" or "MatMul" or "Add")
                return before;
            return p;
        }

        foreach (var e in initial.Where(e => e.Kind == TensorKind.Activation && e.RangeSource is null))
        {
            var writer = Writer(e.TensorName);
            int bits = writer is null ? PrecisionOf(g.Consumers(e.TensorName).FirstOrDefault(c => weighted.Contains(c))).ActivationBits : PrecisionOf(writer).ActivationBits;
            var q = new FakeQuantizer($"fq{Activations.Count}", bits, options.SymmetricActivations, options.ActivationRanges, e.RangeMin[0], e.RangeMax[0]);
            Activations[e.TensorName] = q;
            module.ActivationHooks[e.TensorName] = x => q.forward(x);
        }

        // The quantizer whose scale a tensor is deployed with (pass-through outputs share their source's).
        FakeQuantizer? QuantizerOf(string tensor)
            => Activations.TryGetValue(tensor, out var q) ? q
               : initial.TryGetEntry(tensor, out var e) && e.RangeSource is { } source && Activations.TryGetValue(source, out var s) ? s : null;
        var unfolded = floatGraph.Graph;
        foreach (var node in unfolded.Nodes.Where(n => n.OpType is "Conv" or "Gemm" or "MatMul" && n.Inputs.Count > 1 && unfolded.TryGetInitializer(n.Inputs[1], out _)))
        {
            unfolded.TryGetInitializer(node.Inputs[1], out var w);
            var deployedNode = weighted.FirstOrDefault(n => n.Name == node.Name);
            int bits = PrecisionOf(deployedNode).WeightBits;
            int? axis = options.WeightsPerChannel ? CalibrationPlan.WeightAxis(node, 1, w) : null;
            Weights[node.Inputs[1]] = (bits, axis);
            Parameter? learned = null;
            if (options.LearnWeightStepSizes)
            {
                // Initialised from the deployed (BN-folded) weight: the one the scale will quantize.
                var initialWeight = deployed.Graph.TryGetInitializer(node.Inputs[1], out var fw) ? fw : w;
                using var wt = OnnxTorchModule.ToTorch(initialWeight);
                learned = new Parameter(WeightScale(wt, bits, axis), requires_grad: true);
                WeightScales[node.Inputs[1]] = learned;
            }
            module.WeightHooks[node.Inputs[1]] = t => !WeightsEnabled ? t
                : learned is not null && BitsOverride is null ? FakeQuantizeLearnedWeight(t, learned, bits, axis)
                : FakeQuantizeWeight(t, BitsOverride is int o ? Math.Max(o, bits) : bits, axis);
            if (node.OpType is "Conv" or "Gemm" && node.Inputs.Count > 2 && QuantizerOf(node.Inputs[0]) is { } input)
            {
                int? biasAxis = axis;
                module.BiasHooks[node.Name] = (b, wFloat) => WeightsEnabled && input.FakeQuantEnabled
                    ? FakeQuantizeBias(b, wFloat, input.CurrentScale, BitsOverride is int o ? Math.Max(o, bits) : bits, biasAxis,
                        learned is not null && BitsOverride is null ? learned : null)
                    : b;
            }
        }
    }

    private static Tensor MaxAbs(Tensor w, int? axis)
    {
        using (torch.no_grad())
            return axis is int a
                ? w.abs().amax(Enumerable.Range(0, (int)w.dim()).Where(d => d != a).Select(d => (long)d).ToArray())
                : w.abs().max();
    }

    /// <summary>LSQ for weights: the learned step size per channel, its gradient scaled by 1 / sqrt(weights per channel * qmax).</summary>
    private static Tensor FakeQuantizeLearnedWeight(Tensor w, Parameter scale, int bits, int? axis)
    {
        long qmax = (1L << (bits - 1)) - 1;
        long perChannel = w.numel() / Math.Max(1, scale.numel());
        using var scope = torch.NewDisposeScope();
        Tensor s = scale.abs() + 1e-12f;
        return FakeQuantize.Apply(w, s, torch.zeros_like(s).detach(), -qmax, qmax, axis, gradientScale: 1.0 / Math.Sqrt(perChannel * (double)qmax)).MoveToOuterDisposeScope();
    }

    /// <summary>Symmetric per-channel (or per-tensor) weight fake quantization with scale max|w| / qmax, as the writer exports it.</summary>
    private static Tensor FakeQuantizeWeight(Tensor w, int bits, int? axis)
    {
        long qmax = (1L << (bits - 1)) - 1;
        using var scope = torch.NewDisposeScope();
        Tensor scale = WeightScale(w, bits, axis);
        return FakeQuantize.Apply(w, scale, torch.zeros_like(scale), -qmax, qmax, axis).MoveToOuterDisposeScope();
    }

    /// <summary>The writer's weight scale: max|w| / qmax per channel (or per tensor), 1 for an all-zero channel; no gradient.</summary>
    private static Tensor WeightScale(Tensor w, int bits, int? axis)
    {
        long qmax = (1L << (bits - 1)) - 1;
        using (torch.no_grad())
        {
            using var scope = torch.NewDisposeScope();
            Tensor absMax = MaxAbs(w, axis);
            return torch.where(absMax > 0, absMax / qmax, torch.ones_like(absMax)).MoveToOuterDisposeScope();
        }
    }

    /// <summary>The deployed int32 bias: round(b / (s_in * s_w[c])) * s_in * s_w[c], with s_w = max|w| / qmax per channel.</summary>
    private static Tensor FakeQuantizeBias(Tensor bias, Tensor weight, float inputScale, int bits, int? axis, Parameter? learnedWeightScale = null)
    {
        using var scope = torch.NewDisposeScope();
        Tensor weightScale = learnedWeightScale is not null ? learnedWeightScale.abs().detach() : WeightScale(weight, bits, axis);
        Tensor scale = (weightScale * inputScale).detach();
        if (scale.numel() == 1)
            scale = scale.reshape([]);
        return FakeQuantize.Apply(bias, scale, torch.zeros_like(scale), int.MinValue, int.MaxValue, scale.numel() == 1 ? null : 0).MoveToOuterDisposeScope();
    }
}

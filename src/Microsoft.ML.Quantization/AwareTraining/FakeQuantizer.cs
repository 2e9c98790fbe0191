using Microsoft.ML.Quantization.Calibration;
using TorchSharp;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>How a <see cref="FakeQuantizer"/> gets its range.</summary>
public enum RangeLearning
{
    /// <summary>Moving-average min/max observer (PyTorch's default for QAT activations), frozen on request.</summary>
    MovingAverage = 0,

    /// <summary>LSQ: the scale is a parameter trained by backpropagation, with LSQ's gradient scaling.</summary>
    LearnedStepSize = 1,

    /// <summary>
    /// PACT: a learned clipping level a (a parameter, initialised from calibration); values are clipped to [0, a] (or
    /// [-a, a] for tensors with negative values) before quantization, and a gets gradient 1 where x was clipped at it.
    /// </summary>
    LearnedClipping = 2,
}

/// <summary>
/// Fake quantization, the module layer: a per-tensor activation quantizer with its range state (observer or learned
/// step size) and switches for observing and for quantizing, to drop into any TorchSharp module's forward. Its
/// scale and zero point follow ONNX QuantizeLinear (<see cref="QuantizationParameters.Compute"/>), so a model
/// exported with the same range computes the same numbers.
/// </summary>
public sealed class FakeQuantizer : nn.Module<Tensor, Tensor>
{
    private readonly int _bits;
    private readonly bool _symmetric;
    private readonly double _averagingConstant;
    private float _min, _max;
    private bool _initialized;
    private readonly Parameter? _learnedScale;
    private readonly Parameter? _clip;
    private readonly bool _symmetricClip;
    private float _zeroPoint;
    private bool _signed;

    /// <summary>Creates a quantizer.</summary>
    /// <param name="name">Module name.</param>
    /// <param name="bits">Width, 2 to 16.</param>
    /// <param name="symmetric">Symmetric (zero point 0; signed unless the range is non-negative) or asymmetric unsigned.</param>
    /// <param name="learning">How the range is learned.</param>
    /// <param name="initialMin">Initial range minimum (for example from calibration); null starts from the first batch.</param>
    /// <param name="initialMax">Initial range maximum.</param>
    /// <param name="averagingConstant">Moving-average constant (PyTorch: 0.01).</param>
    public FakeQuantizer(string name, int bits = 8, bool symmetric = false, RangeLearning learning = RangeLearning.MovingAverage,
        float? initialMin = null, float? initialMax = null, double averagingConstant = 0.01) : base(name)
    {
        if (bits is < 2 or > 16)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "Bits must be between 2 and 16.");
        _bits = bits;
        _symmetric = symmetric;
        _averagingConstant = averagingConstant;
        Learning = learning;
        if (initialMin is float lo && initialMax is float hi)
        {
            (_min, _max, _initialized) = (lo, hi, true);
        }
        if (learning == RangeLearning.LearnedStepSize)
        {
            if (!_initialized)
                throw new ArgumentException("A learned step size needs an initial range (initialMin/initialMax), e.g. from calibration.");
            var p = Parameters();
            _learnedScale = new Parameter(torch.tensor(p.Scale), requires_grad: true);
            register_parameter("scale", _learnedScale);
        }
        if (learning == RangeLearning.LearnedClipping)
        {
            if (!_initialized)
                throw new ArgumentException("A learned clipping level needs an initial range (initialMin/initialMax), e.g. from calibration.");
            _symmetricClip = _min < 0;
            _clip = new Parameter(torch.tensor(MathF.Max(MathF.Max(-_min, _max), 1e-6f)), requires_grad: true);
            register_parameter("clip", _clip);
        }
    }

    /// <summary>How the range is learned.</summary>
    public RangeLearning Learning { get; }

    /// <summary>Observe batches (moving average). Default true; switch off to freeze the observed range.</summary>
    public bool ObserverEnabled { get; set; } = true;

    /// <summary>Quantize in the forward pass. Default true; false passes values through (float warm-up).</summary>
    public bool FakeQuantEnabled { get; set; } = true;

    /// <summary>The current range: observed, or implied by the learned scale and zero point.</summary>
    public (float Min, float Max) Range
    {
        get
        {
            if (_clip is not null)
            {
                float a = MathF.Abs(_clip.item<float>());
                return (_symmetricClip ? -a : 0f, a);
            }
            if (_learnedScale is null)
                return (_min, _max);
            float s = MathF.Abs(_learnedScale.item<float>());
            var (qmin, qmax) = QuantizationParameters.GetQuantizedRange(_bits, _signed, _symmetric && _signed);   // the learned step's own width
            return ((qmin - _zeroPoint) * s, (qmax - _zeroPoint) * s);
        }
    }

    /// <summary>The scale the forward pass uses now (learned, or from the observed range).</summary>
    internal float CurrentScale
    {
        get
        {
            if (_learnedScale is not null)
                return MathF.Abs(_learnedScale.item<float>());
            if (_clip is not null)
                (_min, _max) = Range;
            return Parameters().Scale;
        }
    }

    /// <summary>A wider width to use for now (gradual bit-width schedules), or null for the quantizer's own.</summary>
    internal int? BitsOverride { get; set; }

    private int Bits => BitsOverride is int o ? Math.Max(o, _bits) : _bits;

    private (int Min, int Max) Levels() => QuantizationParameters.GetQuantizedRange(Bits, _signed, _symmetric && _signed);

    private QuantizationParameters Parameters()
    {
        _signed = _symmetric && _min < 0;
        var p = QuantizationParameters.Compute(_min, _max, Bits, _signed, _symmetric && _signed);
        _zeroPoint = p.ZeroPoint;
        return p;
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        if (Learning == RangeLearning.MovingAverage && ObserverEnabled && training)
            Observe(input);
        if (!FakeQuantEnabled || !_initialized)
            return input.alias();
        if (_clip is not null)
            return ClipAndQuantize(input);
        if (_learnedScale is not null && BitsOverride is not null)
        {
            // The learned range, quantized more finely for now (no state changes: the learned step keeps its width).
            var (min, max) = Range;
            bool signed = _symmetric && min < 0;
            var wide = QuantizationParameters.Compute(min, max, Bits, signed, _symmetric && signed);
            var (lo, hi) = QuantizationParameters.GetQuantizedRange(Bits, signed, _symmetric && signed);
            using var ws = torch.tensor(wide.Scale);
            using var wz = torch.tensor((float)wide.ZeroPoint);
            return FakeQuantize.Apply(input, ws, wz, lo, hi);
        }
        var (qmin, qmax) = Levels();
        if (_learnedScale is not null)
        {
            using var zp = torch.tensor((float)_zeroPoint);
            double g = 1.0 / Math.Sqrt(input.numel() * (double)qmax);
            return FakeQuantize.Apply(input, _learnedScale.abs() + 1e-12f, zp, qmin, qmax, gradientScale: g);
        }
        var p = Parameters();
        (qmin, qmax) = Levels();
        using var scale = torch.tensor(p.Scale);
        using var zero = torch.tensor((float)p.ZeroPoint);
        return FakeQuantize.Apply(input, scale, zero, qmin, qmax);
    }

    /// <summary>PACT: clip to [0, a] (or [-a, a]) with a learned a, then fake-quantize on that range (scale not trained).</summary>
    private Tensor ClipAndQuantize(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        Tensor a = _clip!.abs();
        Tensor clipped = torch.minimum(input, a);
        clipped = _symmetricClip ? torch.maximum(clipped, -a) : clipped.relu();
        (_min, _max) = Range;
        var p = Parameters();
        var (qmin, qmax) = Levels();
        using var scale = torch.tensor(p.Scale);
        using var zero = torch.tensor((float)p.ZeroPoint);
        return FakeQuantize.Apply(clipped, scale, zero, qmin, qmax).MoveToOuterDisposeScope();
    }

    /// <summary>Writes the range state (observer extremes, learned scale) for a training checkpoint.</summary>
    internal void WriteState(BinaryWriter writer)
    {
        writer.Write(_initialized);
        writer.Write(_min);
        writer.Write(_max);
        writer.Write(_zeroPoint);
        writer.Write(_signed);
        writer.Write(_learnedScale is null ? float.NaN : _learnedScale.item<float>());
        writer.Write(_clip is null ? float.NaN : _clip.item<float>());
    }

    /// <summary>Restores what <see cref="WriteState"/> wrote.</summary>
    internal void ReadState(BinaryReader reader)
    {
        _initialized = reader.ReadBoolean();
        _min = reader.ReadSingle();
        _max = reader.ReadSingle();
        _zeroPoint = reader.ReadSingle();
        _signed = reader.ReadBoolean();
        float scale = reader.ReadSingle();
        if (_learnedScale is not null)
            using (torch.no_grad())
                _learnedScale.fill_(scale);
        float clip = reader.ReadSingle();
        if (_clip is not null)
            using (torch.no_grad())
                _clip.fill_(clip);
    }

    private void Observe(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        using var detached = input.detach();
        var (minimum, maximum) = torch.aminmax(detached);   // one pass for both
        float lo = minimum.item<float>(), hi = maximum.item<float>();
        if (!float.IsFinite(lo) || !float.IsFinite(hi))
            return;
        if (!_initialized)
        {
            (_min, _max, _initialized) = (lo, hi, true);
            return;
        }
        _min = (float)(_min + _averagingConstant * (lo - _min));
        _max = (float)(_max + _averagingConstant * (hi - _max));
    }
}

using System.Diagnostics;
using Microsoft.ML.Quantization.AwareTraining;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Auto;

/// <summary>
/// <c>mlContext.Quantization.Auto</c>: searches quantization configurations of a float model for the best one (by
/// <see cref="AutoQuantizationOptions.Objective"/>) that meets the constraint on validation rows, in the manner of ML.NET's
/// AutoML experiments. One calibration pass (histograms kept, so MinMax and the per-tensor Auto ranges both come from it),
/// one float scoring pass of the validation rows (its outputs cached), and one sensitivity ranking on calibration rows
/// serve every trial; a trial writes a QDQ model and scores the validation rows once.
/// </summary>
/// <remarks>
/// The search: the plain schemes first (INT8, W4A8, W4A4 with MinMax, as a user would try them), then INT8 with the per-tensor
/// Auto calibration; when no 8-bit configuration meets the constraint, 16-bit activations and then float for the k most
/// sensitive nodes (k by doubling, then bisection); then 4-bit weights on every layer, and when that misses, on every layer
/// but the k most sensitive (first and last kept at 8 bits by default; k by doubling and bisection), AdaRound on the
/// closest miss, and a local refinement that
/// lowers the remaining 8-bit layers one at a time, least sensitive first. SmoothQuant is tried at INT8 where a MatMul/Gemm input
/// has outlier channels, and kept for the rest of the search when it scores better. When no trial meets the constraint and the
/// training rows have a class label, the last trial is quantization-aware training of the closest miss's scheme
/// (<see cref="AutoQuantizationOptions.AwareTrainingEpochs"/>).
/// </remarks>
public sealed class AutoQuantizationExperiment
{
    private readonly MLContext _context;
    private readonly AutoQuantizationOptions _options;

    internal AutoQuantizationExperiment(MLContext context, AutoQuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _context = context;
        _options = options;
    }

    /// <summary>Runs the experiment: calibrates on <paramref name="trainData"/>, scores every trial on <paramref name="validationData"/>.</summary>
    public AutoQuantizationResult Execute(IDataView trainData, IDataView validationData)
    {
        ArgumentNullException.ThrowIfNull(trainData);
        ArgumentNullException.ThrowIfNull(validationData);
        return new AutoSearch(_context, _options, trainData, validationData).Run();
    }
}

/// <summary>One configuration: calibration, base precision, and the nodes that get 8-bit weights, 16-bit activations or stay float.</summary>
internal sealed record AutoConfiguration(CalibrationMethod Method, QuantizationPrecision Precision, IReadOnlySet<string> Wide, IReadOnlySet<string> Wide16,
    IReadOnlySet<string> Float, bool AdaRound, double? SmoothAlpha = null)
{
    public string Describe(int weighted)
    {
        var parts = new List<string> { $"{(Precision == QuantizationPrecision.Int8 ? "INT8" : Precision.ToString())} {Method}" };
        if (Precision.WeightBits < 8)
            parts.Add($"{Wide.Count} of {weighted} weighted layers 8-bit");
        if (Wide16.Count > 0)
            parts.Add($"{Wide16.Count} nodes A16");
        if (Float.Count > 0)
            parts.Add($"{Float.Count} nodes float");
        if (SmoothAlpha is { } alpha)
            parts.Add($"SmoothQuant alpha {alpha:0.##}");
        if (AdaRound)
            parts.Add("AdaRound");
        return string.Join(", ", parts);
    }
}

/// <summary>The state of one experiment: the shared calibration, cached float outputs, rankings and the trials so far.</summary>
internal sealed class AutoSearch
{
    private static readonly HashSet<string> Empty = [];
    private readonly MLContext _context;
    private readonly AutoQuantizationOptions _options;
    private readonly PostTrainingOptions _base;
    private readonly IDataView _train, _validation;
    private readonly string _name;
    private readonly AutoScorer _scorer;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<(QuantizationTrial Trial, AutoConfiguration Configuration)> _trials = [];
    private readonly Dictionary<AutoConfiguration, AdaRoundResult> _learned = [];
    private OnnxModel _model = null!;
    private Dictionary<CalibrationMethod, CalibrationTable> _tables = [];
    private Dictionary<string, float[]>? _means;
    private RowSample _rows = null!;
    private float[][] _reference = [];
    private List<string> _weighted = [];
    private bool _onlyWeightedHaveConstants;
    private readonly string? _trainingLabel;
    private QdqResult? _awareTrained;
    private TimeSpan _floatPass;

    public AutoSearch(MLContext context, AutoQuantizationOptions options, IDataView train, IDataView validation)
    {
        _context = context;
        _options = options;
        _base = options.PostTraining.Clone();
        _base.MinOutputCosine = 0;
        _base.AdaRound = false;
        _base.CancellationToken = options.CancellationToken;
        _base.CalibrationTable = null;
        _train = train;
        _validation = validation;
        _name = _base.ModelName();
        // The label column is checked before any work.
        _scorer = AutoScorer.Create(context, options, validation.Schema);
        // Quantization-aware training can run only on training rows with the class label (its type is checked when it runs).
        _trainingLabel = options.TrainingLabelColumn is { } label && train.Schema.GetColumnOrNull(label) is not null ? label : null;
    }

    private Action<string> _log = _ => { };

    public AutoQuantizationResult Run()
    {
        using var progress = new OperationProgress(_context, "QatMl.Auto", ["trials"]);
        _log = progress.Info;
        Prepare();
        CancellationToken cancel = _options.CancellationToken;
        var nothing = Empty;

        // 1. The plain schemes, then the per-tensor calibration choice at INT8.
        var int8 = Try(new AutoConfiguration(CalibrationMethod.MinMax, QuantizationPrecision.Int8, nothing, nothing, nothing, false), fixedScheme: true);
        Try(new AutoConfiguration(CalibrationMethod.MinMax, QuantizationPrecision.W4A8, nothing, nothing, nothing, false), fixedScheme: true);
        Try(new AutoConfiguration(CalibrationMethod.MinMax, QuantizationPrecision.W4A4, nothing, nothing, nothing, false), fixedScheme: true);
        var int8Auto = Try(int8!.Value.Configuration with { Method = CalibrationMethod.Auto });
        CalibrationMethod method = int8Auto is { } a && Better(a.Trial, int8.Value.Trial) ? CalibrationMethod.Auto : CalibrationMethod.MinMax;
        var eights = new List<(QuantizationTrial Trial, AutoConfiguration Configuration)?> { int8, int8Auto };

        // SmoothQuant, where a MatMul/Gemm input has outlier channels (transformers): the alpha its fake-quantized graph prefers
        // on the calibration rows, tried at INT8; when it scores better, the rest of the search keeps it.
        double? smooth = null;
        if (Remaining && Smoothing(method).Alpha is { } alpha)
        {
            var smoothed = Try(new AutoConfiguration(method, QuantizationPrecision.Int8, nothing, nothing, nothing, false, alpha));
            eights.Add(smoothed);
            if (smoothed is { } sq && int8Auto is { } ia && Better(sq.Trial, method == CalibrationMethod.Auto ? ia.Trial : int8.Value.Trial))
                smooth = alpha;
        }
        var best8 = eights.Where(t => t is { Trial.Accepted: true }).Select(t => t!.Value).OrderByDescending(t => t.Trial.Metric).FirstOrDefault();

        // 2. No 8-bit configuration fits: the most sensitive nodes get 16-bit activations, then stay float.
        if (best8.Configuration is null && Remaining)
        {
            var start = new AutoConfiguration(method, QuantizationPrecision.Int8, nothing, nothing, nothing, false, smooth);
            List<string> ranked = RankInt8(start);
            best8 = Shortest(ranked, k => start with { Wide16 = ranked.Take(k).ToHashSet(StringComparer.Ordinal) })
                    ?? Shortest(ranked, k => start with { Float = ranked.Take(k).ToHashSet(StringComparer.Ordinal) })
                    ?? default;
        }

        // 3. 4-bit weights on every weighted layer but the k most sensitive (first and last kept at 8 bits to begin with).
        if (best8.Configuration is { } eight && Remaining)
        {
            var candidates = _weighted.Where(n => !eight.Float.Contains(n)).ToList();
            var kept = _options.KeepFirstAndLastLayersAt8Bits && candidates.Count > 2 ? new HashSet<string>([candidates[0], candidates[^1]], StringComparer.Ordinal) : [];
            List<string> ranked = [.. RankFourBit(eight).Where(n => !kept.Contains(n) && candidates.Contains(n))];
            var four = eight with { Precision = new QuantizationPrecision(4, eight.Precision.ActivationBits) };
            AutoConfiguration With(int k) => four with { Wide = kept.Concat(ranked.Take(k)).Concat(eight.Wide16.Where(_weighted.Contains)).ToHashSet(StringComparer.Ordinal) };
            // Every layer at 4 bits first (the plain W4 scheme with the chosen calibration); only when it misses are layers kept at 8.
            var all = Try(four with { Wide = eight.Wide16.Where(_weighted.Contains).ToHashSet(StringComparer.Ordinal) });
            var found = all is { Trial.Accepted: true } ? all : Shortest(ranked, With, includeZero: true);
            // AdaRound on the closest miss (the same configuration with one layer fewer at 8 bits, or every layer at 4 bits):
            // with the learned rounding it may meet the constraint.
            AutoConfiguration? miss = found is not { } f || ReferenceEquals(f.Configuration, all?.Configuration) ? null
                : f.Configuration.Wide.SetEquals(With(0).Wide) ? all?.Configuration
                : With(ranked.Count(f.Configuration.Wide.Contains) - 1);
            if (_options.AdaRound && miss is not null && Remaining)
            {
                var learned = Try(miss with { AdaRound = true });
                if (learned is { Trial.Accepted: true } l && l.Trial.SizeBytes < found!.Value.Trial.SizeBytes)
                    found = l;
            }
            // Local refinement: lower the remaining 8-bit layers one at a time, least sensitive first.
            if (found is { } current)
                foreach (string node in current.Configuration.Wide.OrderBy(n => ranked.IndexOf(n) < 0 ? int.MaxValue : -ranked.IndexOf(n)).ToList())
                {
                    if (!Remaining)
                        break;
                    cancel.ThrowIfCancellationRequested();
                    var lower = Try(current.Configuration with { Wide = current.Configuration.Wide.Where(n => n != node).ToHashSet(StringComparer.Ordinal) });
                    if (lower is { Trial.Accepted: true } better && better.Trial.SizeBytes < current.Trial.SizeBytes)
                        current = better;
                }
        }
        TrainLastResort();
        return Finish();
    }

    /// <summary>Prepares the graph, calibrates once, loads the validation rows and scores them with the float model.</summary>
    private void Prepare()
    {
        _model = PostTrainingEstimator.Prepare(_base, _name);
        OnnxRewrites.NameNodes(_model);
        _scorer.CheckOutput(_model, RowSample.ScoredOutputs(_model, _base));
        var observers = new Dictionary<string, TensorObserver>(StringComparer.Ordinal);
        var calibration = PostTrainingEstimator.CalibrationOptions(_base);
        calibration.Activations.Method = CalibrationMethod.Auto;   // keeps the histograms every method's ranges come from
        CalibrationTable observed = ModelCalibrator.Run(_context, calibration, _train, _model, observers).Table;
        _tables = new[] { CalibrationMethod.MinMax, CalibrationMethod.Auto }.ToDictionary(m => m, m => Recalibrated(observed, observers, m));

        var sample = RowSample.Load(_context, _model, _base, _train, _name);
        var int8Plan = QdqPlan.Create(_model.Clone(), _tables[CalibrationMethod.MinMax], _base);
        _weighted = [.. int8Plan.ComputeNodes.Where(n => int8Plan.Constants.ContainsKey((n, 1)) && int8Plan.Node(n).OpType is "Conv" or "ConvTranspose" or "Gemm" or "MatMul")];
        _onlyWeightedHaveConstants = int8Plan.Constants.Keys.All(k => _weighted.Contains(k.Node));
        if (_base.BiasCorrection)
            _means = BiasCorrection.InputMeans(_context, _model, int8Plan, _base, sample, _name);
        _sample = sample;

        _rows = RowSample.Load(_context, _model, _base, _validation, _name, _options.ValidationRowCount);
        using var runner = new SampleRunner(_context, _model.Clone(), 0, _base, _name, _rows);
        var clock = Stopwatch.StartNew();
        _reference = runner.Run(null);
        _floatPass = clock.Elapsed;
        _scorer.Bind(_validation, _reference, runner.OutputShapes, _rows.Count);
    }

    private RowSample _sample = null!;

    /// <summary>The table with every observed activation's range chosen by <paramref name="method"/> (shared ranges follow their source).</summary>
    private static CalibrationTable Recalibrated(CalibrationTable observed, Dictionary<string, TensorObserver> observers, CalibrationMethod method)
    {
        var fresh = new Dictionary<string, CalibrationTableEntry>(StringComparer.Ordinal);
        CalibrationTableEntry Entry(CalibrationTableEntry e)
        {
            if (fresh.TryGetValue(e.TensorName, out var done))
                return done;
            if (observers.TryGetValue(e.TensorName, out var observer) && observer.ChannelCount is null)
                return fresh[e.TensorName] = observer.WithMethod(method).ToEntry(e.TensorName, e.Kind);
            if (e.RangeSource is { } source && observed.TryGetEntry(source, out var from) && observers.ContainsKey(source))
                return fresh[e.TensorName] = Entry(from).SharedAs(e.TensorName);
            return e;
        }
        return new CalibrationTable(observed.Select(Entry).ToList());
    }

    /// <summary>Nodes most sensitive first at 8 bits: each node quantized alone on the calibration sample (output cosine).</summary>
    private List<string> RankInt8(AutoConfiguration start)
    {
        var (model, table, means) = Graph(start);
        var plan = QdqPlan.Create(model.Clone(), table, _base, FloatNodes(start), inputMeans: means);
        var (names, alone) = Rank(FakeQuantGraph.Build(plan));
        return [.. Enumerable.Range(0, names.Count).OrderBy(i => alone[i]).ThenBy(i => i).Select(i => names[i])];
    }

    /// <summary>
    /// Weighted layers in the order they keep 8-bit weights: the output cosine lost with each alone at 4 bits (the rest at 8),
    /// per weight it would save, highest first (a large layer that loses little goes 4-bit before a small sensitive one).
    /// </summary>
    private List<string> RankFourBit(AutoConfiguration eight)
    {
        var wide = Options(eight);
        var narrow = Options(eight with { Precision = new QuantizationPrecision(4, eight.Precision.ActivationBits) });
        var (model, table, means) = Graph(eight);
        var floatNodes = FloatNodes(eight);
        var fourPlan = QdqPlan.Create(model.Clone(), table, narrow, floatNodes, Overrides(eight, 4), means);
        var eightPlan = QdqPlan.Create(model.Clone(), table, wide, floatNodes, Overrides(eight, 8), means);
        var fake = FakeQuantGraph.Build(fourPlan, eightPlan);
        var (names, alone) = Rank(fake);
        double LossPerWeight(int i) => (1 - alone[i]) / Math.Max(1, fourPlan.Constants.TryGetValue((names[i], 1), out var w) ? w.Values.Length : 1);
        return [.. Enumerable.Range(0, names.Count).OrderByDescending(LossPerWeight).ThenBy(i => i).Select(i => names[i])];
    }

    /// <summary>The switches of <paramref name="fake"/> most sensitive first, and the output cosine of each alone (in switch order, by name).</summary>
    private (List<string> Switches, double[] Alone) Rank(FakeQuantGraph fake)
    {
        _sampleReference ??= FloatOutputs();
        using var runner = new SampleRunner(_context, fake.Model, fake.Switches.Count, _base, _name, _sample) { Reference = _sampleReference };
        var (alone, _) = SensitivityAnalysis.Rank(runner, fake.Switches.Count, accuracy: false, _options.CancellationToken);
        return ([.. fake.Switches], alone);
    }

    /// <summary>
    /// The configuration of the smallest k (k most sensitive nodes treated) that meets the constraint: doubling from 1 (or 0),
    /// then bisection; null when even all of them miss or the budget ends.
    /// </summary>
    private (QuantizationTrial Trial, AutoConfiguration Configuration)? Shortest(List<string> ranked, Func<int, AutoConfiguration> configuration, bool includeZero = false)
    {
        var tried = new Dictionary<int, (QuantizationTrial, AutoConfiguration)?>();
        (QuantizationTrial Trial, AutoConfiguration Configuration)? At(int k)
        {
            if (!tried.TryGetValue(k, out var t))
                tried[k] = t = Try(configuration(k));
            return t;
        }
        bool Meets(int k) => At(k) is { Trial.Accepted: true };
        int low = includeZero ? -1 : 0, high = includeZero ? 0 : 1;
        if (ranked.Count == 0 && !includeZero)
            return null;
        while (high < ranked.Count && Remaining && !Meets(high))
        {
            low = high;
            high = Math.Min(ranked.Count, Math.Max(1, high * 2));
        }
        if (!Meets(high))
            return null;
        while (high - low > 1 && Remaining)
        {
            int mid = (low + high) / 2;
            if (Meets(mid))
                high = mid;
            else
                low = mid;
        }
        return At(high);
    }

    /// <summary>
    /// Whether another post-training trial may start: one of MaxTrials is kept for quantization-aware training while it can run
    /// and no trial has met the constraint.
    /// </summary>
    private bool Remaining => _trials.Count < _options.MaxTrials - (AwareTrainingPending && _options.MaxTrials > 1 ? 1 : 0)
                              && !_options.CancellationToken.IsCancellationRequested
                              && (_options.TimeBudgetSeconds <= 0 || _clock.Elapsed.TotalSeconds < _options.TimeBudgetSeconds);

    private bool AwareTrainingPending => _trainingLabel is not null && !_trials.Any(t => t.Trial.Accepted);

    /// <summary>
    /// A row of a quantization-aware training epoch (forward and backward through the fake-quantized graph on libtorch) costs about
    /// this many rows of the float validation pass: the estimate that decides whether an epoch fits the time budget before any ran.
    /// </summary>
    internal const double TrainingRowCost = 8;

    /// <summary>Whether work of <paramref name="seconds"/> and the scoring pass after it fit the time budget.</summary>
    private bool Fits(double seconds)
        => _options.TimeBudgetSeconds <= 0 || _clock.Elapsed.TotalSeconds + seconds + _floatPass.TotalSeconds <= _options.TimeBudgetSeconds;

    /// <summary>
    /// The last resort: when no trial met the constraint, quantization-aware training of the closest miss (the rejected trial with
    /// the best metric) as AwareTraining can express it: its precision, 8-bit weights on the first and last layer where it kept
    /// them, ranges learned from a MinMax calibration; its other 8-bit layers, 16-bit activations, float nodes, SmoothQuant and
    /// AdaRound are dropped (the trial's configuration says so). Epochs stop when the next would not fit the time budget.
    /// </summary>
    private void TrainLastResort()
    {
        if (!AwareTrainingPending || _trials.Count >= _options.MaxTrials)
            return;
        _options.CancellationToken.ThrowIfCancellationRequested();
        var miss = _trials.Where(t => !double.IsNaN(t.Trial.Metric)).OrderByDescending(t => t.Trial.Metric).ThenBy(t => t.Trial.SizeBytes).FirstOrDefault();
        if (miss.Configuration is not { } from)
            return;
        long rows = _train.GetRowCount() ?? CountRows(_train);
        double epochSeconds = _floatPass.TotalSeconds / _rows.Count * rows * TrainingRowCost;
        if (!Fits(epochSeconds))
        {
            _log($"Quantization-aware training not started: one epoch of {rows} rows is estimated at {epochSeconds:F1} s, beyond the time budget.");
            return;
        }

        var precision = from.Precision;
        var wide = new HashSet<string>(StringComparer.Ordinal);
        if (precision.WeightBits < 8 && _weighted.Count > 0)
            foreach (string end in new[] { _weighted[0], _weighted[^1] }.Where(from.Wide.Contains))
                wide.Add(end);
        var scheme = new AutoConfiguration(CalibrationMethod.MinMax, precision, wide, Empty, Empty, false);
        var dropped = new List<string>();
        if (from.Wide.Count > wide.Count) dropped.Add($"{from.Wide.Count - wide.Count} more layers 8-bit");
        if (from.Wide16.Count > 0) dropped.Add($"{from.Wide16.Count} nodes A16");
        if (from.Float.Count > 0) dropped.Add($"{from.Float.Count} nodes float");
        if (from.SmoothAlpha is not null) dropped.Add("SmoothQuant");
        if (from.AdaRound) dropped.Add("AdaRound");
        if (from.Method != CalibrationMethod.MinMax) dropped.Add($"{from.Method} calibration");

        var options = new AwareTrainingOptions
        {
            ModelPath = _base.ModelPath, ModelBytes = _base.ModelBytes, LabelColumnName = _trainingLabel!, Epochs = _options.AwareTrainingEpochs,
            Precision = precision, WeightsPerChannel = _base.WeightsPerChannel, SymmetricActivations = _base.SymmetricActivations,
            CalibrationSampleCount = _base.SampleCount, Backend = _base.Backend, AllowBackendFallback = _base.AllowBackendFallback, NativeDevice = _base.NativeDevice,
            CancellationToken = _options.CancellationToken,
            ContinueAfterEpoch = (_, last) => Fits(last.TotalSeconds),
        };
        _base.CopyTo(options);
        if (_weighted.Count > 0 && wide.Contains(_weighted[0])) options.FirstLayerPrecision = new QuantizationPrecision(8, precision.ActivationBits);
        if (_weighted.Count > 0 && wide.Contains(_weighted[^1])) options.LastLayerPrecision = new QuantizationPrecision(8, precision.ActivationBits);
        string input = _model.Graph.RuntimeInputs[0].Name;
        if (_base.Inputs.FirstOrDefault(b => b.TensorName == input) is { } binding)
            options.FeatureColumnName = binding.ColumnName;

        var clock = Stopwatch.StartNew();
        int epochs = 0;
        string Describe() => $"QAT {epochs} epoch{(epochs == 1 ? "" : "s")} from #{miss.Trial.Index}: {scheme.Describe(_weighted.Count)}, LSQ ranges"
                             + (dropped.Count > 0 ? $" (not expressible, dropped: {string.Join(", ", dropped)})" : "");
        QuantizationTrial trial;
        try
        {
            var (model, report) = AwareTrainer.Fit(_context, options, _train);
            epochs = report.Epochs.Count;
            using (model)
                _awareTrained = new QdqResult(OnnxModel.Parse(model.QuantizedModel, sourceName: _name), model.Nodes);
            trial = Measure(_awareTrained, Describe(), clock);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            trial = new QuantizationTrial(_trials.Count + 1, Describe(), double.NaN, 0, double.NaN, clock.Elapsed, false, $"failed: {e.Message}");
        }
        Record(trial with { AwareTrainingEpochs = epochs }, scheme);
    }

    private static long CountRows(IDataView data)
    {
        long n = 0;
        using var cursor = data.GetRowCursor([]);
        while (cursor.MoveNext())
            n++;
        return n;
    }

    private static bool Better(QuantizationTrial a, QuantizationTrial b) => a.Metric > b.Metric;

    private PostTrainingOptions Options(AutoConfiguration c)
    {
        var o = _base.Clone();
        o.Precision = c.Precision;
        o.CalibrationMethod = c.Method;
        return o;
    }

    private Dictionary<string, string> FloatNodes(AutoConfiguration c)
    {
        var result = c.Float.ToDictionary(n => n, _ => "left float by the automatic search (among the most sensitive nodes)", StringComparer.Ordinal);
        if (c.SmoothAlpha is not null)
            foreach (var (node, why) in Smoothing(c.Method).FloatNodes)
                result[node] = why;
        return result;
    }

    private Dictionary<string, QuantizationPrecision> Overrides(AutoConfiguration c, int weightBits)
    {
        var result = new Dictionary<string, QuantizationPrecision>(StringComparer.Ordinal);
        foreach (string n in c.Wide)
            result[n] = new QuantizationPrecision(8, c.Precision.ActivationBits);
        foreach (string n in c.Wide16)
            result[n] = new QuantizationPrecision(c.Wide.Contains(n) || weightBits == 8 ? 8 : weightBits, 16);
        return result;
    }

    /// <summary>Writes and scores one configuration (once: a configuration tried before returns its trial).</summary>
    private (QuantizationTrial Trial, AutoConfiguration Configuration)? Try(AutoConfiguration c, bool fixedScheme = false)
    {
        // Every weighted layer at 8 bits is the 8-bit configuration itself (the other nodes take the same activation width).
        if (c.Precision.WeightBits < 8 && !c.AdaRound && _onlyWeightedHaveConstants && _weighted.All(n => c.Wide.Contains(n) || c.Float.Contains(n)))
            c = c with { Precision = new QuantizationPrecision(8, c.Precision.ActivationBits), Wide = Empty };
        foreach (var t in _trials)
            if (Same(t.Configuration, c))
                return t;
        if (!Remaining)
            return null;
        var clock = Stopwatch.StartNew();
        QuantizationTrial trial;
        try
        {
            trial = Measure(Write(c), c.Describe(_weighted.Count), clock) with { FixedScheme = fixedScheme };
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            trial = new QuantizationTrial(_trials.Count + 1, c.Describe(_weighted.Count), double.NaN, 0, double.NaN, clock.Elapsed, false, $"failed: {e.Message}") { FixedScheme = fixedScheme };
        }
        return Record(trial, c);
    }

    /// <summary>Scores a written model on the validation rows (the result's backend) and times it when it meets the constraint.</summary>
    private QuantizationTrial Measure(QdqResult written, string configuration, Stopwatch clock)
    {
        long bytes = written.Model.SerializedSize;  // the session below serializes it once
        // On the native engine the validation pass runs there (what the result runs, and fast for 4-bit weights, which ONNX
        // Runtime executes unfused); otherwise ONNX Runtime scores it, and only an accepted trial gets the backend's latency.
        using var backend = _base.Backend == QuantizedBackend.Native ? new AutoBackend(_context, written, _base, _rows) : null;
        float[][]? outputs = backend is { Native: true } ? backend.Run() : null;
        if (outputs is null)
        {
            using var runner = new SampleRunner(_context, written.Model, 0, _base, _name, _rows);
            outputs = runner.Run(null);
        }
        double metric = _scorer.Score(outputs, _reference, _rows.Count);
        var (accepted, why) = _scorer.Judge(metric);
        double latency = double.NaN;
        if (accepted)
        {
            using var timed = backend is null ? new AutoBackend(_context, written, _base, _rows) : null;
            latency = (backend ?? timed)!.Latency();
        }
        return new QuantizationTrial(_trials.Count + 1, configuration, metric, bytes, latency, clock.Elapsed, accepted, why);
    }

    /// <summary>Adds a trial with its configuration's details, and reports it.</summary>
    private (QuantizationTrial Trial, AutoConfiguration Configuration) Record(QuantizationTrial trial, AutoConfiguration c)
    {
        trial = trial with
        {
            CalibrationMethod = c.Method, Precision = c.Precision, NodePrecision = Overrides(c, c.Precision.WeightBits), FloatNodes = [.. c.Float.Order(StringComparer.Ordinal)],
            AdaRound = c.AdaRound, SmoothQuantAlpha = c.SmoothAlpha,
        };
        _trials.Add((trial, c));
        _options.Progress?.Report(trial);
        _log(trial.ToString());
        return (trial, c);
    }

    private static bool Same(AutoConfiguration a, AutoConfiguration b)
        => a.Method == b.Method && a.Precision == b.Precision && a.AdaRound == b.AdaRound && a.SmoothAlpha == b.SmoothAlpha && a.Wide.SetEquals(b.Wide) && a.Wide16.SetEquals(b.Wide16) && a.Float.SetEquals(b.Float);

    /// <summary>The QDQ model of a configuration (AdaRound's weights learned once per configuration).</summary>
    private QdqResult Write(AutoConfiguration c)
    {
        var options = Options(c);
        var (model, table, means) = Graph(c);
        var floatNodes = FloatNodes(c);
        var overrides = Overrides(c, c.Precision.WeightBits);
        AdaRoundResult? learned = null;
        if (c.AdaRound && !_learned.TryGetValue(c, out learned))
        {
            // A configuration that lowers layers of an AdaRound configuration tried before learns only the lowered layers.
            var parent = _learned.Where(kv => kv.Key.Method == c.Method && kv.Key.SmoothAlpha == c.SmoothAlpha && kv.Key.Precision == c.Precision && kv.Key.Float.SetEquals(c.Float)
                                              && kv.Key.Wide16.SetEquals(c.Wide16) && kv.Key.Wide.IsSupersetOf(c.Wide))
                .OrderBy(kv => kv.Key.Wide.Count).Select(kv => kv.Value).FirstOrDefault();
            HashSet<string>? only = parent is null ? null : [.. _weighted.Where(n => !c.Wide.Contains(n) && !parent.Layers.Any(l => l.Node == n))];
            var fresh = AdaRound.Learn(_context, model, table, options, _train, _name, floatNodes, overrides, means, null, only, parent?.Weights);
            _learned[c] = learned = parent is null ? fresh : new AdaRoundResult(fresh.Weights, [.. parent.Layers, .. fresh.Layers]);
        }
        return QdqWriter.Write(QdqPlan.Create(model.Clone(), table, options, floatNodes, overrides, means, learned?.Weights));
    }

    /// <summary>The graph, calibration table and bias-correction means of a configuration (SmoothQuant's, when it smooths).</summary>
    private (OnnxModel Model, CalibrationTable Table, Dictionary<string, float[]>? Means) Graph(AutoConfiguration c)
    {
        if (c.SmoothAlpha is null)
            return (_model, _tables[c.Method], _means);
        var smooth = Smoothing(c.Method);
        if (!_smoothMeans.TryGetValue(c.Method, out var means) && _base.BiasCorrection)
            _smoothMeans[c.Method] = means = BiasCorrection.InputMeans(_context, smooth.Model,
                QdqPlan.Create(smooth.Model.Clone(), smooth.Table, _base, new Dictionary<string, string>(smooth.FloatNodes)), _base, _sample, _name);
        return (smooth.Model, smooth.Table, means);
    }

    /// <summary>
    /// SmoothQuant on the calibration sample with the calibration method's table (once per method): no alpha when no MatMul/Gemm
    /// input has outlier channels (<see cref="OutlierRatio"/>) or none beats leaving it unsmoothed.
    /// </summary>
    private SmoothQuant.Result Smoothing(CalibrationMethod method)
    {
        if (!_smooth.TryGetValue(method, out var result))
        {
            _sampleReference ??= FloatOutputs();
            _smooth[method] = result = SmoothQuant.Apply(_context, _model, _tables[method], Options(new AutoConfiguration(method, QuantizationPrecision.Int8, Empty, Empty, Empty, false)),
                _sample, _name, _sampleReference, OutlierRatio);
            _log($"SmoothQuant ({method}): {(result.Alpha is { } a ? $"alpha {a} on {result.Smoothed} MatMul/Gemm weights" : "not tried")} ({result.Summary}).");
        }
        return result;
    }

    /// <summary>
    /// An activation has outlier channels when its largest channel magnitude is this many times its median one (transformer
    /// activations reach 100 and more; convolutional features rarely a few tens).
    /// </summary>
    internal const double OutlierRatio = 20;

    private readonly Dictionary<CalibrationMethod, SmoothQuant.Result> _smooth = [];
    private readonly Dictionary<CalibrationMethod, Dictionary<string, float[]>?> _smoothMeans = [];
    private float[][]? _sampleReference;

    /// <summary>The float model's outputs on the calibration sample (the reference of the rankings and SmoothQuant).</summary>
    private float[][] FloatOutputs()
    {
        using var reference = new SampleRunner(_context, _model.Clone(), 0, _base, _name, _sample);
        return reference.Run(null);
    }

    private AutoQuantizationResult Finish()
    {
        var ran = _trials.Where(t => !double.IsNaN(t.Trial.Metric)).ToList();
        if (ran.Count == 0)
            throw new InvalidOperationException(_trials.Count == 0
                ? "The automatic search ran no trial: the time budget or MaxTrials ended it, or it was cancelled, before the first one."
                : $"Every trial of the automatic search failed; the first: {_trials[0].Trial.Reason}");
        var accepted = ran.Where(t => t.Trial.Accepted).ToList();
        var chosen = accepted.Count == 0 ? ran.MaxBy(t => t.Trial.Metric)
            : _options.Objective switch
            {
                AutoQuantizationObjective.Size => accepted.OrderBy(t => t.Trial.SizeBytes).ThenByDescending(t => t.Trial.Metric).First(),
                AutoQuantizationObjective.Latency => accepted.OrderBy(t => t.Trial.LatencyMilliseconds).ThenByDescending(t => t.Trial.Metric).First(),
                _ => accepted.OrderByDescending(t => t.Trial.Metric).ThenBy(t => t.Trial.SizeBytes).First(),
            };
        QdqResult written = chosen.Trial.AwareTrainingEpochs > 0 ? _awareTrained! : Write(chosen.Configuration);
        var model = new QuantizedModelTransformer(_context, written.Model, _base.ToScoringSettings(), written.Nodes);
        _log($"Automatic quantization of '{_name}': {_trials.Count} trials in {_clock.Elapsed.TotalSeconds:F1} s; chose #{chosen.Trial.Index} {chosen.Trial.Configuration} ({_scorer.Name} {chosen.Trial.Metric:0.#####}).");
        return new AutoQuantizationResult(model, chosen.Trial, [.. _trials.Select(t => t.Trial)], _scorer.Metric, _scorer.Name, _scorer.FloatMetric, _floatPass, _clock.Elapsed);
    }
}

using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Parameter = TorchSharp.Modules.Parameter;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>Rows in memory: features [N, D] row-major and class labels.</summary>
internal sealed record TrainingRows(float[] Features, long[] Labels, int RowSize, long[] InputDims)
{
    public int Count => Labels.Length;
}

/// <summary>
/// Quantization-aware fine-tuning: the float graph as a TorchSharp module with fake quantization at exactly the
/// tensors the QDQ writer quantizes (activations per tensor from calibrated, then observed or learned ranges; weights
/// per channel from their current max|w|, BN-folded once BN is frozen), trained with Adam, then exported through the
/// same writer with the trained weights and the final ranges.
/// </summary>
internal static class AwareTrainer
{
    public static (QuantizedModelTransformer Model, AwareTrainingReport Report) Fit(MLContext context, AwareTrainingOptions options, IDataView data, bool quantize = true)
    {
        options.Validate();
        TorchSharpRuntime.EnsureLoaded();
        string name = options.ModelPath ?? "(model bytes)";
        byte[] original = OnnxModelSource.Read(options.ModelPath, options.ModelBytes);
        OnnxModel floatGraph = OnnxModel.Parse(original, options.ModelPath is null ? null : Path.GetDirectoryName(Path.GetFullPath(options.ModelPath)), options.ModelPath);
        OnnxRewrites.RemoveIdentityAndDropout(floatGraph);
        OnnxRewrites.FoldConstants(floatGraph);
        if (floatGraph.DefaultOpset < 13)
            OnnxRewrites.UpgradeOpset(floatGraph, 13);
        try { OnnxRewrites.MakeBatchSymbolic(floatGraph); } catch (InvalidOnnxModelException) { }
        using var probe = new OnnxTorchModule(floatGraph.Clone());   // unsupported ops fail here, before any row is read

        var input = floatGraph.Graph.RuntimeInputs[0];
        string featureColumn = options.FeatureColumnName ?? input.Name;
        long[] rowDims = (input.Shape ?? throw new NotSupportedException($"{name}: input '{input.Name}' has no shape."))
            .Skip(1).Select(d => d.Value ?? throw new NotSupportedException($"{name}: input '{input.Name}' has a symbolic dimension other than the batch.")).ToArray();
        TrainingRows all = Load(data, featureColumn, options.LabelColumnName, rowDims, nameof(data));
        if (all.Count == 0)
            throw new InvalidOperationException("The training data is empty: the input IDataView returned no rows.");
        TrainingRows train = all, validation;
        if (options.ValidationData is { } v)
            validation = Load(v, featureColumn, options.LabelColumnName, rowDims, nameof(options.ValidationData));
        else
        {
            int held = (int)(all.Count * options.ValidationFraction);
            (train, validation) = Split(all, all.Count - held);
        }
        bool validating = validation.Count > 0;

        using var channel = ((IChannelProvider)context).Start("QatMl.AwareTraining");
        // Initial ranges: calibrate the graph as it will be deployed (BN folded), on the first training rows.
        byte[] floatBytes = floatGraph.ToBytes();
        OnnxModel folded = PostTrainingEstimator.Prepare(options.ToPostTraining(floatBytes), name);
        TrainingRows calibrationRows = options.CalibrationData is { } cd ? Load(cd, featureColumn, options.LabelColumnName, rowDims, nameof(options.CalibrationData)) : train;
        CalibrationTable initial = Calibrate(context, options, folded, calibrationRows);

        double? floatAccuracy = null, ptqAccuracy = null;
        if (quantize && options.MaxAccuracyDrop is double budget)
        {
            if (!validating)
                throw new ArgumentException("MaxAccuracyDrop needs validation rows: set ValidationData or ValidationFraction.");
            floatAccuracy = Accuracy(floatBytes, validation);
            var ptqOptions = options.ToPostTraining(floatBytes);
            QdqResult ptq = QdqWriter.Quantize(folded.Clone(), initial, ptqOptions);
            ptqAccuracy = Accuracy(ptq.Model.ToBytes(), validation);
            double drop = (floatAccuracy.Value - ptqAccuracy.Value) * 100;
            channel.Info(MessageSensitivity.None, "{0}", $"PTQ first: float {floatAccuracy:P2}, PTQ {ptqAccuracy:P2} on {validation.Count} validation rows (drop {drop:F2} points, budget {budget:F2}).");
            if (drop <= budget)
            {
                var report = new AwareTrainingReport
                {
                    Path = "PostTraining",
                    Reason = $"PTQ lost {drop:F2} points of validation accuracy, within the {budget:F2}-point budget, so no training was needed.",
                    FloatAccuracy = floatAccuracy, PostTrainingAccuracy = ptqAccuracy, DeployedAccuracy = ptqAccuracy,
                };
                return (new QuantizedModelTransformer(context, ptq.Model.ToBytes(), ScoringSettings.From(ptqOptions), ptq.Nodes) { AwareTraining = report }, report);
            }
        }

        torch.manual_seed(options.Seed);
        if (options.IntraOpNumThreads > 0)
            torch.set_num_threads(options.IntraOpNumThreads);   // libtorch's pool is process-wide
        using var module = new OnnxTorchModule(floatGraph.Clone());
        var quantizers = quantize ? AttachFakeQuantization(module, floatGraph, folded, initial, options) : new Quantizers([], []);
        using var teacher = options.DistillationWeight > 0 ? new OnnxTorchModule(floatGraph.Clone()) : null;
        teacher?.eval();

        var parameters = module.parameters().Concat(quantizers.Activations.Values.SelectMany(q => q.parameters()))
            .Concat(quantizers.WeightScales.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value)).ToList();
        using var optimizer = optim.Adam(parameters, options.LearningRate);
        int stepsPerEpoch = (train.Count + options.TrainingBatchSize - 1) / options.TrainingBatchSize;
        long totalSteps = (long)stepsPerEpoch * options.Epochs;
        long warmup = quantize ? (long)(options.WarmupFraction * totalSteps) : 0;
        int observerFreeze = options.ObserverFreezeEpoch ?? options.Epochs - 1;
        var epochs = new List<EpochReport>();
        double? lastValidation = null;
        long step = 0;
        var clock = Stopwatch.StartNew();
        long rowsSeen = 0;
        var checkpoint = new Checkpoint(options, train.Count, quantize);
        var resume = checkpoint.TryLoad(module, optimizer, quantizers, channel);
        int firstEpoch = resume?.Epoch ?? 0;
        if (resume is not null)
        {
            step = resume.Step;
            epochs.AddRange(resume.Epochs);
            lastValidation = epochs.LastOrDefault()?.ValidationAccuracy;
        }

        for (int epoch = firstEpoch; epoch < options.Epochs; epoch++)
        {
            module.FoldBatchNorm = epoch >= options.BatchNormFreezeEpoch;
            foreach (var q in quantizers.Activations.Values)
                q.ObserverEnabled = epoch < observerFreeze;
            int[] order = Shuffle(train.Count, options.Seed, epoch);
            double lossSum = epoch == firstEpoch && resume is not null ? resume.LossSum : 0;
            int firstRow = epoch == firstEpoch && resume is not null ? resume.NextRow : 0;
            var epochClock = Stopwatch.StartNew();
            module.train();
            for (int start = firstRow; start < train.Count; start += options.TrainingBatchSize, step++)
            {
                options.CancellationToken.ThrowIfCancellationRequested();
                bool fakeQuant = quantize && step >= warmup;
                foreach (var q in quantizers.Activations.Values)
                    q.FakeQuantEnabled = fakeQuant;
                quantizers.WeightsEnabled = fakeQuant;
                quantizers.BitsOverride = options.GradualBitWidth && fakeQuant ? GradualBits(step - warmup, totalSteps - warmup) : null;
                foreach (var q in quantizers.Activations.Values)
                    q.BitsOverride = quantizers.BitsOverride;

                int count = Math.Min(options.TrainingBatchSize, train.Count - start);
                using var scope = torch.NewDisposeScope();
                var (x, y) = Batch(train, order, start, count);
                Tensor logits = module.forward(x);
                Tensor loss = F.cross_entropy(logits, y);
                if (teacher is not null)
                {
                    double t = options.DistillationTemperature, a = options.DistillationWeight;
                    Tensor soft;
                    using (torch.no_grad())
                        soft = F.softmax(teacher.forward(x) / t, 1);
                    Tensor kl = F.kl_div(F.log_softmax(logits / t, 1), soft, reduction: nn.Reduction.Sum) / count;   // batchmean
                    loss = kl * (a * t * t) + loss * (1 - a);
                }
                float value = loss.item<float>();
                if (!float.IsFinite(value))
                    throw new InvalidOperationException($"The training loss became {value} at epoch {epoch}, step {step}; training stopped. Lower LearningRate or check the data for NaN.");
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                lossSum += value * count;
                rowsSeen += count;
                if (options.CheckpointPath is not null && (step + 1) % options.CheckpointEverySteps == 0)
                    checkpoint.Save(module, optimizer, quantizers, new CheckpointState(epoch, start + count, step + 1, lossSum, [.. epochs]));
                options.Progress?.Report(new AwareTrainingProgress(epoch, step, totalSteps, value, lastValidation, rowsSeen / clock.Elapsed.TotalSeconds));
            }
            double rate = train.Count / epochClock.Elapsed.TotalSeconds;
            lastValidation = validating ? FakeQuantizedAccuracy(module, validation, final: false) : null;
            epochs.Add(new EpochReport(epoch, lossSum / train.Count, lastValidation, rate));
            channel.Info(MessageSensitivity.None, "{0}", $"Epoch {epoch + 1}/{options.Epochs}: loss {lossSum / train.Count:F4}" +
                (lastValidation is { } acc ? $", validation accuracy {acc:P2}" : "") + $", {rate:F0} rows/s.");
        }

        // Training finished: its checkpoint is spent (a later Fit with the same options starts over).
        if (options.CheckpointPath is { } spent && File.Exists(spent))
            File.Delete(spent);

        // Export: trained weights and BN statistics back into the graph, folded as deployed, with the final ranges.
        module.FoldBatchNorm = true;
        quantizers.BitsOverride = null;
        foreach (var q in quantizers.Activations.Values)
            (q.ObserverEnabled, q.FakeQuantEnabled, q.BitsOverride) = (false, quantize, null);
        quantizers.WeightsEnabled = quantize;
        double? fakeQuantAccuracy = validating ? FakeQuantizedAccuracy(module, validation, final: true) : null;
        OnnxModel trained = floatGraph.Clone();
        foreach (var init in trained.Graph.Initializers.Where(i => i.ElementType == OnnxElementType.Float).ToList())
        {
            using Tensor value = module.Value(init.Name).detach().cpu().contiguous();
            trained.Graph.SetInitializer(OnnxTensor.FromFloats(init.Name, init.Dims, value.data<float>().ToArray()));
        }
        byte[] trainedBytes = trained.ToBytes();
        var exportOptions = options.ToPostTraining(trainedBytes);
        OnnxModel deployGraph = PostTrainingEstimator.Prepare(exportOptions, name);
        QuantizedModelTransformer result;
        if (quantize)
        {
            CalibrationTable table = WithRanges(Calibrate(context, options, deployGraph, train, sampleCount: 64), quantizers);
            QdqResult written = QdqWriter.Quantize(deployGraph, table, exportOptions);
            result = new QuantizedModelTransformer(context, written.Model.ToBytes(), ScoringSettings.From(exportOptions), written.Nodes);
        }
        else
        {
            // A float fine-tune (the fair baseline): the same transformer type running the float graph.
            result = new QuantizedModelTransformer(context, deployGraph.ToBytes(), ScoringSettings.From(exportOptions), []);
        }
        double? deployed = validating ? Accuracy(result.QuantizedModel, validation) : null;
        var final = new AwareTrainingReport
        {
            Path = "AwareTraining",
            Reason = options.MaxAccuracyDrop is double b
                ? $"PTQ lost {(floatAccuracy - ptqAccuracy) * 100:F2} points of validation accuracy, more than the {b:F2}-point budget."
                : "Quantization-aware training was requested.",
            FloatAccuracy = floatAccuracy, PostTrainingAccuracy = ptqAccuracy,
            FakeQuantizedAccuracy = fakeQuantAccuracy, DeployedAccuracy = deployed, Epochs = epochs,
        };
        if (fakeQuantAccuracy is { } fq && deployed is { } dep)
            channel.Info(MessageSensitivity.None, "{0}", $"Fake-quantized accuracy {fq:P2}, deployed QDQ model {dep:P2}.");
        result.AwareTraining = final;
        return (result, final);
    }

    /// <summary>Where a checkpoint stands: the next row of the epoch's shuffled order, the next step, the loss so far.</summary>
    internal sealed record CheckpointState(int Epoch, int NextRow, long Step, double LossSum, List<EpochReport> Epochs);

    /// <summary>
    /// A training checkpoint file: header (what run it belongs to), position, finished epochs, the module's
    /// parameters and buffers, Adam's state and the quantizers' ranges. Written to a temporary file and renamed.
    /// </summary>
    private sealed class Checkpoint(AwareTrainingOptions options, int rows, bool quantize)
    {
        private const int Magic = 0x504B4351; // "QCKP"
        private const int Version = 1;
        private readonly string _fingerprint =
            $"{options.ModelPath}|{options.ModelBytes?.Length}|{rows}|{options.Seed}|{options.Epochs}|{options.TrainingBatchSize}|{options.LearningRate}|{options.Precision}|{quantize}|{options.ActivationRanges}|{options.LearnWeightStepSizes}";

        public void Save(OnnxTorchModule module, TorchSharp.Modules.Adam optimizer, Quantizers quantizers, CheckpointState state)
        {
            string path = Path.GetFullPath(options.CheckpointPath!);
            string temp = path + ".tmp-" + Guid.NewGuid().ToString("N");
            try
            {
                using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
                using (var w = new BinaryWriter(stream))
                {
                    w.Write(Magic); w.Write(Version); w.Write(_fingerprint);
                    w.Write(state.Epoch); w.Write(state.NextRow); w.Write(state.Step); w.Write(state.LossSum);
                    w.Write(state.Epochs.Count);
                    foreach (var e in state.Epochs)
                    {
                        w.Write(e.Epoch); w.Write(e.MeanLoss); w.Write(e.ValidationAccuracy ?? double.NaN); w.Write(e.RowsPerSecond);
                    }
                    module.save(w);
                    optimizer.save_state_dict(w);
                    foreach (var q in quantizers.Activations.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                        q.Value.WriteState(w);
                    foreach (var ws in quantizers.WeightScales.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                        foreach (float v in ws.Value.detach().data<float>().ToArray())
                            w.Write(v);
                    w.Flush();
                    stream.Flush(flushToDisk: true);
                }
                File.Move(temp, path, overwrite: true);
            }
            catch
            {
                try { File.Delete(temp); } catch (IOException) { }
                throw;
            }
        }

        public CheckpointState? TryLoad(OnnxTorchModule module, TorchSharp.Modules.Adam optimizer, Quantizers quantizers, IChannel channel)
        {
            if (options.CheckpointPath is not { } path || !File.Exists(path))
                return null;
            try
            {
                using var r = new BinaryReader(File.OpenRead(path));
                if (r.ReadInt32() != Magic || r.ReadInt32() != Version)
                    throw new InvalidDataException("not a QatMl training checkpoint (bad magic or version)");
                string fingerprint = r.ReadString();
                if (fingerprint != _fingerprint)
                    throw new InvalidDataException($"it belongs to another run ({fingerprint}; this run is {_fingerprint})");
                var state = new CheckpointState(r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), r.ReadDouble(), []);
                int finished = r.ReadInt32();
                for (int i = 0; i < finished; i++)
                {
                    int epoch = r.ReadInt32();
                    double loss = r.ReadDouble(), accuracy = r.ReadDouble(), rate = r.ReadDouble();
                    state.Epochs.Add(new EpochReport(epoch, loss, double.IsNaN(accuracy) ? null : accuracy, rate));
                }
                module.load(r);
                optimizer.load_state_dict(r);
                foreach (var q in quantizers.Activations.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    q.Value.ReadState(r);
                foreach (var ws in quantizers.WeightScales.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    var values = new float[ws.Value.numel()];
                    for (int i = 0; i < values.Length; i++)
                        values[i] = r.ReadSingle();
                    using var loaded = torch.tensor(values).reshape(ws.Value.shape);
                    using (torch.no_grad())
                        ws.Value.copy_(loaded);
                }
                channel.Info(MessageSensitivity.None, "{0}", $"Resuming from checkpoint '{path}' at epoch {state.Epoch + 1}, step {state.Step}.");
                return state;
            }
            catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException or ArgumentException or InvalidOperationException)
            {
                throw new InvalidDataException($"Cannot resume from checkpoint '{path}': {e.Message}. Delete it to start over.", e);
            }
        }
    }

    /// <summary>The fake quantizers of one training run.</summary>
    internal sealed class Quantizers(Dictionary<string, FakeQuantizer> activations, Dictionary<string, (int Bits, int? Axis)> weights)
    {
        public Dictionary<string, FakeQuantizer> Activations { get; } = activations;
        public Dictionary<string, (int Bits, int? Axis)> Weights { get; } = weights;

        /// <summary>Learned per-channel (or per-tensor) weight step sizes, by weight initializer name (LSQ for weights).</summary>
        public Dictionary<string, Parameter> WeightScales { get; } = new(StringComparer.Ordinal);
        public bool WeightsEnabled { get; set; }
        public int? BitsOverride { get; set; }
    }

    private static Quantizers AttachFakeQuantization(OnnxTorchModule module, OnnxModel floatGraph, OnnxModel folded, CalibrationTable initial, AwareTrainingOptions options)
    {
        var g = folded.Graph;
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

        var activations = new Dictionary<string, FakeQuantizer>(StringComparer.Ordinal);
        foreach (var e in initial.Where(e => e.Kind == TensorKind.Activation && e.RangeSource is null))
        {
            var writer = Writer(e.TensorName);
            int bits = writer is null ? PrecisionOf(g.Consumers(e.TensorName).FirstOrDefault(c => weighted.Contains(c))).ActivationBits : PrecisionOf(writer).ActivationBits;
            var q = new FakeQuantizer($"fq{activations.Count}", bits, options.SymmetricActivations, options.ActivationRanges, e.RangeMin[0], e.RangeMax[0]);
            activations[e.TensorName] = q;
            module.ActivationHooks[e.TensorName] = x => q.forward(x);
        }

        var weights = new Dictionary<string, (int Bits, int? Axis)>(StringComparer.Ordinal);
        var result = new Quantizers(activations, weights);
        // The quantizer whose scale a tensor is deployed with (pass-through outputs share their source's).
        FakeQuantizer? QuantizerOf(string tensor)
            => activations.TryGetValue(tensor, out var q) ? q
               : initial.TryGetEntry(tensor, out var e) && e.RangeSource is { } source && activations.TryGetValue(source, out var s) ? s : null;
        var unfolded = floatGraph.Graph;
        foreach (var node in unfolded.Nodes.Where(n => n.OpType is "Conv" or "Gemm" or "MatMul" && n.Inputs.Count > 1 && unfolded.TryGetInitializer(n.Inputs[1], out _)))
        {
            unfolded.TryGetInitializer(node.Inputs[1], out var w);
            var deployed = weighted.FirstOrDefault(n => n.Name == node.Name);
            int bits = PrecisionOf(deployed).WeightBits;
            int? axis = options.WeightsPerChannel ? CalibrationPlan.WeightAxis(node, 1, w) : null;
            weights[node.Inputs[1]] = (bits, axis);
            Parameter? learned = null;
            if (options.LearnWeightStepSizes)
            {
                // Initialised from the deployed (BN-folded) weight: the one the scale will quantize.
                var initialWeight = folded.Graph.TryGetInitializer(node.Inputs[1], out var fw) ? fw : w;
                using var wt = OnnxTorchModule.ToTorch(initialWeight);
                learned = new Parameter(WeightScale(wt, bits, axis), requires_grad: true);
                result.WeightScales[node.Inputs[1]] = learned;
            }
            module.WeightHooks[node.Inputs[1]] = t => !result.WeightsEnabled ? t
                : learned is not null && result.BitsOverride is null ? FakeQuantizeLearnedWeight(t, learned, bits, axis)
                : FakeQuantizeWeight(t, result.BitsOverride is int o ? Math.Max(o, bits) : bits, axis);
            if (node.OpType is "Conv" or "Gemm" && node.Inputs.Count > 2 && QuantizerOf(node.Inputs[0]) is { } input)
            {
                int? biasAxis = axis;
                module.BiasHooks[node.Name] = (b, wFloat) => result.WeightsEnabled && input.FakeQuantEnabled
                    ? FakeQuantizeBias(b, wFloat, input.CurrentScale, result.BitsOverride is int o ? Math.Max(o, bits) : bits, biasAxis,
                        learned is not null && result.BitsOverride is null ? learned : null)
                    : b;
            }
        }
        return result;
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

    /// <summary>16 bits for the first third of the quantized steps, 8 for the second, then the target (null: no override).</summary>
    private static int? GradualBits(long quantStep, long quantSteps)
        => quantStep < quantSteps / 3 ? 16 : quantStep < 2 * quantSteps / 3 ? 8 : null;

    /// <summary>The table of the deployed graph with the trained ranges in place of calibrated ones.</summary>
    private static CalibrationTable WithRanges(CalibrationTable table, Quantizers quantizers)
    {
        var result = new CalibrationTable();
        foreach (var e in table)
        {
            if (e.Kind == TensorKind.Weight && quantizers.WeightScales.TryGetValue(e.TensorName, out var learned)
                && quantizers.Weights.TryGetValue(e.TensorName, out var spec) && e.Axis == spec.Axis)
            {
                // The learned step sizes, as the symmetric ranges the writer turns back into them (max|w| = s * qmax).
                float[] scales = learned.detach().abs().data<float>().ToArray();
                int qmax = (1 << (spec.Bits - 1)) - 1;
                float[] max = scales.Select(v => v * qmax).ToArray();
                result.Add(new CalibrationTableEntry(e.TensorName, e.Kind, e.Method, e.Bits, e.IsSigned, e.IsSymmetric, e.Axis,
                    max.Select(v => -v).ToArray(), max, scales, new int[scales.Length], e.Histogram));
            }
            else if (e.Kind == TensorKind.Activation && e.RangeSource is null && quantizers.Activations.TryGetValue(e.TensorName, out var q))
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

    private static CalibrationTable Calibrate(MLContext context, AwareTrainingOptions options, OnnxModel deployGraph, TrainingRows rows, int? sampleCount = null)
    {
        int n = Math.Min(rows.Count, sampleCount ?? options.CalibrationSampleCount);
        var calibration = new CalibrationEstimatorOptions { ModelBytes = deployGraph.ToBytes(), PrepareGraph = false, SampleCount = n, IntraOpNumThreads = options.IntraOpNumThreads };
        string inputName = deployGraph.Graph.RuntimeInputs[0].Name;
        return ModelCalibrator.Run(context, calibration, new RowsDataView(rows, inputName, n)).Table;
    }

    private static double FakeQuantizedAccuracy(OnnxTorchModule module, TrainingRows rows, bool final)
    {
        module.eval();
        long correct = 0;
        using (torch.no_grad())
        {
            var order = Enumerable.Range(0, rows.Count).ToArray();
            for (int start = 0; start < rows.Count; start += 256)
            {
                using var scope = torch.NewDisposeScope();
                int count = Math.Min(256, rows.Count - start);
                var (x, y) = Batch(rows, order, start, count);
                correct += Argmax(module.forward(x)).eq(y).sum().item<long>();
            }
        }
        if (!final)
            module.train();
        return (double)correct / rows.Count;
    }

    /// <summary>Argmax with ties to the lowest class index (as the accuracy figures are defined).</summary>
    private static Tensor Argmax(Tensor logits)
    {
        Tensor max = logits.amax([1L], keepdim: true);
        Tensor classes = torch.arange(logits.shape[1], dtype: ScalarType.Int64).expand_as(logits);
        return torch.where(logits == max, classes, torch.full_like(classes, long.MaxValue)).amin([1L]);
    }

    /// <summary>Top-1 accuracy of an ONNX model on rows (ONNX Runtime, CPU, one thread; ties to the lowest class).</summary>
    internal static double Accuracy(byte[] model, TrainingRows rows)
    {
        using var so = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
        using var session = new InferenceSession(model, so);
        string input = session.InputMetadata.Keys.First(), output = session.OutputMetadata.Keys.First();
        long correct = 0;
        const int batch = 256;
        for (int start = 0; start < rows.Count; start += batch)
        {
            int count = Math.Min(batch, rows.Count - start);
            long[] shape = [count, .. rows.InputDims];
            using var x = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, rows.Features.AsMemory(start * rows.RowSize, count * rows.RowSize), shape);
            using var results = session.Run(new RunOptions(), [input], [x], [output]);
            ReadOnlySpan<float> logits = results[0].GetTensorDataAsSpan<float>();
            int classes = logits.Length / count;
            for (int r = 0; r < count; r++)
                correct += QuantizationComparer.ArgMax(logits.Slice(r * classes, classes)) == rows.Labels[start + r] ? 1 : 0;
        }
        return (double)correct / rows.Count;
    }

    private static (Tensor X, Tensor Y) Batch(TrainingRows rows, int[] order, int start, int count)
    {
        var x = new float[count * rows.RowSize];
        var y = new long[count];
        for (int i = 0; i < count; i++)
        {
            int r = order[start + i];
            Array.Copy(rows.Features, (long)r * rows.RowSize, x, (long)i * rows.RowSize, rows.RowSize);
            y[i] = rows.Labels[r];
        }
        return (torch.tensor(x, [count, .. rows.InputDims]), torch.tensor(y));
    }

    /// <summary>Fisher-Yates with a seed per (seed, epoch): the same order on every run, resumable by epoch.</summary>
    private static int[] Shuffle(int count, int seed, int epoch)
    {
        var order = Enumerable.Range(0, count).ToArray();
        new Random(HashCode.Combine(seed, epoch, 0x5A17)).Shuffle(order);
        return order;
    }

    private static (TrainingRows, TrainingRows) Split(TrainingRows rows, int first)
        => (new TrainingRows(rows.Features[..(first * rows.RowSize)], rows.Labels[..first], rows.RowSize, rows.InputDims),
            new TrainingRows(rows.Features[(first * rows.RowSize)..], rows.Labels[first..], rows.RowSize, rows.InputDims));

    private static TrainingRows Load(IDataView data, string featureColumn, string labelColumn, long[] rowDims, string paramName)
    {
        int rowSize = checked((int)rowDims.Aggregate(1L, (a, b) => a * b));
        var features = data.Schema.GetColumnOrNull(featureColumn) ?? throw Internal.SchemaErrors.MissingColumn(paramName, featureColumn);
        if (features.Type is not VectorDataViewType { ItemType: var item } vector || item != NumberDataViewType.Single || (vector.Size != 0 && vector.Size != rowSize))
            throw Internal.SchemaErrors.Mismatch(paramName, featureColumn, $"Vector<Single, {rowSize}>", Internal.SchemaShapes.Describe(features.Type));
        var label = data.Schema.GetColumnOrNull(labelColumn) ?? throw Internal.SchemaErrors.MissingColumn(paramName, labelColumn);
        var labelType = label.Type;
        bool key = labelType is KeyDataViewType;
        if (!(key || labelType == NumberDataViewType.UInt32 || labelType == NumberDataViewType.Int32 || labelType == NumberDataViewType.Int64 || labelType == NumberDataViewType.Single))
            throw Internal.SchemaErrors.Mismatch(paramName, labelColumn, "UInt32, Int32, Int64, Single or a key type", Internal.SchemaShapes.Describe(labelType));

        // Rows are copied whole into one growing array (preallocated when the row count is known).
        long known = data.GetRowCount() ?? 1024;
        var xs = new float[checked((int)Math.Min(known * rowSize, Array.MaxLength))];
        var ys = new List<long>((int)Math.Min(known, int.MaxValue));
        int filled = 0;
        using var cursor = data.GetRowCursor([features, label]);
        var getFeatures = cursor.GetGetter<VBuffer<float>>(features);
        Func<long> getLabel = labelType switch
        {
            _ when key || labelType == NumberDataViewType.UInt32 => Getter<uint>(cursor, label, v => key ? (long)v - 1 : v),
            _ when labelType == NumberDataViewType.Int32 => Getter<int>(cursor, label, v => v),
            _ when labelType == NumberDataViewType.Int64 => Getter<long>(cursor, label, v => v),
            _ => Getter<float>(cursor, label, v => float.IsFinite(v) ? (long)v : throw new InvalidOperationException($"Label column '{labelColumn}' has the non-finite value {v} at row {cursor.Position}.")),
        };
        VBuffer<float> row = default;
        while (cursor.MoveNext())
        {
            getFeatures(ref row);
            if (row.Length != rowSize)
                throw new InvalidOperationException($"Column '{featureColumn}' row {cursor.Position} has {row.Length} values; the model takes {rowSize}.");
            if (filled + rowSize > xs.Length)
                Array.Resize(ref xs, checked(Math.Max(xs.Length * 2, filled + rowSize)));
            row.CopyTo(xs.AsSpan(filled, rowSize));
            filled += rowSize;
            ys.Add(getLabel());
        }
        return new TrainingRows(filled == xs.Length ? xs : xs[..filled], [.. ys], rowSize, rowDims);
    }

    private static Func<long> Getter<T>(DataViewRow row, DataViewSchema.Column column, Func<T, long> convert)
    {
        var g = row.GetGetter<T>(column);
        return () => { T v = default!; g(ref v); return convert(v); };
    }

    /// <summary>The first rows of an in-memory set as an IDataView with one vector column (for the calibrator).</summary>
    private sealed class RowsDataView(TrainingRows rows, string column, int count) : IDataView
    {
        public TrainingRows Rows { get; } = rows;
        public bool CanShuffle => false;
        public DataViewSchema Schema { get; } = BuildSchema(column, rows.RowSize);
        public long? GetRowCount() => count;
        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(this);
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => [new Cursor(this)];

        private static DataViewSchema BuildSchema(string column, int size)
        {
            var b = new DataViewSchema.Builder();
            b.AddColumn(column, new VectorDataViewType(NumberDataViewType.Single, size));
            return b.ToSchema();
        }

        private sealed class Cursor(RowsDataView view) : DataViewRowCursor
        {
            private long _position = -1;
            public override DataViewSchema Schema => view.Schema;
            public override long Position => _position;
            public override long Batch => 0;
            public override bool MoveNext() => ++_position < view.GetRowCount();
            public override bool IsColumnActive(DataViewSchema.Column column) => true;
            public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);
            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
            {
                ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> value) =>
                {
                    int size = view.Rows.RowSize;
                    var editor = VBufferEditor.Create(ref value, size);
                    view.Rows.Features.AsSpan((int)_position * size, size).CopyTo(editor.Values);
                    value = editor.Commit();
                };
                return (ValueGetter<TValue>)(Delegate)getter;
            }
        }
    }
}

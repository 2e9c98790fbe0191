using Microsoft.ML.Runtime;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.PostTraining;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// The training loop: Adam over the module's parameters and the quantizers' learned ranges, batches in the seeded
/// order of each epoch, the schedule (float warm-up, gradual bit width, observer and BatchNormalization freeze),
/// optional distillation from a float teacher, progress, checkpoints and per-epoch reports. Resumes from a
/// checkpoint at the step it stopped.
/// </summary>
internal sealed class TrainingLoop(AwareTrainingOptions options, OnnxTorchModule module, SimulatedQuantization quantization, TrainingRows train, TrainingRows validation, OperationProgress progress)
{
    private const int EvaluationBatchSize = 256;

    private readonly bool _quantize = !options.FloatFineTune;
    private readonly int _observerFreezeEpoch = options.ObserverFreezeEpoch ?? options.Epochs - 1;

    private long StepsPerEpoch => (train.Count + options.TrainingBatchSize - 1) / options.TrainingBatchSize;

    private long TotalSteps => StepsPerEpoch * options.Epochs;

    private long WarmupSteps => _quantize ? (long)(options.WarmupFraction * TotalSteps) : 0;

    /// <summary>Trains all epochs (the rest of them when the checkpoint has a position) and returns the epoch reports.</summary>
    public List<EpochReport> Run(OnnxTorchModule? teacher, TrainingCheckpoint? checkpoint)
    {
        var parameters = module.parameters().Concat(quantization.Parameters).ToList();
        using var optimizer = optim.Adam(parameters, options.LearningRate);
        CheckpointState? resume = checkpoint?.TryLoad(module, optimizer, quantization, progress.Channel);
        var epochs = new List<EpochReport>(resume?.Epochs ?? []);
        double? lastValidation = epochs.LastOrDefault()?.ValidationAccuracy;
        long step = resume?.Step ?? 0;
        TimeProvider clock = options.Clock;
        long started = clock.GetTimestamp();
        long rowsRun = 0;

        for (int epoch = resume?.Epoch ?? 0; epoch < options.Epochs; epoch++)
        {
            // A resumed epoch continues the checkpoint's loss and time; its rows/s counts only the rows timed.
            bool resumed = resume is not null && epoch == resume.Epoch;
            double lossSum = resumed ? resume!.LossSum : 0;
            double earlierSeconds = resumed ? resume!.EpochSeconds : 0;
            int firstRow = resumed ? resume!.NextRow : 0;
            module.FoldBatchNorm = epoch >= options.BatchNormFreezeEpoch;
            quantization.SetObserving(epoch < _observerFreezeEpoch);
            int[] order = train.EpochOrder(options.Seed, epoch);
            long epochStarted = clock.GetTimestamp();
            module.train();
            for (int start = firstRow; start < train.Count; start += options.TrainingBatchSize, step++)
            {
                options.CancellationToken.ThrowIfCancellationRequested();
                bool quantizing = _quantize && step >= WarmupSteps;
                quantization.SetQuantizing(quantizing, options.GradualBitWidth && quantizing ? GradualBits(step - WarmupSteps, TotalSteps - WarmupSteps) : null);
                int count = Math.Min(options.TrainingBatchSize, train.Count - start);
                float loss = Step(optimizer, teacher, order, start, count, epoch, step);
                lossSum += (double)loss * count;
                rowsRun += count;
                options.Progress?.Report(new AwareTrainingProgress(epoch, step, TotalSteps, loss, lastValidation, rowsRun / clock.GetElapsedTime(started).TotalSeconds));
                progress.Report(0, epoch, options.Epochs);
                progress.SetMetric(0, loss);
                progress.ReportSteps(step + 1, TotalSteps, (done, all) => $"Step {done} of {all} (epoch {epoch + 1}/{options.Epochs}): loss {loss:F4}.", unit: 1);
                if (checkpoint is not null && (step + 1) % options.CheckpointEverySteps == 0)
                {
                    double seconds = earlierSeconds + clock.GetElapsedTime(epochStarted).TotalSeconds;
                    checkpoint.Save(module, optimizer, quantization, new CheckpointState(epoch, start + count, step + 1, lossSum, seconds, [.. epochs]));
                }
            }
            double epochSeconds = earlierSeconds + clock.GetElapsedTime(epochStarted).TotalSeconds;
            double rate = train.Count / epochSeconds;
            lastValidation = validation.Count > 0 ? Accuracy(module, validation) : null;
            epochs.Add(new EpochReport(epoch, lossSum / train.Count, lastValidation, rate));
            progress.Info($"Epoch {epoch + 1}/{options.Epochs}: loss {lossSum / train.Count:F4}" +
                (lastValidation is { } acc ? $", validation accuracy {acc:P2}" : "") + $", {rate:F0} rows/s.");
            progress.Report(0, epoch + 1, options.Epochs);
            progress.SetMetric(0, lossSum / train.Count);
            progress.SetMetric(1, lastValidation);
            progress.Checkpoint();
            if (epoch + 1 < options.Epochs && options.ContinueAfterEpoch?.Invoke(epoch + 1, TimeSpan.FromSeconds(epochSeconds)) == false)
                break;
        }
        return epochs;
    }

    /// <summary>One optimizer step on rows [start, start + count) of the epoch's order; returns the batch loss.</summary>
    private float Step(Adam optimizer, OnnxTorchModule? teacher, int[] order, int start, int count, int epoch, long step)
    {
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
        return value;
    }

    /// <summary>16 bits for the first third of the quantized steps, 8 for the second, then the target (null: no override).</summary>
    private static int? GradualBits(long quantStep, long quantSteps)
        => quantStep < quantSteps / 3 ? 16 : quantStep < 2 * quantSteps / 3 ? 8 : null;

    /// <summary>Top-1 accuracy of the module as it is switched now (fake-quantized or float), in eval mode, which it leaves on.</summary>
    internal static double Accuracy(OnnxTorchModule module, TrainingRows rows)
    {
        module.eval();
        long correct = 0;
        using (torch.no_grad())
        {
            int[] order = Enumerable.Range(0, rows.Count).ToArray();
            for (int start = 0; start < rows.Count; start += EvaluationBatchSize)
            {
                using var scope = torch.NewDisposeScope();
                int count = Math.Min(EvaluationBatchSize, rows.Count - start);
                var (x, y) = Batch(rows, order, start, count);
                correct += Argmax(module.forward(x)).eq(y).sum().item<long>();
            }
        }
        return (double)correct / rows.Count;
    }

    /// <summary>Argmax with ties to the lowest class index (as the accuracy figures are defined).</summary>
    private static Tensor Argmax(Tensor logits)
    {
        Tensor max = logits.amax([1L], keepdim: true);
        Tensor classes = torch.arange(logits.shape[1], dtype: ScalarType.Int64).expand_as(logits);
        return torch.where(logits == max, classes, torch.full_like(classes, long.MaxValue)).amin([1L]);
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
}

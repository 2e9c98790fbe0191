using System.Globalization;
using System.Security.Cryptography;
using Microsoft.ML.Runtime;
using Microsoft.ML.Quantization.PostTraining;
using TorchSharp.Modules;

namespace Microsoft.ML.Quantization.AwareTraining;

/// <summary>
/// Where a checkpoint stands: the epoch, the next row of its shuffled order, the next step, the loss and the training
/// seconds of that epoch so far, and the finished epochs.
/// </summary>
internal sealed record CheckpointState(int Epoch, int NextRow, long Step, double LossSum, double EpochSeconds, List<EpochReport> Epochs);

/// <summary>
/// What a training run is: every setting that changes the trained weights, by name, with the model and the rows as
/// content hashes. A checkpoint carries its run's fingerprint and is refused by any other run, naming the differences.
/// </summary>
internal sealed class TrainingFingerprint
{
    /// <summary>The options that change training, as they enter the fingerprint.</summary>
    internal static readonly IReadOnlyList<(string Name, Func<AwareTrainingOptions, object?> Value)> TrainingOptions =
    [
        (nameof(AwareTrainingOptions.FloatFineTune), o => o.FloatFineTune),
        (nameof(AwareTrainingOptions.Precision), o => o.Precision),
        (nameof(AwareTrainingOptions.FirstLayerPrecision), o => o.FirstLayerPrecision),
        (nameof(AwareTrainingOptions.LastLayerPrecision), o => o.LastLayerPrecision),
        (nameof(AwareTrainingOptions.WeightsPerChannel), o => o.WeightsPerChannel),
        (nameof(AwareTrainingOptions.SymmetricActivations), o => o.SymmetricActivations),
        (nameof(AwareTrainingOptions.ActivationRanges), o => o.ActivationRanges),
        (nameof(AwareTrainingOptions.LearnWeightStepSizes), o => o.LearnWeightStepSizes),
        (nameof(AwareTrainingOptions.Epochs), o => o.Epochs),
        (nameof(AwareTrainingOptions.TrainingBatchSize), o => o.TrainingBatchSize),
        (nameof(AwareTrainingOptions.LearningRate), o => o.LearningRate),
        (nameof(AwareTrainingOptions.Seed), o => o.Seed),
        (nameof(AwareTrainingOptions.WarmupFraction), o => o.WarmupFraction),
        (nameof(AwareTrainingOptions.ObserverFreezeEpoch), o => o.ObserverFreezeEpoch),
        (nameof(AwareTrainingOptions.BatchNormFreezeEpoch), o => o.BatchNormFreezeEpoch),
        (nameof(AwareTrainingOptions.GradualBitWidth), o => o.GradualBitWidth),
        (nameof(AwareTrainingOptions.DistillationWeight), o => o.DistillationWeight),
        (nameof(AwareTrainingOptions.DistillationTemperature), o => o.DistillationTemperature),
    ];

    /// <summary>Options that change training through the data they select: the fingerprint has the content instead.</summary>
    internal static readonly IReadOnlyList<string> OptionsCoveredByContent =
    [
        nameof(AwareTrainingOptions.ModelPath), nameof(AwareTrainingOptions.ModelBytes),                 // "Model"
        nameof(AwareTrainingOptions.FeatureColumnName), nameof(AwareTrainingOptions.LabelColumnName),    // "TrainingRows"
        nameof(AwareTrainingOptions.ValidationFraction),                                                  // "TrainingRows" (the split)
        nameof(AwareTrainingOptions.CalibrationData), nameof(AwareTrainingOptions.CalibrationSampleCount), // "CalibrationRows"
    ];

    /// <summary>
    /// Options that do not change the trained weights: what is measured or deployed, whether training runs at all,
    /// where and how often checkpoints go, and the session settings of the deployed model (IntraOpNumThreads also
    /// sets libtorch's threads: a resumed run is bit-identical to an uninterrupted one at the same thread count).
    /// </summary>
    internal static readonly IReadOnlyList<string> OptionsNotChangingTraining =
    [
        nameof(AwareTrainingOptions.ValidationData), nameof(AwareTrainingOptions.Backend), nameof(AwareTrainingOptions.AllowBackendFallback), nameof(AwareTrainingOptions.NativeDevice),
        nameof(AwareTrainingOptions.MaxAccuracyDrop), nameof(AwareTrainingOptions.CheckpointPath), nameof(AwareTrainingOptions.CheckpointEverySteps),
        nameof(AwareTrainingOptions.Progress), nameof(AwareTrainingOptions.CancellationToken),
    ];

    private TrainingFingerprint(List<KeyValuePair<string, string>> entries) => Entries = entries;

    public IReadOnlyList<KeyValuePair<string, string>> Entries { get; }

    /// <summary>The fingerprint of a run: its training options, model and rows.</summary>
    public static TrainingFingerprint Of(AwareTrainingOptions options, byte[] model, TrainingRows train, TrainingRows calibration)
    {
        var entries = new List<KeyValuePair<string, string>>
        {
            new("Model", Convert.ToHexString(SHA256.HashData(model))),
            new("TrainingRows", $"{train.Count} rows, SHA-256 {train.ContentHash()}"),
            new("CalibrationRows", $"{Math.Min(calibration.Count, options.CalibrationSampleCount)} rows, SHA-256 {calibration.Take(options.CalibrationSampleCount).ContentHash()}"),
        };
        foreach (var (name, value) in TrainingOptions)
            entries.Add(new(name, Format(value(options))));
        return new TrainingFingerprint(entries);
    }

    private static string Format(object? value) => value switch
    {
        null => "null",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    public void Write(BinaryWriter writer)
    {
        writer.Write(Entries.Count);
        foreach (var (name, value) in Entries)
        {
            writer.Write(name);
            writer.Write(value);
        }
    }

    public static TrainingFingerprint Read(BinaryReader reader)
    {
        int count = reader.ReadInt32();
        if (count is < 0 or > 1000)
            throw new InvalidDataException($"the header has {count} settings");
        var entries = new List<KeyValuePair<string, string>>(count);
        for (int i = 0; i < count; i++)
            entries.Add(new(reader.ReadString(), reader.ReadString()));
        return new TrainingFingerprint(entries);
    }

    /// <summary>The settings that differ, worded for an error message ("Seed is 5 in the checkpoint, 6 in this run"), or null.</summary>
    public string? DifferencesFrom(TrainingFingerprint checkpoint)
    {
        var theirs = checkpoint.Entries.ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
        var differences = new List<string>();
        foreach (var (name, value) in Entries)
        {
            if (!theirs.Remove(name, out string? other))
                differences.Add($"{name} is not in the checkpoint (this run: {value})");
            else if (other != value)
                differences.Add($"{name} is {other} in the checkpoint, {value} in this run");
        }
        differences.AddRange(theirs.Select(e => $"{e.Key} is {e.Value} in the checkpoint and unknown to this run"));
        return differences.Count == 0 ? null : string.Join("; ", differences);
    }
}

/// <summary>
/// A training checkpoint file: the run's fingerprint, the position (<see cref="CheckpointState"/>), the module's
/// parameters and buffers, Adam's state and the quantizers' ranges. Written private (0600 on Unix) to a temporary
/// file and renamed over the last one, so a kill at any moment leaves a whole checkpoint; temporaries a killed
/// write left behind are removed by the next run.
/// </summary>
internal sealed class TrainingCheckpoint(string path, TrainingFingerprint fingerprint)
{
    private const int Magic = 0x504B4351; // "QCKP"
    private const int Version = 2;

    private readonly string _path = Path.GetFullPath(path);

    private string TempPrefix => Path.GetFileName(_path) + ".tmp-";

    public void Save(OnnxTorchModule module, Adam optimizer, SimulatedQuantization quantization, CheckpointState state)
    {
        string temp = Path.Combine(Path.GetDirectoryName(_path)!, TempPrefix + Guid.NewGuid().ToString("N"));
        var create = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            create.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        try
        {
            using (var stream = new FileStream(temp, create))
            using (var w = new BinaryWriter(stream))
            {
                w.Write(Magic);
                w.Write(Version);
                fingerprint.Write(w);
                w.Write(state.Epoch);
                w.Write(state.NextRow);
                w.Write(state.Step);
                w.Write(state.LossSum);
                w.Write(state.EpochSeconds);
                w.Write(state.Epochs.Count);
                foreach (var e in state.Epochs)
                {
                    w.Write(e.Epoch);
                    w.Write(e.MeanLoss);
                    w.Write(e.ValidationAccuracy ?? double.NaN);
                    w.Write(e.RowsPerSecond);
                }
                module.save(w);
                optimizer.save_state_dict(w);
                quantization.WriteState(w);
                w.Flush();
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, _path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>Restores the checkpoint into the run's objects, or returns null when there is none; refuses one of another run.</summary>
    public CheckpointState? TryLoad(OnnxTorchModule module, Adam optimizer, SimulatedQuantization quantization, IChannel channel)
    {
        RemoveStaleTemporaries();
        if (!File.Exists(_path))
            return null;
        try
        {
            using var r = new BinaryReader(File.OpenRead(_path));
            if (r.ReadInt32() != Magic)
                throw new InvalidDataException("not a QatMl training checkpoint (bad magic number)");
            int version = r.ReadInt32();
            if (version != Version)
                throw new InvalidDataException($"it has format version {version}; this QatMl reads version {Version}");
            if (fingerprint.DifferencesFrom(TrainingFingerprint.Read(r)) is { } differences)
                throw new InvalidDataException($"it was written by a different training run: {differences}");
            var state = new CheckpointState(r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), r.ReadDouble(), r.ReadDouble(), []);
            int finished = r.ReadInt32();
            for (int i = 0; i < finished; i++)
            {
                int epoch = r.ReadInt32();
                double loss = r.ReadDouble(), accuracy = r.ReadDouble(), rate = r.ReadDouble();
                state.Epochs.Add(new EpochReport(epoch, loss, double.IsNaN(accuracy) ? null : accuracy, rate));
            }
            module.load(r);
            optimizer.load_state_dict(r);
            quantization.ReadState(r);
            channel.Info(MessageSensitivity.None, "{0}", $"Resuming from checkpoint '{_path}' at epoch {state.Epoch + 1}, step {state.Step}.");
            return state;
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException or ArgumentException or InvalidOperationException)
        {
            throw new InvalidDataException($"Cannot resume from checkpoint '{_path}': {e.Message}. Delete it to start over, or resume with the run's own settings and data.", e);
        }
    }

    /// <summary>Training finished: its checkpoint is spent (a later Fit with the same options starts over).</summary>
    public void Delete()
    {
        File.Delete(_path);
        RemoveStaleTemporaries();
    }

    private void RemoveStaleTemporaries()
    {
        string? folder = Path.GetDirectoryName(_path);
        if (folder is null || !Directory.Exists(folder))
            return;
        foreach (string stale in Directory.EnumerateFiles(folder, TempPrefix + "*"))
            File.Delete(stale);
    }
}

using System.Globalization;
using Microsoft.ML;
using QatMl.Tool.Cli;

namespace QatMl.Tool.Data;

/// <summary>
/// The rows a command works on: the fitted preprocessing (raw rows to model input), and the calibration and evaluation
/// rows preprocessed into memory. Rows are shuffled once with a fixed seed, so a split of one data set is stable.
/// </summary>
internal sealed class PreparedData
{
    private PreparedData(RawData raw, ITransformer preprocessing, ModelRows calibration, ModelRows evaluation, int[] evaluationIndices, bool useLabels, string? labelNote)
    {
        Raw = raw;
        Preprocessing = preprocessing;
        Calibration = calibration;
        Evaluation = evaluation;
        EvaluationIndices = evaluationIndices;
        UseLabels = useLabels;
        LabelNote = labelNote;
    }

    public RawData Raw { get; }

    public ITransformer Preprocessing { get; }

    public ModelRows Calibration { get; }

    public ModelRows Evaluation { get; }

    /// <summary>Indices into <see cref="Raw"/> of the evaluation rows, in order.</summary>
    public IReadOnlyList<int> EvaluationIndices { get; }

    /// <summary>Whether labels are used (they exist and index the model's output).</summary>
    public bool UseLabels { get; }

    /// <summary>Why labels are not used, when they exist but do not fit the model.</summary>
    public string? LabelNote { get; }

    /// <summary>
    /// Preprocesses <paramref name="calibrationRows"/> rows for calibration (from <paramref name="calibrationData"/>, or
    /// the first shuffled rows of <paramref name="raw"/>, at most half of them) and up to <paramref name="evaluationRows"/>
    /// of the others for evaluation.
    /// </summary>
    public static PreparedData Prepare(MLContext context, ModelInfo model, RawData raw, RawData? calibrationData, Preprocessing recipe, int[]? inputShape,
        int calibrationRows, int? evaluationRows, ProgressBoard board, CancellationToken cancel)
        => Prepare(context, model, raw, calibrationData, InputPipeline.Build(context, raw, model, recipe, inputShape).Fit(raw.ToDataView(context, [0])),
            calibrationRows, evaluationRows, board, cancel);

    /// <summary>As above, with a fitted preprocessing (e.g. the one inside a saved model zip); calibrationRows 0 reads none.</summary>
    public static PreparedData Prepare(MLContext context, ModelInfo model, RawData raw, RawData? calibrationData, ITransformer preprocessing,
        int calibrationRows, int? evaluationRows, ProgressBoard board, CancellationToken cancel)
    {
        int[] order = Shuffled(raw.Count);
        int[] calibrationIndices, evaluationIndices;
        RawData calibrationSource = calibrationData ?? raw;
        if (calibrationData is not null)
        {
            calibrationIndices = Shuffled(calibrationData.Count).Take(calibrationRows).ToArray();
            evaluationIndices = order.Take(evaluationRows ?? order.Length).ToArray();
        }
        else
        {
            if (raw.Count < 2 && calibrationRows > 0)
                throw new ToolException($"The data has {raw.Count} row(s); at least 2 are needed (calibration and evaluation), or give --calibration-data.");
            int calibrate = Math.Min(calibrationRows, raw.Count / 2);
            calibrationIndices = order.Take(calibrate).ToArray();
            evaluationIndices = order.Skip(calibrate).Take(evaluationRows ?? raw.Count).ToArray();
        }
        if (evaluationIndices.Length == 0)
            throw new ToolException("No rows are left for evaluation.");

        ModelRows Load(RawData source, int[] indices, string what)
        {
            if (indices.Length == 0)
                return new ModelRows(model.Input.Name, [], source.Labels is null ? null : []);
            var step = board.Add($"preprocessing {what} rows", indices.Length);
            var rows = InputPipeline.Materialize(context, preprocessing, source, indices, model.Input.Name, n => step.Report(n), cancel);
            step.Complete();
            return rows;
        }
        ModelRows calibration = Load(calibrationSource, calibrationIndices, "calibration");
        ModelRows evaluation = Load(raw, evaluationIndices, "evaluation");

        bool useLabels = raw.Labels is not null;
        string? note = null;
        if (useLabels && model.Output.RowElements is long outputs)
        {
            uint maxLabel = raw.Labels!.Max();
            if (maxLabel >= outputs || (raw.ClassNames is { } names && names.Count != outputs))
            {
                useLabels = false;
                note = string.Create(CultureInfo.InvariantCulture,
                    $"labels not used: the model's output '{model.Output.Name}' has {outputs} values per row but the labels name {raw.ClassNames?.Count ?? (int)maxLabel + 1} classes");
            }
        }
        else if (!useLabels)
            note = "no labels";
        return new PreparedData(raw, preprocessing, calibration, evaluation, evaluationIndices, useLabels, note);
    }

    private static int[] Shuffled(int count)
    {
        int[] order = Enumerable.Range(0, count).ToArray();
        new Random(0).Shuffle(order);
        return order;
    }
}

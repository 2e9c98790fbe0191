using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.PostTraining;

namespace Microsoft.ML.Quantization.Auto;

/// <summary>How a trial is scored on the validation rows (<see cref="AutoQuantizationOptions.Metric"/>); higher is better for every one.</summary>
public enum AutoQuantizationMetric
{
    /// <summary>
    /// Multiclass accuracy in percent: the argmax of the score output's row against the label (UInt32, Int32, Int64, Single or a key
    /// column; see <see cref="AutoQuantizationOptions.LabelOffset"/>). <see cref="AutoQuantizationOptions.MaxAccuracyDrop"/> is in percentage points.
    /// </summary>
    MulticlassAccuracy = 0,

    /// <summary>
    /// Binary area under the ROC curve (a fraction, 0 to 1) from ML.NET's <c>BinaryClassification.EvaluateNonCalibrated</c>: the score
    /// output's element <see cref="AutoQuantizationOptions.ScoreIndex"/> against a Boolean label. <see cref="AutoQuantizationOptions.MaxAccuracyDrop"/>
    /// is a fraction of AUC (0.005 is half a point).
    /// </summary>
    AreaUnderRocCurve = 1,

    /// <summary>
    /// Regression R-squared (a fraction, at most 1) from ML.NET's <c>Regression.Evaluate</c>: the score output's element
    /// <see cref="AutoQuantizationOptions.ScoreIndex"/> against a Single label. <see cref="AutoQuantizationOptions.MaxAccuracyDrop"/> is a fraction of R-squared.
    /// </summary>
    RSquared = 2,

    /// <summary>No label: the mean row cosine of each output against the float model's, the worst output; held to <see cref="AutoQuantizationOptions.MinOutputCosine"/>.</summary>
    OutputCosine = 3,

    /// <summary>
    /// No label: the signal-to-quantization-noise ratio in dB of each output against the float model's over all rows, the worst output;
    /// held to <see cref="AutoQuantizationOptions.MinOutputSqnr"/>.
    /// </summary>
    OutputSqnr = 4,
}

/// <summary>
/// Scores the outputs of one pass over the validation rows by the experiment's metric: the label metrics with ML.NET's evaluators
/// (multiclass accuracy by argmax), the output metrics against the float model's cached outputs.
/// </summary>
internal sealed class AutoScorer
{
    private readonly MLContext _context;
    private readonly AutoQuantizationOptions _options;
    private int _scoreOutput;
    private double[] _labels = [];

    private AutoScorer(MLContext context, AutoQuantizationOptions options, AutoQuantizationMetric metric)
    {
        _context = context;
        _options = options;
        Metric = metric;
    }

    public AutoQuantizationMetric Metric { get; }

    public bool UsesLabel => Metric is AutoQuantizationMetric.MulticlassAccuracy or AutoQuantizationMetric.AreaUnderRocCurve or AutoQuantizationMetric.RSquared;

    public string Name => Metric switch
    {
        AutoQuantizationMetric.MulticlassAccuracy => "accuracy",
        AutoQuantizationMetric.AreaUnderRocCurve => "AUC",
        AutoQuantizationMetric.RSquared => "R-squared",
        AutoQuantizationMetric.OutputCosine => "output cosine",
        _ => "output SQNR",
    };

    /// <summary>The float model's metric; set by <see cref="Bind"/>.</summary>
    public double FloatMetric { get; private set; }

    /// <summary>The metric and checks of <paramref name="options"/>, the label column checked against <paramref name="validation"/> (before any work).</summary>
    public static AutoScorer Create(MLContext context, AutoQuantizationOptions options, DataViewSchema validation)
    {
        var scorer = new AutoScorer(context, options, options.EffectiveMetric);
        if (scorer.UsesLabel)
            LabelGetter(scorer.Metric, validation.GetColumnOrNull(options.LabelColumnName!) is { } column ? column
                : throw Internal.SchemaErrors.MissingColumn("validationData", options.LabelColumnName!, validation,
                    $"{nameof(AutoQuantizationOptions)}.{nameof(AutoQuantizationOptions.LabelColumnName)} names the label that {scorer.Name} is scored against."), null);
        return scorer;
    }

    /// <summary>
    /// Checks the score output against the model's scored outputs (<paramref name="outputs"/>), before calibration.
    /// </summary>
    public void CheckOutput(OnnxModel model, IReadOnlyList<string> outputs)
    {
        if (!UsesLabel)
            return;
        string? wanted = _options.ScoreOutputName;
        _scoreOutput = wanted is null ? 0 : outputs.ToList().IndexOf(wanted);
        if (_scoreOutput < 0)
        {
            var graph = model.Graph.Outputs.FirstOrDefault(o => o.Name == wanted);
            string why = graph is null ? "the model has no such output" : $"its element type is {graph.ElementType}, not Float";
            throw new ArgumentOutOfRangeException(nameof(AutoQuantizationOptions.ScoreOutputName),
                $"Score output '{wanted}' cannot be scored ({why}); the scored float outputs are {string.Join(", ", outputs.Select(o => $"'{o}'"))}.");
        }
        if (outputs.Count == 0)
            throw new InvalidOperationException("The model has no float output to score.");
    }

    /// <summary>Reads the labels of the first <paramref name="rows"/> validation rows and scores the float model's outputs (before any trial).</summary>
    public void Bind(IDataView validation, float[][] reference, long[][] outputShapes, int rows)
    {
        if (UsesLabel)
        {
            var column = validation.Schema[_options.LabelColumnName!];
            using var cursor = validation.GetRowCursor([column]);
            var get = LabelGetter(Metric, column, cursor)!;
            var labels = new List<double>(rows);
            while (labels.Count < rows && cursor.MoveNext())
                labels.Add(get());
            _labels = [.. labels];
            int rowSize = reference[_scoreOutput].Length / rows;
            string output = _options.ScoreOutputName ?? "the first output";
            if (Metric != AutoQuantizationMetric.MulticlassAccuracy)
            {
                if (_options.ScoreIndex is { } index && index >= rowSize)
                    throw new ArgumentOutOfRangeException(nameof(AutoQuantizationOptions.ScoreIndex),
                        $"ScoreIndex {index} is outside {output}, which has {rowSize} values per row (shape [{string.Join(", ", outputShapes[_scoreOutput])}]).");
                if (_options.ScoreIndex is null && rowSize != 1)
                    throw new ArgumentOutOfRangeException(nameof(AutoQuantizationOptions.ScoreIndex),
                        $"{Name} needs one score per row, and {output} has {rowSize} values per row (shape [{string.Join(", ", outputShapes[_scoreOutput])}]); " +
                        $"set {nameof(AutoQuantizationOptions.ScoreIndex)} to the value that is the score.");
            }
        }
        FloatMetric = Metric switch
        {
            AutoQuantizationMetric.OutputCosine => 1,
            AutoQuantizationMetric.OutputSqnr => double.PositiveInfinity,
            _ => Score(reference, reference, rows),
        };
    }

    /// <summary>The metric of one pass's outputs (<paramref name="reference"/>: the float model's, for the output metrics).</summary>
    public double Score(float[][] outputs, float[][] reference, int rows)
    {
        switch (Metric)
        {
            case AutoQuantizationMetric.OutputCosine:
                return SampleRunner.WorstMeanCosine(reference, outputs, rows);
            case AutoQuantizationMetric.OutputSqnr:
                return WorstSqnr(reference, outputs, rows);
            case AutoQuantizationMetric.MulticlassAccuracy:
            {
                int[] predicted = SampleRunner.ArgMaxes(outputs[_scoreOutput], rows);
                return 100.0 * predicted.Where((c, r) => c == (long)_labels[r] - _options.LabelOffset).Count() / rows;
            }
        }
        float[] output = outputs[_scoreOutput];
        int size = output.Length / rows, index = _options.ScoreIndex ?? 0;
        float ScoreOf(int r) => output[r * size + index];
        if (Metric == AutoQuantizationMetric.AreaUnderRocCurve)
        {
            IDataView binary = _context.Data.LoadFromEnumerable(Enumerable.Range(0, rows).Select(r => new BinaryRow { Label = _labels[r] != 0, Score = ScoreOf(r), PredictedLabel = ScoreOf(r) > 0 }));
            return _context.BinaryClassification.EvaluateNonCalibrated(binary, nameof(BinaryRow.Label), nameof(BinaryRow.Score), nameof(BinaryRow.PredictedLabel)).AreaUnderRocCurve;
        }
        IDataView regression = _context.Data.LoadFromEnumerable(Enumerable.Range(0, rows).Select(r => new RegressionRow { Label = (float)_labels[r], Score = ScoreOf(r) }));
        return _context.Regression.Evaluate(regression, nameof(RegressionRow.Label), nameof(RegressionRow.Score)).RSquared;
    }

    /// <summary>Whether a trial's metric meets the constraint, and why not.</summary>
    public (bool Accepted, string? Reason) Judge(double metric)
    {
        switch (Metric)
        {
            case AutoQuantizationMetric.OutputCosine:
                return metric >= _options.MinOutputCosine ? (true, null) : (false, $"output cosine {metric:F5} < {_options.MinOutputCosine}");
            case AutoQuantizationMetric.OutputSqnr:
                return metric >= _options.MinOutputSqnr ? (true, null) : (false, $"output SQNR {metric:F2} dB < {_options.MinOutputSqnr} dB");
        }
        double drop = FloatMetric - metric;
        // A small tolerance: the drop of the counts and the difference of the two percentages round differently.
        if (drop <= _options.MaxAccuracyDrop + 1e-9)
            return (true, null);
        return (false, Metric == AutoQuantizationMetric.MulticlassAccuracy
            ? $"accuracy drop {drop:F2} points > {_options.MaxAccuracyDrop}"
            : $"{Name} drop {drop:F5} > {_options.MaxAccuracyDrop}");
    }

    /// <summary>The worst output's SQNR in dB over every row the float model keeps finite.</summary>
    internal static double WorstSqnr(float[][] reference, float[][] result, int rows)
    {
        double worst = double.PositiveInfinity;
        for (int o = 0; o < result.Length; o++)
        {
            int size = result[o].Length / rows;
            double signal = 0, noise = 0;
            for (int r = 0; r < rows; r++)
            {
                var expected = reference[o].AsSpan(r * size, size);
                if (!SampleRunner.AllFinite(expected))
                    continue;
                var row = result[o].AsSpan(r * size, size);
                for (int i = 0; i < size; i++)
                {
                    // A non-finite quantized value counts as a lost one (noise as large as the value).
                    double d = (float.IsFinite(row[i]) ? row[i] : 0.0) - expected[i];
                    signal += (double)expected[i] * expected[i];
                    noise += d * d;
                }
            }
            worst = Math.Min(worst, QuantizationComparer.Sqnr(signal, noise));
        }
        return worst;
    }

    /// <summary>A getter of the label as a double, after checking the column's type against the metric (null row: check only).</summary>
    private static Func<double>? LabelGetter(AutoQuantizationMetric metric, DataViewSchema.Column column, DataViewRow? row)
    {
        DataViewType type = column.Type;
        switch (metric)
        {
            case AutoQuantizationMetric.AreaUnderRocCurve:
                if (type is not BooleanDataViewType)
                    throw Mismatch(column, "Boolean (ML.NET's binary classification label)", type, metric);
                if (row is null)
                    return null;
                var b = row.GetGetter<bool>(column);
                return () => { bool v = false; b(ref v); return v ? 1 : 0; };
            case AutoQuantizationMetric.RSquared:
                if (type != NumberDataViewType.Single)
                    throw Mismatch(column, "Single (ML.NET's regression label)", type, metric);
                if (row is null)
                    return null;
                var f = row.GetGetter<float>(column);
                return () => { float v = 0; f(ref v); return v; };
            default:
                if (!(type is KeyDataViewType || type == NumberDataViewType.UInt32 || type == NumberDataViewType.Int32 || type == NumberDataViewType.Int64 || type == NumberDataViewType.Single))
                    throw Mismatch(column, "UInt32, Int32, Int64, Single or a key (a class index)", type, metric);
                if (row is null)
                    return null;
                var l = QuantizationComparer.LabelGetter(row, column);
                return () => l();
        }
    }

    private static ArgumentOutOfRangeException Mismatch(DataViewSchema.Column column, string expected, DataViewType got, AutoQuantizationMetric metric)
        => new("validationData", $"Schema mismatch for label column '{column.Name}': {metric} needs {expected}, got {Internal.SchemaShapes.Describe(got)}.");

    private sealed class BinaryRow
    {
        public bool Label { get; set; }

        public float Score { get; set; }

        /// <summary>The evaluator requires it; the AUC does not depend on it (the score's sign, as for raw scores).</summary>
        public bool PredictedLabel { get; set; }
    }

    private sealed class RegressionRow
    {
        public float Label { get; set; }

        public float Score { get; set; }
    }
}

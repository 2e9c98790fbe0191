using Microsoft.ML.Quantization.Calibration;
using Microsoft.ML.Quantization.PostTraining;

namespace QatMl.Tool.Quantize;

/// <summary>What one trial quantizes: widths, how activations are calibrated, and which nodes stay float.</summary>
/// <param name="Name">Short label (report, console).</param>
/// <param name="Precision">Width of every quantized node.</param>
/// <param name="Int8FirstLast">The first and last Conv/Gemm/MatMul stay 8-bit (the usual guard for 4-bit weights).</param>
/// <param name="Method">Activation calibration method.</param>
/// <param name="FloatNodes">Nodes kept in float.</param>
/// <param name="Why">Why the search tried it.</param>
internal sealed record Scheme(string Name, QuantizationPrecision Precision, bool Int8FirstLast, CalibrationMethod Method, IReadOnlyList<string> FloatNodes, string Why)
{
    /// <summary>The automatic experiment's trial this scheme stands for (its per-node precisions), or null.</summary>
    public Microsoft.ML.Quantization.Auto.QuantizationTrial? AutoTrial { get; init; }

    public static Scheme Int8 { get; } = new("INT8", QuantizationPrecision.Int8, false, CalibrationMethod.MinMax, [], "8-bit weights and activations, MinMax ranges");

    public static Scheme W4A8 { get; } = new("W4A8", QuantizationPrecision.W4A8, true, CalibrationMethod.MinMax, [], "4-bit weights (first and last layer 8-bit), 8-bit activations");

    public PostTrainingOptions ToOptions(string modelPath, CalibrationTable table)
    {
        var options = new PostTrainingOptions { ModelPath = modelPath, CalibrationTable = table, Precision = Precision };
        if (Int8FirstLast)
            options.FirstLayerPrecision = options.LastLayerPrecision = QuantizationPrecision.Int8;
        if (AutoTrial is { } trial)
            trial.ApplyTo(options);
        else
            foreach (string node in FloatNodes)
                options.ExcludedNodes.Add(node);
        return options;
    }
}

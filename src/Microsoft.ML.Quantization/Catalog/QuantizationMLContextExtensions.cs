using System.Runtime.CompilerServices;
using Microsoft.ML.Quantization;

namespace Microsoft.ML;

/// <summary>Adds <c>mlContext.Quantization</c> to <see cref="MLContext"/>.</summary>
/// <remarks>A C# 14 extension property. Consumers on older language versions call <c>QuantizationMLContextExtensions.get_Quantization(mlContext)</c>.</remarks>
public static class QuantizationMLContextExtensions
{
    // One catalog per context, collected with it.
    private static readonly ConditionalWeakTable<MLContext, QuantizationCatalog> s_catalogs = new();

    extension(MLContext mlContext)
    {
        /// <summary>QatMl's catalog of quantization estimators for this context.</summary>
        public QuantizationCatalog Quantization
        {
            get
            {
                ArgumentNullException.ThrowIfNull(mlContext);
                return s_catalogs.GetValue(mlContext, static c => new QuantizationCatalog(c));
            }
        }
    }
}

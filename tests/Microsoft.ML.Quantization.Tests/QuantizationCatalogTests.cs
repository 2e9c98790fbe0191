namespace Microsoft.ML.Quantization.Tests;

public sealed class QuantizationCatalogTests
{
    [Fact]
    public void ExtensionPropertyReturnsOneCatalogPerContext()
    {
        var a = new MLContext(seed: 1);
        var b = new MLContext(seed: 1);
        Assert.Same(a.Quantization, a.Quantization);
        Assert.NotSame(a.Quantization, b.Quantization);
        Assert.Same(a, a.Quantization.Context);
    }

    [Fact]
    public void LoweredStaticGetterWorksForOlderLanguageVersions()
    {
        var context = new MLContext();
        Assert.Same(context.Quantization, QuantizationMLContextExtensions.get_Quantization(context));
    }
}

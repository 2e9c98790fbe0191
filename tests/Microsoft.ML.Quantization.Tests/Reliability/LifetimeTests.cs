using Microsoft.ML.Data;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.PostTraining;
using QatMl.Samples;

namespace Microsoft.ML.Quantization.Tests.Reliability;

/// <summary>
/// Dispose while cursors score, and use after Dispose, for every QatMl transformer that owns an ONNX Runtime session or
/// a native engine. Each runs in a child process: the bug class is a native crash.
/// </summary>
public sealed class LifetimeTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);

    [Theory]
    [InlineData("quantized-ort")]
    [InlineData("quantized-native")]
    [InlineData("scoring")]
    public void DisposeWhileFourThreadsScore_RunningBatchesFinish_LaterOnesThrowObjectDisposed(string kind)
    {
        ChildResult result = ChildProcess.Run("dispose-while-scoring", [kind], Limit).AssertSucceeded();
        // Every round disposed while the readers were still going: some batch after it saw ObjectDisposedException.
        Assert.Contains("rounds=6 interrupted=6", result.Output);
    }

    [Theory]
    [InlineData("quantized-ort")]
    [InlineData("quantized-native")]
    [InlineData("scoring")]
    public void UseAfterDispose_ThrowsObjectDisposedNamingThePublicType(string kind)
        => ChildProcess.Run("use-after-dispose", [kind], Limit).AssertSucceeded();

    private sealed record Subject(ITransformer Transformer, string PublicName);

    /// <summary>A fresh transformer of <paramref name="kind"/> (the quantized ones rebuilt from one PTQ result: cheap).</summary>
    private static Func<Subject> Factory(MLContext context, string kind, IDataView calibration)
    {
        if (kind == "scoring")
            return () => new Subject(context.Quantization.ScoreOnnxModel(new OnnxModelScoringOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, BatchSize = 16 })
                .Fit(calibration), nameof(OnnxModelScoringTransformer));
        var backend = kind == "quantized-native" ? QuantizedBackend.Native : QuantizedBackend.OnnxRuntime;
        var options = new PostTrainingOptions { ModelPath = TestData.FmnistNet, IntraOpNumThreads = 1, SampleCount = 200, BatchSize = 16, Backend = backend, AllowBackendFallback = false };
        using QuantizedModelTransformer fitted = context.Quantization.PostTraining(options).Fit(calibration);
        return () =>
        {
            var t = new QuantizedModelTransformer(context, fitted.QuantizedModel, fitted.Settings, fitted.Nodes);
            Assert.Equal(backend, t.Backend);
            return new Subject(t, nameof(QuantizedModelTransformer));
        };
    }

    private static void AssertNamesPublicType(ObjectDisposedException e, string publicName)
    {
        if (e.ObjectName != publicName || !e.Message.Contains(publicName, StringComparison.Ordinal))
            throw new InvalidOperationException($"ObjectDisposedException should name {publicName}: {e}");
    }

    [ChildMode("dispose-while-scoring")]
    internal static int DisposeWhileScoring(string[] args)
    {
        string kind = args[0];
        var context = new MLContext(seed: 1);
        IDataView calibration = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 200));
        IDataView test = FashionMnist.Load(context, FashionMnist.ReadTest(TestData.FashionMnistFolder, limit: 4000));
        Func<Subject> create = Factory(context, kind, calibration);
        int interrupted = 0;
        const int rounds = 6;
        for (int round = 0; round < rounds; round++)
        {
            Subject subject = create();
            IDataView scored = subject.Transformer.Transform(test);
            var started = new CountdownEvent(4);
            var outcomes = new string[4];
            var readers = Enumerable.Range(0, 4).Select(k => new Thread(() =>
            {
                bool signalled = false;
                try
                {
                    using DataViewRowCursor cursor = scored.GetRowCursor(scored.Schema.Where(c => c.Name == "logits"));
                    var getter = cursor.GetGetter<VBuffer<float>>(scored.Schema["logits"]);
                    VBuffer<float> value = default;
                    while (cursor.MoveNext())
                    {
                        getter(ref value);
                        if (!signalled)
                        {
                            started.Signal();
                            signalled = true;
                        }
                    }
                    outcomes[k] = "completed";
                }
                catch (ObjectDisposedException e)
                {
                    AssertNamesPublicType(e, subject.PublicName);
                    outcomes[k] = "disposed";
                }
                catch (Exception e)
                {
                    outcomes[k] = "failed: " + e;
                }
                finally
                {
                    if (!signalled)
                        started.Signal();
                }
            })).ToList();
            readers.ForEach(t => t.Start());
            started.Wait();
            // Later rounds dispose a little later, so some batches are inside the session or engine at that moment.
            Thread.Sleep(round);
            ((IDisposable)subject.Transformer).Dispose();
            readers.ForEach(t => t.Join());
            Console.WriteLine($"round {round}: {string.Join(", ", outcomes)}");
            if (outcomes.Any(o => o.StartsWith("failed", StringComparison.Ordinal)))
                return 1;
            if (outcomes.Contains("disposed"))
                interrupted++;
        }
        Console.WriteLine($"rounds={rounds} interrupted={interrupted}");
        return 0;
    }

    [ChildMode("use-after-dispose")]
    internal static int UseAfterDispose(string[] args)
    {
        string kind = args[0];
        var context = new MLContext(seed: 1);
        IDataView calibration = FashionMnist.Load(context, FashionMnist.ReadCalibration(TestData.FashionMnistFolder, limit: 200));
        Func<Subject> create = Factory(context, kind, calibration);
        string zip = Path.Combine(Path.GetTempPath(), $"qatml-disposed-{Environment.ProcessId}.zip");
        // Several fits and disposals in a row: the crash the issue saw came after a few earlier ones.
        for (int round = 0; round < 5; round++)
        {
            Subject subject = create();
            IDataView before = subject.Transformer.Transform(calibration);
            Assert.Equal(200, before.GetColumn<VBuffer<float>>("logits").Count());
            ((IDisposable)subject.Transformer).Dispose();
            ((IDisposable)subject.Transformer).Dispose(); // twice is harmless
            AssertNamesPublicType(Assert.Throws<ObjectDisposedException>(() => subject.Transformer.Transform(calibration)), subject.PublicName);
            AssertNamesPublicType(Assert.Throws<ObjectDisposedException>(() => before.GetColumn<VBuffer<float>>("logits").ToList()), subject.PublicName);
            AssertNamesPublicType(Assert.Throws<ObjectDisposedException>(() => context.Model.Save(subject.Transformer, calibration.Schema, zip)), subject.PublicName);
            File.Delete(zip); // what ML.NET had started writing
            // Metadata stays readable.
            Assert.Contains("logits", subject.Transformer.GetOutputSchema(calibration.Schema).Select(c => c.Name));
        }
        Console.WriteLine("ok");
        return 0;
    }
}

using Microsoft.ML.Quantization.Calibration;

namespace Microsoft.ML.Quantization.Tests.Calibration;

public sealed class CalibrationTableTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qatml-calib-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static CalibrationTable Sample()
    {
        var act = new TensorObserver(new CalibrationOptions { Method = CalibrationMethod.Entropy });
        act.Observe(CalibrationData.Gaussian(5000, 1).Select(MathF.Abs).Append(float.NaN).ToArray());
        var w = new TensorObserver(CalibrationOptions.ForWeights(), 4);
        w.Observe(CalibrationData.Gaussian(4 * 9, 2), 4, 9);
        var relu = act.ToEntry("relu_1", TensorKind.Activation);
        return new CalibrationTable([relu, relu.SharedAs("pool_1"), w.ToEntry("conv1.weight", TensorKind.Weight, axis: 0)]);
    }

    [Fact]
    public void SaveLoad_RoundTripsExactly()
    {
        var table = Sample();
        string path = Path.Combine(_dir, "calibration.json");
        table.Save(path);
        var loaded = CalibrationTable.Load(path);
        Assert.Equal(table.ToJson(), loaded.ToJson());
        Assert.Equal(1, loaded["relu_1"].NonFiniteCount);
        Assert.Null(loaded["relu_1"].RangeSource);
        Assert.Equal("relu_1", loaded["pool_1"].RangeSource);
        Assert.Equal(loaded["relu_1"].Scales, loaded["pool_1"].Scales);
        Assert.Equal(0, loaded["conv1.weight"].Axis);
        Assert.Equal(table["conv1.weight"].Scales, loaded["conv1.weight"].Scales);
        Assert.Single(Directory.GetFiles(_dir)); // no temporary file left behind
        table.Save(path); // overwrites
        Assert.Single(Directory.GetFiles(_dir));
    }

    [Fact]
    public void Floats_RoundTripBitForBit()
    {
        var rng = new Random(17);
        var values = new List<float> { float.Epsilon, float.MaxValue, -float.MaxValue, 1e-38f, 0.1f, 1f / 3, -0f, 16777217f };
        while (values.Count < 2000)
        {
            float f = BitConverter.Int32BitsToSingle(rng.Next());
            if (float.IsFinite(f))
                values.Add(rng.Next(2) == 0 ? f : -f);
        }
        var mins = values.Select(v => MathF.Min(v, 0f)).ToArray();
        var maxs = values.Select(v => MathF.Max(v, 0f)).ToArray();
        var scales = values.Select(v => MathF.Abs(v) is var a && a > 0 ? a : 1f).ToArray();
        var entry = new CalibrationTableEntry("x", TensorKind.Weight, CalibrationMethod.MinMax, 8, true, true, 0, mins, maxs, scales,
            new int[values.Count], new HistogramSummary(1, 0, values[3], values[4], 0, 0, null));
        var back = CalibrationTable.FromJson(new CalibrationTable([entry]).ToJson())["x"];
        for (int i = 0; i < values.Count; i++)
        {
            Assert.Equal(BitConverter.SingleToInt32Bits(mins[i]), BitConverter.SingleToInt32Bits(back.RangeMin[i]));
            Assert.Equal(BitConverter.SingleToInt32Bits(maxs[i]), BitConverter.SingleToInt32Bits(back.RangeMax[i]));
            Assert.Equal(BitConverter.SingleToInt32Bits(scales[i]), BitConverter.SingleToInt32Bits(back.Scales[i]));
        }
    }

    [Fact]
    public void Json_HasTheDocumentedShape()
    {
        string json = Sample().ToJson();
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        var root = doc.RootElement;
        Assert.Equal(1, root.GetProperty("formatVersion").GetInt32());
        var t = root.GetProperty("tensors")[0];
        Assert.Equal("relu_1", t.GetProperty("name").GetString());
        Assert.Equal("activation", t.GetProperty("kind").GetString());
        Assert.Equal("entropy", t.GetProperty("method").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, t.GetProperty("axis").ValueKind);
        Assert.Equal(2048, t.GetProperty("histogram").GetProperty("binCount").GetInt32());
        Assert.Equal(1, t.GetProperty("histogram").GetProperty("nonFiniteCount").GetInt64());
    }

    [Fact]
    public void LoadErrors_NameTheFileAndTheProblem()
    {
        string path = Path.Combine(_dir, "bad.json");
        void Expect(string content, string problem)
        {
            File.WriteAllText(path, content);
            var e = Assert.Throws<InvalidDataException>(() => CalibrationTable.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(problem, e.Message);
        }

        Expect("{ not json", "not valid JSON");
        Expect("[]", "root must be a JSON object");
        Expect("{\"tensors\": []}", "'formatVersion' is missing");
        Expect("{\"formatVersion\": 2, \"tensors\": []}", "formatVersion 2 is not supported");
        string good = Sample().ToJson();
        Expect(good.Replace("\"entropy\"", "\"kmeans\""), "method 'kmeans'");
        Expect(good.Replace("\"scale\"", "\"scales\""), "'scale' is missing");
        Expect(good.Replace("\"conv1.weight\"", "\"relu_1\""), "already has tensor 'relu_1'");
        Assert.Contains("does not exist", Assert.Throws<FileNotFoundException>(() => CalibrationTable.Load(Path.Combine(_dir, "missing.json"))).Message);
    }

    [Fact]
    public void Table_IsKeyedByTensorName()
    {
        var table = Sample();
        Assert.Equal(3, table.Count);
        Assert.True(table.TryGetEntry("relu_1", out var e));
        Assert.Equal(TensorKind.Activation, e.Kind);
        Assert.Throws<KeyNotFoundException>(() => table["nope"]);
        Assert.Throws<ArgumentException>(() => table.Add(e));
        table.Set(e);
        Assert.Equal(3, table.Count);
    }
}

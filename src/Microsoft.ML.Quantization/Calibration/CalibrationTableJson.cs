using System.Text.Json;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>The calibration table file format (docs/calibration-table.md), read strictly so errors say what is wrong.</summary>
internal static class CalibrationTableJson
{
    public static void Write(Utf8JsonWriter w, CalibrationTable table)
    {
        w.WriteStartObject();
        w.WriteNumber("formatVersion", CalibrationTable.FormatVersion);
        w.WriteStartArray("tensors");
        foreach (var e in table.Entries)
        {
            w.WriteStartObject();
            w.WriteString("name", e.TensorName);
            w.WriteString("kind", KindName(e.Kind));
            w.WriteString("method", MethodName(e.Method));
            w.WriteNumber("bits", e.Bits);
            w.WriteBoolean("signed", e.IsSigned);
            w.WriteBoolean("symmetric", e.IsSymmetric);
            if (e.Axis is { } axis)
                w.WriteNumber("axis", axis);
            else
                w.WriteNull("axis");
            // Utf8JsonWriter writes float32 shortest-round-trip, so reading gives back the same bits.
            WriteArray(w, "min", e.RangeMin);
            WriteArray(w, "max", e.RangeMax);
            WriteArray(w, "scale", e.Scales);
            w.WriteStartArray("zeroPoint");
            foreach (int z in e.ZeroPoints)
                w.WriteNumberValue(z);
            w.WriteEndArray();
            var h = e.Histogram;
            w.WriteStartObject("histogram");
            w.WriteNumber("count", h.Count);
            w.WriteNumber("nonFiniteCount", h.NonFiniteCount);
            w.WriteNumber("min", h.Min);
            w.WriteNumber("max", h.Max);
            w.WriteNumber("binCount", h.BinCount);
            w.WriteNumber("binsUsed", h.BinsUsed);
            if (h.Exponent is { } exp)
                w.WriteNumber("exponent", exp);
            else
                w.WriteNull("exponent");
            w.WriteEndObject();
            if (e.RangeSource is { } source)
                w.WriteString("rangeSource", source);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    public static CalibrationTable Read(byte[] utf8, string source)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(utf8);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source} is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{source}: the root must be a JSON object.");
            int version = GetInt(root, "formatVersion", source);
            if (version != CalibrationTable.FormatVersion)
                throw new InvalidDataException($"{source}: formatVersion {version} is not supported (this library reads version {CalibrationTable.FormatVersion}).");
            var tensors = Get(root, "tensors", JsonValueKind.Array, source);
            var table = new CalibrationTable();
            int index = 0;
            foreach (var t in tensors.EnumerateArray())
            {
                string where = $"{source}: tensors[{index++}]";
                if (t.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"{where} must be an object.");
                string name = Get(t, "name", JsonValueKind.String, where).GetString()!;
                where = $"{where} ('{name}')";
                var h = Get(t, "histogram", JsonValueKind.Object, where);
                var axisElement = Get(t, "axis", null, where);
                var expElement = Get(h, "exponent", null, where + ".histogram");
                try
                {
                    var summary = new HistogramSummary(
                        GetLong(h, "count", where + ".histogram"), GetLong(h, "nonFiniteCount", where + ".histogram"),
                        GetFloat(h, "min", where + ".histogram"), GetFloat(h, "max", where + ".histogram"),
                        GetInt(h, "binCount", where + ".histogram"), GetInt(h, "binsUsed", where + ".histogram"),
                        expElement.ValueKind == JsonValueKind.Null ? null : GetInt(h, "exponent", where + ".histogram"));
                    var entry = new CalibrationTableEntry(name,
                        ParseKind(Get(t, "kind", JsonValueKind.String, where).GetString()!, where),
                        ParseMethod(Get(t, "method", JsonValueKind.String, where).GetString()!, where),
                        GetInt(t, "bits", where), GetBool(t, "signed", where), GetBool(t, "symmetric", where),
                        axisElement.ValueKind == JsonValueKind.Null ? null : GetInt(t, "axis", where),
                        GetFloats(t, "min", where), GetFloats(t, "max", where), GetFloats(t, "scale", where),
                        GetInts(t, "zeroPoint", where), summary,
                        t.TryGetProperty("rangeSource", out var rangeSource) ? OptionalString(rangeSource, where + ".rangeSource") : null);
                    table.Add(entry);
                }
                catch (ArgumentException e)
                {
                    throw new InvalidDataException($"{where}: {e.Message}", e);
                }
            }
            return table;
        }
    }

    private static string? OptionalString(JsonElement e, string where) => e.ValueKind switch
    {
        JsonValueKind.Null => null,
        JsonValueKind.String => e.GetString(),
        _ => throw new InvalidDataException($"{where} must be a string or null."),
    };

    private static string KindName(TensorKind kind) => kind == TensorKind.Weight ? "weight" : "activation";

    private static TensorKind ParseKind(string s, string where) => s switch
    {
        "activation" => TensorKind.Activation,
        "weight" => TensorKind.Weight,
        _ => throw new InvalidDataException($"{where}: kind '{s}' is not 'activation' or 'weight'."),
    };

    private static string MethodName(CalibrationMethod m) => m switch
    {
        CalibrationMethod.MinMax => "minMax",
        CalibrationMethod.MovingAverageMinMax => "movingAverageMinMax",
        CalibrationMethod.Percentile => "percentile",
        CalibrationMethod.Entropy => "entropy",
        CalibrationMethod.Mse => "mse",
        CalibrationMethod.Auto => "auto",
        _ => throw new ArgumentOutOfRangeException(nameof(m), m, "Unknown calibration method."),
    };

    private static CalibrationMethod ParseMethod(string s, string where) => s switch
    {
        "minMax" => CalibrationMethod.MinMax,
        "movingAverageMinMax" => CalibrationMethod.MovingAverageMinMax,
        "percentile" => CalibrationMethod.Percentile,
        "entropy" => CalibrationMethod.Entropy,
        "mse" => CalibrationMethod.Mse,
        "auto" => CalibrationMethod.Auto,
        _ => throw new InvalidDataException($"{where}: method '{s}' is not one of minMax, movingAverageMinMax, percentile, entropy, mse, auto."),
    };

    private static void WriteArray(Utf8JsonWriter w, string name, IReadOnlyList<float> values)
    {
        w.WriteStartArray(name);
        foreach (float v in values)
            w.WriteNumberValue(v);
        w.WriteEndArray();
    }

    private static JsonElement Get(JsonElement obj, string name, JsonValueKind? kind, string where)
    {
        if (!obj.TryGetProperty(name, out var e))
            throw new InvalidDataException($"{where}: the required property '{name}' is missing.");
        if (kind is { } k && e.ValueKind != k)
            throw new InvalidDataException($"{where}: '{name}' must be {k.ToString().ToLowerInvariant()}, not {e.ValueKind.ToString().ToLowerInvariant()}.");
        return e;
    }

    private static int GetInt(JsonElement obj, string name, string where)
        => Get(obj, name, JsonValueKind.Number, where).TryGetInt32(out int v) ? v
           : throw new InvalidDataException($"{where}: '{name}' must be a 32-bit integer.");

    private static long GetLong(JsonElement obj, string name, string where)
        => Get(obj, name, JsonValueKind.Number, where).TryGetInt64(out long v) ? v
           : throw new InvalidDataException($"{where}: '{name}' must be a 64-bit integer.");

    private static bool GetBool(JsonElement obj, string name, string where)
    {
        var e = Get(obj, name, null, where);
        return e.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"{where}: '{name}' must be true or false."),
        };
    }

    private static float GetFloat(JsonElement obj, string name, string where) => ToFloat(Get(obj, name, JsonValueKind.Number, where), name, where);

    private static float ToFloat(JsonElement e, string name, string where)
        => e.ValueKind == JsonValueKind.Number && e.TryGetSingle(out float v) && float.IsFinite(v) ? v
           : throw new InvalidDataException($"{where}: '{name}' must hold finite float32 numbers.");

    private static float[] GetFloats(JsonElement obj, string name, string where)
    {
        var a = Get(obj, name, JsonValueKind.Array, where);
        var result = new float[a.GetArrayLength()];
        int i = 0;
        foreach (var e in a.EnumerateArray())
            result[i++] = ToFloat(e, name, where);
        return result;
    }

    private static int[] GetInts(JsonElement obj, string name, string where)
    {
        var a = Get(obj, name, JsonValueKind.Array, where);
        var result = new int[a.GetArrayLength()];
        int i = 0;
        foreach (var e in a.EnumerateArray())
            result[i++] = e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v) ? v
                : throw new InvalidDataException($"{where}: '{name}' must hold 32-bit integers.");
        return result;
    }
}

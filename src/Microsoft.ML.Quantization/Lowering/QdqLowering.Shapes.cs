using Microsoft.ML.Quantization.Onnx;

namespace Microsoft.ML.Quantization.Lowering;

/// <summary>
/// Shape arithmetic evaluated while lowering: "Shape -> Gather / Slice / Cast / Unsqueeze / Concat -> Reshape", the
/// way exporters build a flatten or a head's reshape. A plan fixes every per-row dimension, so each such value is a
/// constant except the batch, which stays a symbol; a Reshape target with the batch first copies it (ONNX's 0).
/// </summary>
internal sealed partial class QdqLowering
{
    /// <summary>The batch dimension inside a shape value (its size is the run's, not the plan's).</summary>
    private const long BatchSymbol = long.MinValue;

    private readonly Dictionary<string, long[]> _shapeValues = new(StringComparer.Ordinal);

    private static readonly HashSet<string> ShapeArithmeticOps = new(StringComparer.Ordinal)
    {
        "Gather", "Slice", "Cast", "Unsqueeze", "Squeeze", "Concat", "Identity", "Add", "Sub", "Mul", "Div",
    };

    /// <summary>
    /// Evaluates <paramref name="node"/> when it is a Shape, or integer arithmetic on a shape value (and integer
    /// constants); false for every other node. A node that reads a shape value in a way this cannot evaluate throws.
    /// </summary>
    private bool TryShapeValue(OnnxNode node)
    {
        if (node.OpType == "Shape")
        {
            long[] row = RowDimsOf(node.Inputs[0])
                ?? throw new NotSupportedException($"the shape of '{node.Inputs[0]}' is not known to the engine");
            long[] full = [BatchSymbol, .. row];
            int start = (int)ShapeIndex(node.GetInt("start", 0), full.Length), end = (int)ShapeIndex(node.GetInt("end", full.Length), full.Length);
            _shapeValues[node.Outputs[0]] = full[start..Math.Max(start, end)];
            return true;
        }
        if (!ShapeArithmeticOps.Contains(node.OpType) || !node.Inputs.Any(_shapeValues.ContainsKey))
            return false;
        var inputs = new long[node.Inputs.Count][];
        for (int i = 0; i < inputs.Length; i++)
            if (node.Inputs[i].Length > 0)
                inputs[i] = TryIntegerValue(node.Inputs[i], out long[] v) ? v
                    : throw new NotSupportedException($"it computes on a shape with input {i} ('{node.Inputs[i]}'), which is not an integer constant");
        long[] x = inputs[0];
        long[] result = node.OpType switch
        {
            "Identity" or "Unsqueeze" or "Squeeze" => x,  // shape values are vectors or scalars: the elements stay
            "Cast" => node.GetInt("to", 0) is (int)OnnxElementType.Int64 or (int)OnnxElementType.Int32
                ? x : throw new NotSupportedException("it casts a shape to a non-integer type"),
            "Concat" => inputs.Where(v => v is not null).SelectMany(v => v).ToArray(),
            "Gather" => node.GetInt("axis", 0) == 0
                ? inputs[1].Select(i => x[ShapeIndex(i, x.Length, strict: true)]).ToArray()
                : throw new NotSupportedException("it gathers a shape along an axis other than 0"),
            "Slice" => SliceShape(x, inputs),
            _ => Arithmetic(node.OpType, x, inputs[1]),
        };
        _shapeValues[node.Outputs[0]] = result;
        return true;
    }

    /// <summary>An integer value known while lowering: a shape value or an int64 / int32 initializer.</summary>
    private bool TryIntegerValue(string name, out long[] values)
    {
        if (_shapeValues.TryGetValue(name, out values!))
            return true;
        if (_index.TryGetInitializer(name, out var t) && t.ElementType is OnnxElementType.Int64 or OnnxElementType.Int32)
        {
            values = t.ElementType == OnnxElementType.Int64 ? t.ToInt64Array() : t.ToInt32Array().Select(v => (long)v).ToArray();
            return true;
        }
        values = [];
        return false;
    }

    /// <summary>The per-row dims of a value the engine computes (an integer unit's float output: its QuantizeLinear's).</summary>
    private long[]? RowDimsOf(string name)
    {
        if (_quantized.TryGetValue(name, out var q))
            return q.Dims;
        if (_float.TryGetValue(name, out var f))
            return f.Dims;
        if (_dqActivation.TryGetValue(name, out var dq))
            return dq.Source.Dims;
        if (_integers.TryGetValue(name, out var ints))
            return ints.Dims;
        foreach (var user in _consumers.GetValueOrDefault(name) ?? [])
            if (user.OpType == "QuantizeLinear" && _quantized.TryGetValue(user.Outputs[0], out var unit))
                return unit.Dims;
        return null;
    }

    private static long[] SliceShape(long[] x, long[][] inputs)
    {
        long[] starts = inputs[1], ends = inputs[2];
        if (starts.Length != 1 || ends.Length != 1 || (inputs.Length > 3 && inputs[3] is { } axes && axes.Any(a => a is not (0 or -1))))
            throw new NotSupportedException("it slices a shape with more than one range");
        long step = inputs.Length > 4 && inputs[4] is { Length: 1 } steps ? steps[0] : 1;
        if (step != 1)
            throw new NotSupportedException("it slices a shape with a step other than 1");
        int start = (int)ShapeIndex(starts[0], x.Length), end = (int)ShapeIndex(ends[0], x.Length);
        return x[start..Math.Max(start, end)];
    }

    private static long[] Arithmetic(string op, long[] a, long[] b)
    {
        if (a.Length != b.Length && a.Length != 1 && b.Length != 1)
            throw new NotSupportedException($"it applies {op} to shapes of {a.Length} and {b.Length} elements");
        int n = Math.Max(a.Length, b.Length);
        var result = new long[n];
        for (int i = 0; i < n; i++)
        {
            long l = a[a.Length == 1 ? 0 : i], r = b[b.Length == 1 ? 0 : i];
            if (l == BatchSymbol || r == BatchSymbol)
                throw new NotSupportedException($"it applies {op} to the batch dimension");
            result[i] = op switch
            {
                "Add" => checked(l + r),
                "Sub" => checked(l - r),
                "Mul" => checked(l * r),
                _ => r != 0 ? l / r : throw new NotSupportedException("it divides a shape by 0"),
            };
        }
        return result;
    }

    /// <summary>An index into a shape of <paramref name="length"/> elements, negative from the end; clamped unless strict.</summary>
    private static long ShapeIndex(long index, int length, bool strict = false)
    {
        long i = index < 0 ? index + length : index;
        if (strict && (i < 0 || i >= length))
            throw new NotSupportedException($"it indexes a shape of {length} elements at {index}");
        return Math.Clamp(i, 0, length);
    }
}

namespace Microsoft.ML.Quantization.Onnx;

internal static partial class OnnxRewrites
{
    /// <summary>Ops <see cref="FoldConstants"/> evaluates (default domain, all inputs constant).</summary>
    public static readonly IReadOnlySet<string> FoldableOps = new HashSet<string>
    {
        "Constant", "Identity", "Cast", "Transpose", "Reshape", "Flatten", "Unsqueeze", "Squeeze",
        "Add", "Sub", "Mul", "Div", "Sqrt", "Neg", "Reciprocal", "Concat",
    };

    /// <summary>
    /// Evaluates nodes whose inputs are all initializers (and Constant nodes) for <see cref="FoldableOps"/>, replacing
    /// their outputs by initializers, up to <paramref name="maxElements"/> per result. Other ops are left as they are.
    /// Returns how many nodes were folded.
    /// </summary>
    public static int FoldConstants(OnnxModel model, long maxElements = 1 << 22)
    {
        var graph = model.Graph;
        long opset = model.DefaultOpset;
        // Maps kept in step with the folding, and the edits applied in one sweep at the end: linear in the graph size.
        var initializers = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < graph.Proto.Initializer.Count; i++)
            initializers.TryAdd(graph.Proto.Initializer[i].Name, i);
        var runtimeInputs = graph.RuntimeInputs.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var graphInputs = graph.Proto.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var graphOutputs = graph.Proto.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var folded = new List<Proto.NodeProto>();
        var foldedNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.TopologicalOrder())
        {
            if (node.Domain.Length != 0 || !FoldableOps.Contains(node.OpType) || node.Outputs.Count != 1 || graphOutputs.Contains(node.Outputs[0]))
                continue;
            var inputs = new List<OnnxTensor?>();
            bool constant = true;
            foreach (string name in node.Inputs)
            {
                if (name.Length == 0) { inputs.Add(null); continue; }
                // Graph inputs that shadow initializers (IR < 4) may be overridden at run time: not constant.
                if (!initializers.TryGetValue(name, out int at) || runtimeInputs.Contains(name) || graphInputs.Contains(name) && model.IrVersion < 4)
                {
                    constant = false;
                    break;
                }
                inputs.Add(new OnnxTensor(graph.Proto.Initializer[at]));
            }
            if (!constant)
                continue;
            OnnxTensor? result;
            try
            {
                result = Evaluate(node, inputs, opset);
            }
            catch (Exception e) when (e is NotSupportedException or InvalidOperationException or ArgumentException or IndexOutOfRangeException)
            {
                continue; // leave anything we cannot evaluate exactly as it is
            }
            if (result is null || result.ElementCount > maxElements)
                continue;
            result.Name = node.Outputs[0];
            folded.Add(node.Proto);
            if (initializers.TryGetValue(result.Name, out int existing))
            {
                graph.Proto.Initializer[existing] = result.Proto;
            }
            else
            {
                initializers[result.Name] = graph.Proto.Initializer.Count;
                graph.Proto.Initializer.Add(result.Proto);
            }
            foldedNames.Add(result.Name);
        }
        if (folded.Count == 0)
            return 0;
        graph.RemoveNodes(folded);
        RemoveValueInfos(graph, foldedNames);
        graph.RemoveUnused();
        return folded.Count;
    }

    private static OnnxTensor? Evaluate(OnnxNode node, List<OnnxTensor?> inputs, long opset)
    {
        OnnxTensor In(int i) => i < inputs.Count && inputs[i] is { } t ? t : throw new NotSupportedException();
        switch (node.OpType)
        {
            case "Constant":
                return node.GetTensor("value")?.Clone();
            case "Identity":
                return In(0).Clone();
            case "Cast":
            {
                var to = (OnnxElementType)node.GetInt("to", 0);
                return OnnxTensor.FromDoubles("", to, In(0).Dims, In(0).ToDoubles());
            }
            case "Reshape":
            {
                long[] dims = In(0).Dims;
                long[] target = In(1).ToInt64Array();
                bool allowZero = node.GetInt("allowzero", 0) != 0;
                long known = 1; int infer = -1;
                for (int i = 0; i < target.Length; i++)
                {
                    if (target[i] == 0 && !allowZero) target[i] = dims[i];
                    if (target[i] == -1) infer = i; else known *= target[i];
                }
                if (infer >= 0) target[infer] = In(0).ElementCount / known;
                return Reinterpret(In(0), target);
            }
            case "Flatten":
            {
                long[] dims = In(0).Dims;
                long axis = node.GetInt("axis", 1);
                if (axis < 0) axis += dims.Length;
                long outer = dims.Take((int)axis).Aggregate(1L, (a, b) => a * b);
                return Reinterpret(In(0), [outer, In(0).ElementCount / outer]);
            }
            case "Unsqueeze":
            {
                long[] axes = opset >= 13 ? In(1).ToInt64Array() : node.GetInts("axes") ?? [];
                var dims = In(0).Dims.ToList();
                int rank = dims.Count + axes.Length;
                foreach (long a in axes.Select(a => a < 0 ? a + rank : a).Order())
                    dims.Insert((int)a, 1);
                return Reinterpret(In(0), [.. dims]);
            }
            case "Squeeze":
            {
                long[] dims = In(0).Dims;
                long[]? axes = opset >= 13 ? (inputs.Count > 1 && inputs[1] is { } at ? at.ToInt64Array() : null) : node.GetInts("axes");
                var drop = axes is null ? Enumerable.Range(0, dims.Length).Where(i => dims[i] == 1).ToHashSet()
                    : axes.Select(a => (int)(a < 0 ? a + dims.Length : a)).ToHashSet();
                return Reinterpret(In(0), [.. dims.Where((d, i) => !drop.Contains(i))]);
            }
            case "Transpose":
            {
                var t = In(0);
                long[] dims = t.Dims;
                int rank = dims.Length;
                long[] perm = node.GetInts("perm") ?? [.. Enumerable.Range(0, rank).Reverse().Select(i => (long)i)];
                double[] src = t.ToDoubles();
                long[] outDims = [.. perm.Select(p => dims[p])];
                var dst = new double[src.Length];
                long[] inStrides = Strides(dims);
                var index = new long[rank];
                for (long o = 0; o < dst.Length; o++)
                {
                    long rem = o, offset = 0;
                    for (int d = rank - 1; d >= 0; d--)
                    {
                        index[d] = rem % outDims[d];
                        rem /= outDims[d];
                        offset += index[d] * inStrides[perm[d]];
                    }
                    dst[o] = src[offset];
                }
                return OnnxTensor.FromDoubles("", t.ElementType, outDims, dst);
            }
            case "Concat":
            {
                var parts = inputs.Where(t => t is not null).Select(t => t!).ToList();
                var type = parts[0].ElementType;
                long[] dims = parts[0].Dims;
                long axis = node.GetInt("axis", 0);
                if (axis < 0) axis += dims.Length;
                long outer = dims.Take((int)axis).Aggregate(1L, (a, b) => a * b);
                var data = parts.Select(p => p.ToDoubles()).ToList();
                var result = new List<double>();
                for (long o = 0; o < outer; o++)
                    for (int p = 0; p < parts.Count; p++)
                    {
                        long chunk = data[p].Length / outer;
                        result.AddRange(data[p].Skip((int)(o * chunk)).Take((int)chunk));
                    }
                long[] outDims = (long[])dims.Clone();
                outDims[axis] = parts.Sum(p => p.Dims[axis]);
                return OnnxTensor.FromDoubles("", type, outDims, [.. result]);
            }
            case "Sqrt" or "Neg" or "Reciprocal":
            {
                var t = In(0);
                Func<double, double> f = node.OpType switch { "Sqrt" => Math.Sqrt, "Neg" => v => -v, _ => v => 1 / v };
                if (!IsFloat(t.ElementType) && node.OpType != "Neg")
                    throw new NotSupportedException();
                return OnnxTensor.FromDoubles("", t.ElementType, t.Dims, [.. t.ToDoubles().Select(f)]);
            }
            case "Add" or "Sub" or "Mul" or "Div":
            {
                var a = In(0);
                var b = In(1);
                if (a.ElementType != b.ElementType)
                    throw new NotSupportedException();
                bool integer = !IsFloat(a.ElementType);
                Func<double, double, double> f = node.OpType switch
                {
                    "Add" => (x, y) => x + y,
                    "Sub" => (x, y) => x - y,
                    "Mul" => (x, y) => x * y,
                    _ => integer ? (x, y) => Math.Truncate(x / y) : (x, y) => x / y,
                };
                if (integer && a.ElementType is OnnxElementType.Int64) // doubles lose int64 precision past 2^53
                    throw new NotSupportedException();
                return Broadcast(a, b, f);
            }
        }
        return null;
    }

    private static bool IsFloat(OnnxElementType t) => t is OnnxElementType.Float or OnnxElementType.Double or OnnxElementType.Float16;

    private static OnnxTensor Reinterpret(OnnxTensor t, long[] dims)
    {
        var clone = t.Clone();
        clone.MakeRaw();
        if (dims.Aggregate(1L, (a, b) => a * b) != t.ElementCount)
            throw new ArgumentException("element count changes");
        clone.Proto.Dims.Clear();
        clone.Proto.Dims.AddRange(dims);
        return clone;
    }

    private static long[] Strides(long[] dims)
    {
        var s = new long[dims.Length];
        long acc = 1;
        for (int i = dims.Length - 1; i >= 0; i--)
        {
            s[i] = acc;
            acc *= dims[i];
        }
        return s;
    }

    /// <summary>Numpy-style broadcasting of a binary op.</summary>
    private static OnnxTensor Broadcast(OnnxTensor a, OnnxTensor b, Func<double, double, double> f)
    {
        long[] da = a.Dims, db = b.Dims;
        int rank = Math.Max(da.Length, db.Length);
        long[] pa = [.. Enumerable.Repeat(1L, rank - da.Length), .. da];
        long[] pb = [.. Enumerable.Repeat(1L, rank - db.Length), .. db];
        var outDims = new long[rank];
        for (int i = 0; i < rank; i++)
        {
            if (pa[i] != pb[i] && pa[i] != 1 && pb[i] != 1)
                throw new ArgumentException("shapes do not broadcast");
            outDims[i] = Math.Max(pa[i], pb[i]);
        }
        double[] va = a.ToDoubles(), vb = b.ToDoubles();
        long[] sa = Strides(pa), sb = Strides(pb);
        long count = outDims.Aggregate(1L, (x, y) => x * y);
        var result = new double[count];
        for (long o = 0; o < count; o++)
        {
            long rem = o, ia = 0, ib = 0;
            for (int d = rank - 1; d >= 0; d--)
            {
                long i = rem % outDims[d];
                rem /= outDims[d];
                if (pa[d] != 1) ia += i * sa[d];
                if (pb[d] != 1) ib += i * sb[d];
            }
            result[o] = f(va[ia], vb[ib]);
        }
        return OnnxTensor.FromDoubles("", a.ElementType, outDims, result);
    }
}

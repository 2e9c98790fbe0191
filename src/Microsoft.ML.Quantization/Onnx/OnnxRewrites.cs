using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Onnx;

/// <summary>Graph rewrites the quantizer runs before inserting quantization (all in place).</summary>
internal static partial class OnnxRewrites
{
    // ---------------------------------------------------------------- BatchNormalization folding

    /// <summary>
    /// Folds every inference-mode BatchNormalization whose input comes from a Conv, ConvTranspose, Gemm or
    /// (2-D) MatMul with constant float weights and no other consumer into that op's weights and bias.
    /// Handles the opset 7/8 form (spatial=1; spatial=0 is left alone). Returns how many were folded.
    /// </summary>
    public static int FoldBatchNormalization(OnnxModel model)
    {
        var graph = model.Graph;
        int folded = 0;
        foreach (var bn in graph.Nodes.Where(n => n.OpType == "BatchNormalization" && n.Domain.Length == 0).ToList())
        {
            if (bn.Inputs.Count < 5 || bn.Outputs.Count == 0)
                continue;
            // Training-mode outputs (running mean/var) or spatial=0 (per-element statistics) are not foldable.
            if (bn.Outputs.Skip(1).Any(o => o.Length > 0 && graph.Consumers(o).Count > 0 || graph.IsGraphOutput(o)))
                continue;
            if (bn.GetInt("spatial", 1) != 1 || bn.GetInt("training_mode", 0) != 0)
                continue;
            string x = bn.Inputs[0];
            var producer = graph.Producer(x);
            if (producer is null || producer.Domain.Length != 0 || graph.IsGraphOutput(x) || graph.Consumers(x).Count != 1)
                continue;
            if (!TryFloats(graph, bn.Inputs[1], out var scale) || !TryFloats(graph, bn.Inputs[2], out var shift)
                || !TryFloats(graph, bn.Inputs[3], out var mean) || !TryFloats(graph, bn.Inputs[4], out var variance))
                continue;
            int c = scale.Length;
            if (shift.Length != c || mean.Length != c || variance.Length != c)
                continue;
            float eps = bn.GetFloat("epsilon", 1e-5f);
            var s = new float[c];
            var t = new float[c];
            for (int i = 0; i < c; i++)
            {
                s[i] = (float)(scale[i] / Math.Sqrt(variance[i] + (double)eps));
                t[i] = shift[i] - mean[i] * s[i];
            }
            bool ok = producer.OpType switch
            {
                "Conv" => FoldIntoConv(graph, producer, s, t, transpose: false),
                "ConvTranspose" => FoldIntoConv(graph, producer, s, t, transpose: true),
                "Gemm" => FoldIntoGemm(graph, producer, s, t),
                "MatMul" => FoldIntoMatMul(graph, producer, bn, s, t),
                _ => false,
            };
            if (!ok)
                continue;
            // The producer now writes the BN's output (MatMul: its bias Add already does); BN goes, and so does x's stale value info.
            graph.RemoveNode(bn);
            if (producer.OpType != "MatMul")
            {
                producer.Outputs[0] = bn.Outputs[0];
                RemoveValueInfo(graph, x);
            }
            folded++;
        }
        if (folded > 0)
            graph.RemoveUnused();
        return folded;
    }

    private static void RemoveValueInfo(OnnxGraph graph, string name) => RemoveValueInfos(graph, new HashSet<string>(StringComparer.Ordinal) { name });

    private static void RemoveValueInfos(OnnxGraph graph, IReadOnlySet<string> names)
    {
        if (names.Count == 0 || !graph.Proto.ValueInfo.Any(v => names.Contains(v.Name)))
            return;
        var keep = graph.Proto.ValueInfo.Where(v => !names.Contains(v.Name)).ToList();
        graph.Proto.ValueInfo.Clear();
        graph.Proto.ValueInfo.AddRange(keep);
    }

    private static bool TryFloats(OnnxGraph graph, string name, out float[] values)
    {
        values = [];
        if (name.Length == 0 || !graph.TryGetInitializer(name, out var t) || t.ElementType != OnnxElementType.Float)
            return false;
        values = t.ToFloatArray();
        return true;
    }

    /// <summary>Writes a changed weight under a fresh name when someone else also reads the old one.</summary>
    private static string WriteOwned(OnnxGraph graph, OnnxNode node, int inputIndex, OnnxTensor tensor)
    {
        string name = inputIndex < node.Inputs.Count ? node.Inputs[inputIndex] : "";
        if (name.Length == 0 || graph.Consumers(name).Count > 1 || graph.IsGraphOutput(name) || graph.IsGraphInput(name))
            name = graph.FreshName((name.Length > 0 ? name : node.Name) + "_bnfold");
        if (name.Length == 0)
            name = tensor.Name;
        graph.SetInitializer(tensor.WithName(name));
        while (node.Inputs.Count <= inputIndex)
            node.Inputs.Add("");
        node.Inputs[inputIndex] = name;
        return name;
    }

    private static bool FoldIntoConv(OnnxGraph graph, OnnxNode conv, float[] s, float[] t, bool transpose)
    {
        if (!graph.TryGetInitializer(conv.Inputs[1], out var w) || w.ElementType != OnnxElementType.Float || w.Dims.Length < 3)
            return false;
        long[] dims = w.Dims;
        long group = conv.GetInt("group", 1);
        long outChannels = transpose ? dims[1] * group : dims[0];
        if (outChannels != s.Length)
            return false;
        float[] bias = new float[s.Length];
        if (conv.Inputs.Count > 2 && conv.Inputs[2].Length > 0)
        {
            if (!TryFloats(graph, conv.Inputs[2], out bias) || bias.Length != s.Length)
                return false;
        }
        float[] wv = w.ToFloatArray();
        long inner = wv.Length / (dims[0] * dims[1]);
        for (long a = 0; a < dims[0]; a++)
            for (long b = 0; b < dims[1]; b++)
            {
                // Conv: W[M, C/g, k...], output channel a. ConvTranspose: W[C, M/g, k...], output channel group(a)*M/g + b.
                long oc = transpose ? a / (dims[0] / group) * dims[1] + b : a;
                float f = s[oc];
                long start = (a * dims[1] + b) * inner;
                for (long k = 0; k < inner; k++)
                    wv[start + k] *= f;
            }
        var newBias = new float[s.Length];
        for (int i = 0; i < s.Length; i++)
            newBias[i] = bias[i] * s[i] + t[i];
        WriteOwned(graph, conv, 1, OnnxTensor.FromFloats(w.Name, dims, wv));
        WriteOwned(graph, conv, 2, OnnxTensor.FromFloats(conv.Inputs.Count > 2 && conv.Inputs[2].Length > 0 ? conv.Inputs[2] : graph.FreshName(conv.Name + "_bias"), [s.Length], newBias));
        return true;
    }

    private static bool FoldIntoGemm(OnnxGraph graph, OnnxNode gemm, float[] s, float[] t)
    {
        if (!graph.TryGetInitializer(gemm.Inputs[1], out var b) || b.ElementType != OnnxElementType.Float || b.Dims.Length != 2)
            return false;
        bool transB = gemm.GetInt("transB", 0) != 0;
        long[] dims = b.Dims;
        long n = transB ? dims[0] : dims[1], k = transB ? dims[1] : dims[0];
        if (n != s.Length)
            return false;
        float beta = gemm.GetFloat("beta", 1f);
        float[] c = new float[n];
        if (gemm.Inputs.Count > 2 && gemm.Inputs[2].Length > 0)
        {
            if (!TryFloats(graph, gemm.Inputs[2], out var cv))
                return false;
            if (cv.Length == 1)
                Array.Fill(c, cv[0]);
            else if (cv.Length == n && graph.TryGetInitializer(gemm.Inputs[2], out var ct) && ct.Dims[^1] == n)
                c = cv;
            else
                return false; // a per-row bias [M, N] cannot be kept per-channel
        }
        float[] bv = b.ToFloatArray();
        for (long i = 0; i < k; i++)
            for (long j = 0; j < n; j++)
                bv[transB ? j * k + i : i * n + j] *= s[j];
        var bias = new float[n];
        for (int j = 0; j < n; j++)
            bias[j] = beta * c[j] * s[j] + t[j];
        WriteOwned(graph, gemm, 1, OnnxTensor.FromFloats(b.Name, dims, bv));
        WriteOwned(graph, gemm, 2, OnnxTensor.FromFloats(gemm.Inputs.Count > 2 && gemm.Inputs[2].Length > 0 ? gemm.Inputs[2] : graph.FreshName(gemm.Name + "_bias"), [n], bias));
        gemm.SetFloat("beta", 1f);
        return true;
    }

    private static bool FoldIntoMatMul(OnnxGraph graph, OnnxNode matmul, OnnxNode bn, float[] s, float[] t)
    {
        // BN normalizes axis 1; that is MatMul's last axis only for a 2-D product.
        if (!graph.TryGetInitializer(matmul.Inputs[1], out var b) || b.ElementType != OnnxElementType.Float || b.Dims.Length != 2)
            return false;
        var aShape = graph.FindValueInfo(matmul.Inputs[0])?.Shape ?? graph.FindValueInfo(bn.Outputs[0])?.Shape;
        if (aShape is null || aShape.Count != 2)
            return false;
        long k = b.Dims[0], n = b.Dims[1];
        if (n != s.Length)
            return false;
        float[] bv = b.ToFloatArray();
        for (long i = 0; i < k; i++)
            for (long j = 0; j < n; j++)
                bv[i * n + j] *= s[j];
        WriteOwned(graph, matmul, 1, OnnxTensor.FromFloats(b.Name, b.Dims, bv));
        string biasName = graph.FreshName(matmul.Name + "_bnfold_bias");
        graph.SetInitializer(OnnxTensor.FromFloats(biasName, [n], t));
        string product = matmul.Outputs[0];
        var add = graph.CreateNode("Add", [product, biasName], [bn.Outputs[0]], graph.FreshName(matmul.Name + "_bnfold_add"));
        graph.InsertNode(add, bn);
        return true;
    }

    // ---------------------------------------------------------------- Identity / Dropout

    /// <summary>Removes Identity nodes and inference Dropout nodes (mask unused); returns how many.</summary>
    /// <remarks>
    /// One pass in node order, linear in the graph size: renames are recorded (every use of A becomes B) and applied
    /// once at the end, nodes are removed in one sweep, and tensor names are looked up through maps kept in step.
    /// </remarks>
    public static int RemoveIdentityAndDropout(OnnxModel model)
    {
        var graph = model.Graph;
        var index = graph.Index();
        var used = new HashSet<string>(graph.Proto.Node.SelectMany(n => n.Input.Concat(OnnxGraph.SubgraphOuterInputs(n))), StringComparer.Ordinal);
        var producers = graph.Proto.Node.SelectMany(n => n.Output.Where(o => o.Length > 0).Select(o => (o, n)))
            .DistinctBy(p => p.o).ToDictionary(p => p.o, p => p.n, StringComparer.Ordinal);
        var renames = new Dictionary<string, string>(StringComparer.Ordinal); // every use of the key becomes the value
        var removed = new List<NodeProto>();
        var staleValueInfos = new HashSet<string>(StringComparer.Ordinal);

        string Resolve(string name)
        {
            string current = name;
            while (renames.TryGetValue(current, out string? next))
                current = next;
            // Path compression keeps later lookups short.
            for (string n = name; n != current && renames.TryGetValue(n, out string? next); n = next)
                renames[n] = current;
            return current;
        }

        foreach (var proto in graph.Proto.Node.ToList())
        {
            var node = new OnnxNode(proto);
            if (node.Domain.Length != 0 || node.OpType is not ("Identity" or "Dropout") || node.Inputs.Count == 0 || node.Outputs.Count == 0)
                continue;
            if (node.OpType == "Dropout")
            {
                if (node.Outputs.Skip(1).Any(o => o.Length > 0 && (used.Contains(o) || index.IsGraphOutput(o))))
                    continue;
                // training_mode input (opset 12+) must be absent or a constant false.
                if (node.Inputs.Count > 2 && node.Inputs[2].Length > 0
                    && !(index.TryGetInitializer(node.Inputs[2], out var tm) && tm.ToDoubles().All(v => v == 0)))
                    continue;
                if (node.GetInt("is_test", 1) == 0 && model.DefaultOpset < 7)
                    continue;
            }
            string x = Resolve(node.Inputs[0]), y = node.Outputs[0];
            // (y renamed already means two nodes write y: an invalid graph the validator reports; leave it.)
            if (x == y || x.Length == 0 || y.Length == 0 || renames.ContainsKey(y))
                continue;
            if (index.IsGraphOutput(y))
            {
                // Keep the output name: let x's producer write y directly when x is only an internal tensor.
                if (!producers.TryGetValue(x, out var producer) || index.IsGraphOutput(x))
                    continue;
                int at = producer.Output.IndexOf(x);
                producer.Output[at] = y;
                producers.Remove(x);
                producers[y] = producer;
                renames[x] = y;
                staleValueInfos.Add(x);
            }
            else
            {
                renames[y] = x;
                producers.Remove(y);
                staleValueInfos.Add(y);
            }
            removed.Add(proto);
        }
        graph.RemoveNodes(removed);
        graph.ReplaceAllUses(renames.Keys.ToDictionary(k => k, Resolve, StringComparer.Ordinal));
        RemoveValueInfos(graph, staleValueInfos);
        return removed.Count;
    }

    // ---------------------------------------------------------------- batch dimension

    /// <summary>
    /// Replaces the fixed batch dimension (dim 0 of the runtime inputs) with the symbol <paramref name="dimName"/>
    /// in the inputs, the outputs and every value info that depends on an input. Constant Reshape shapes that
    /// start with the batch get -1 (or 0); a Reshape or Flatten that folds the batch into another dimension is refused,
    /// before anything changes. Callers go through <see cref="TryMakeBatchSymbolic"/>, the one way QatMl does this.
    /// </summary>
    public static void MakeBatchSymbolic(OnnxModel model, string dimName = "batch")
    {
        var graph = model.Graph;
        var inputs = graph.RuntimeInputs;
        if (inputs.Count == 0)
            throw new InvalidOnnxModelException($"{model.Describe} has no runtime inputs: no batch dimension to make symbolic.");
        long? batch = null;
        foreach (var input in inputs)
        {
            var shape = input.Shape;
            if (shape is null || shape.Count == 0)
                throw new InvalidOnnxModelException($"{model.Describe}: input '{input.Name}' has no known rank, so its batch dimension cannot be identified.");
            if (shape[0].Value is long v)
            {
                if (batch is not null && batch != v)
                    throw new InvalidOnnxModelException($"{model.Describe}: inputs disagree on the batch dimension ({batch} vs {v} on '{input.Name}').");
                batch = v;
            }
        }
        if (batch is null)
            return; // already symbolic

        // Tensors that depend on a runtime input: the ones whose dim 0 is the batch.
        var dependent = new HashSet<string>(inputs.Select(i => i.Name));
        foreach (var node in graph.TopologicalOrder())
            if (node.Inputs.Any(dependent.Contains))
                foreach (string o in node.Outputs)
                    dependent.Add(o);

        // Every refusal comes before the first change, so a refused graph is left as it was.
        var reshapes = new List<(OnnxNode Node, OnnxTensor Shape, long[] Target)>();
        foreach (var node in graph.Nodes.Where(n => n.Domain.Length == 0 && dependent.Contains(n.Inputs.FirstOrDefault() ?? "")))
        {
            if (node.OpType == "Flatten" && node.GetInt("axis", 1) == 0)
                throw new InvalidOnnxModelException($"{model.Describe}: {node.Describe} flattens with axis=0, which folds the batch into one row; the batch cannot be made symbolic.");
            if (node.OpType != "Reshape")
                continue;
            if (node.HasAttribute("shape"))
                throw new InvalidOnnxModelException($"{model.Describe}: {node.Describe} has the opset-1-4 'shape' attribute; upgrade the opset first.");
            if (node.Inputs.Count < 2 || !graph.TryGetInitializer(node.Inputs[1], out var shapeTensor))
                continue; // computed shape: follows the input
            long[] target = shapeTensor.ToInt64Array();
            if (target.Length > 0 && (target[0] == 0 || target[0] == -1))
                continue;
            if (target.Length > 0 && target[0] == batch && node.GetInt("allowzero", 0) == 0)
            {
                target[0] = target.Skip(1).Contains(-1) ? 0 : -1;
                reshapes.Add((node, shapeTensor, target));
                continue;
            }
            throw new InvalidOnnxModelException($"{model.Describe}: {node.Describe} reshapes to the constant shape [{string.Join(",", target)}], which pins the batch of {batch}; the batch cannot be made symbolic.");
        }

        foreach (var (node, shapeTensor, target) in reshapes)
        {
            var fixedShape = OnnxTensor.FromInt64(shapeTensor.Name, shapeTensor.Dims, target);
            if (graph.Consumers(shapeTensor.Name).Count > 1)
            {
                fixedShape.Name = graph.FreshName(shapeTensor.Name + "_batch");
                node.Inputs[1] = fixedShape.Name;
            }
            graph.SetInitializer(fixedShape);
        }

        void Relabel(ValueInfoProto v)
        {
            var dims = v.Type?.TensorType?.Shape?.Dim;
            if (dims is { Count: > 0 } && dims[0].HasDimValue && dims[0].DimValue == batch)
                dims[0].DimParam = dimName;
        }
        foreach (var v in graph.Proto.Input.Where(v => dependent.Contains(v.Name) && !graph.IsInitializer(v.Name)))
            Relabel(v);
        foreach (var v in graph.Proto.Output.Where(v => dependent.Contains(v.Name)))
            Relabel(v);
        foreach (var v in graph.Proto.ValueInfo.Where(v => dependent.Contains(v.Name)))
            Relabel(v);
    }

    /// <summary>
    /// The one way QatMl makes a fixed batch symbolic (PostTraining's graph preparation, batched scoring, training):
    /// <see cref="MakeBatchSymbolic"/> on <paramref name="model"/> itself, and when that is refused on a graph below
    /// opset 13 (an opset-1-4 Reshape keeps its shape in an attribute), on a copy upgraded to opset 13. Returns the model
    /// with the symbolic batch (<paramref name="model"/>, or the upgraded copy), or null with the reason when the graph pins
    /// its batch; <paramref name="model"/> is then unchanged.
    /// </summary>
    public static OnnxModel? TryMakeBatchSymbolic(OnnxModel model, out InvalidOnnxModelException? failure)
    {
        failure = null;
        try
        {
            MakeBatchSymbolic(model);
            return model;
        }
        catch (InvalidOnnxModelException first) when (model.DefaultOpset < 13)
        {
            try
            {
                var upgraded = model.Clone();
                UpgradeOpset(upgraded, 13);
                MakeBatchSymbolic(upgraded);
                return upgraded;
            }
            catch (InvalidOnnxModelException)
            {
                failure = first;
                return null;
            }
        }
        catch (InvalidOnnxModelException e)
        {
            failure = e;
            return null;
        }
    }
}

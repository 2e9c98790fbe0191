namespace Microsoft.ML.Quantization.Onnx;

internal static partial class OnnxRewrites
{
    /// <summary>
    /// Cross-layer equalization (Nagel et al. 2019): for each Conv whose output feeds another Conv only, directly or
    /// through a Relu, channel i between them is scaled by s_i = sqrt(r1_i / r2_i), r1 the first weight's range of output
    /// channel i and r2 the second's range over input channel i: the first weight and bias are divided by s_i, the second
    /// weight multiplied. The outputs are unchanged (Relu commutes with positive scales) and both weights end up with the
    /// range sqrt(r1_i r2_i) on that channel, so per-channel ranges that differ by orders of magnitude (depthwise
    /// convolutions after BN folding) no longer waste the second layer's per-tensor levels. Runs a few sweeps (each
    /// pair's scaling shifts its neighbours'); equalized weights get new names. Returns the number of pairs equalized.
    /// </summary>
    public static int EqualizeCrossLayers(OnnxModel model, int sweeps = 4)
    {
        var graph = model.Graph;
        var pairs = new HashSet<string>(StringComparer.Ordinal);
        for (int sweep = 0; sweep < sweeps; sweep++)
        {
            var consumers = graph.ConsumerMap();
            foreach (var first in graph.Nodes.Where(n => n.OpType == "Conv" && n.Domain.Length == 0).ToList())
            {
                string y = first.Outputs[0];
                if (graph.IsGraphOutput(y) || !consumers.TryGetValue(y, out var users) || users.Count != 1)
                    continue;
                var next = users[0];
                if (next.OpType == "Relu" && next.Domain.Length == 0 && !graph.IsGraphOutput(next.Outputs[0])
                    && consumers.TryGetValue(next.Outputs[0], out var after) && after.Count == 1)
                    next = after[0];
                if (next.OpType != "Conv" || next.Domain.Length != 0 || next == first)
                    continue;
                if (Equalize(graph, first, next))
                    pairs.Add(first.Name);
            }
        }
        if (pairs.Count > 0)
            graph.RemoveUnused();
        return pairs.Count;
    }

    private static bool Equalize(OnnxGraph graph, OnnxNode first, OnnxNode second)
    {
        if (!graph.TryGetInitializer(first.Inputs[1], out var w1) || !graph.TryGetInitializer(second.Inputs[1], out var w2)
            || w1.ElementType != OnnxElementType.Float || w2.ElementType != OnnxElementType.Float || w1.Dims.Length < 3 || w2.Dims.Length < 3)
            return false;
        int channels = checked((int)w1.Dims[0]);
        int outputs2 = checked((int)w2.Dims[0]), inputsPerGroup = checked((int)w2.Dims[1]), groups = checked((int)second.GetInt("group", 1));
        if (inputsPerGroup * groups != channels || outputs2 % groups != 0)
            return false;
        float[] bias1 = [];
        if (first.Inputs.Count > 2 && first.Inputs[2].Length > 0 && !TryFloats(graph, first.Inputs[2], out bias1))
            return false;

        float[] a = w1.ToFloatArray(), b = w2.ToFloatArray();
        int inner1 = a.Length / channels, kernel2 = b.Length / (outputs2 * inputsPerGroup), outputsPerGroup = outputs2 / groups;
        var r1 = new float[channels];
        var r2 = new float[channels];
        for (int i = 0; i < channels; i++)
            for (int k = 0; k < inner1; k++)
                r1[i] = MathF.Max(r1[i], MathF.Abs(a[i * inner1 + k]));
        // Input channel i of the second Conv: group i / inputsPerGroup, slot i % inputsPerGroup of that group's outputs.
        for (int i = 0; i < channels; i++)
        {
            int group = i / inputsPerGroup, slot = i % inputsPerGroup;
            for (int o = group * outputsPerGroup; o < (group + 1) * outputsPerGroup; o++)
                for (int k = 0; k < kernel2; k++)
                    r2[i] = MathF.Max(r2[i], MathF.Abs(b[(o * inputsPerGroup + slot) * kernel2 + k]));
        }
        var s = new float[channels];
        bool changed = false;
        for (int i = 0; i < channels; i++)
        {
            s[i] = r1[i] > 0 && r2[i] > 0 ? MathF.Sqrt(r1[i] / r2[i]) : 1f;
            changed |= MathF.Abs(s[i] - 1) > 1e-3f;
        }
        if (!changed)
            return false;
        for (int i = 0; i < channels; i++)
        {
            for (int k = 0; k < inner1; k++)
                a[i * inner1 + k] /= s[i];
            if (bias1.Length == channels)
                bias1[i] /= s[i];
            int group = i / inputsPerGroup, slot = i % inputsPerGroup;
            for (int o = group * outputsPerGroup; o < (group + 1) * outputsPerGroup; o++)
                for (int k = 0; k < kernel2; k++)
                    b[(o * inputsPerGroup + slot) * kernel2 + k] *= s[i];
        }
        // New names (kept across sweeps): a calibration table made before equalization must not give these weights its
        // old ranges, and a weight another node shares keeps its values for that node.
        string Own(string name) => name.EndsWith("_equalized", StringComparison.Ordinal) ? name : graph.FreshName(name + "_equalized");
        SetInput(graph, first, 1, OnnxTensor.FromFloats(Own(w1.Name), w1.Dims, a));
        SetInput(graph, second, 1, OnnxTensor.FromFloats(Own(w2.Name), w2.Dims, b));
        if (bias1.Length == channels)
            SetInput(graph, first, 2, OnnxTensor.FromFloats(Own(first.Inputs[2]), [channels], bias1));
        return true;
    }

    private static void SetInput(OnnxGraph graph, OnnxNode node, int input, OnnxTensor tensor)
    {
        graph.SetInitializer(tensor);
        node.Inputs[input] = tensor.Name;
    }
}

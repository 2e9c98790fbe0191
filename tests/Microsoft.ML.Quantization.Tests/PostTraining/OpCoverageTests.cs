using Google.Protobuf;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;
using Microsoft.ML.Quantization.PostTraining;
using Microsoft.ML.Quantization.Tests.Onnx;

namespace Microsoft.ML.Quantization.Tests.PostTraining;

/// <summary>
/// The QDQ writer's op coverage (ONNX Runtime's quantizer registry), op by op: a small generated model around the op
/// is calibrated on generated rows, quantized with the sensitivity analysis off, and run by ONNX Runtime; the op must
/// read DequantizeLinear inputs (and write a QuantizeLinear where its output is quantized), and the quantized outputs
/// must stay close to the float ones on held-out rows.
/// </summary>
public sealed class OpCoverageTests
{
    private const int Rows = 24;

    /// <summary>A generated model: input x of the given per-row dims (batch symbolic), output y, and the op under test named "op".</summary>
    private sealed record Case(int[] RowDims, Action<OnnxGraph> Build, int Opset = 13, bool OutputQuantized = true, double MinCosine = 0.99, int DataInput = 0);

    private static float[] Values(int count, float scale = 0.5f, int seed = 1)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale)];
    }

    private static string Weight(OnnxGraph g, string name, long[] dims, float scale = 0.5f, int seed = 3)
    {
        g.SetInitializer(OnnxTensor.FromFloats(name, dims, Values(checked((int)dims.Aggregate(1L, (a, b) => a * b)), scale, seed)));
        return name;
    }

    private static string Int64s(OnnxGraph g, string name, params long[] values)
    {
        g.SetInitializer(OnnxTensor.FromInt64(name, [values.Length], values));
        return name;
    }

    private static string Scalar(OnnxGraph g, string name, float value)
    {
        g.SetInitializer(OnnxTensor.FromFloats(name, [], [value]));
        return name;
    }

    /// <summary>A Conv in front, so the op under test reads a quantized activation that varies per channel.</summary>
    private static string ConvIn(OnnxGraph g, int channels = 4)
    {
        g.AddNode("Conv", ["x", Weight(g, "w_in", [channels, 3, 3, 3], 0.4f, 11), Weight(g, "b_in", [channels], 0.1f, 12)], ["c"], "conv_in").SetInts("pads", [1, 1, 1, 1]);
        return "c";
    }

    private static readonly int[] Image = [3, 8, 8];

    private static readonly Dictionary<string, Case> Cases = new()
    {
        ["Conv"] = new(Image, g => g.AddNode("Conv", ["x", Weight(g, "w", [6, 3, 3, 3]), Weight(g, "b", [6], 0.1f)], ["y"], "op")),
        ["ConvTranspose"] = new(Image, g => g.AddNode("ConvTranspose", [ConvIn(g), Weight(g, "w", [4, 3, 2, 2]), Weight(g, "b", [3], 0.1f)], ["y"], "op")
            .SetInts("strides", [2, 2])),
        ["Gemm"] = new([16], g => g.AddNode("Gemm", ["x", Weight(g, "w", [10, 16]), Weight(g, "b", [10], 0.1f)], ["y"], "op").SetInt("transB", 1)),
        ["MatMul"] = new([6, 16], g => g.AddNode("MatMul", ["x", Weight(g, "w", [16, 12])], ["y"], "op")),
        ["MatMulActivations"] = new([6, 16], g =>
        {
            g.AddNode("MatMul", ["x", Weight(g, "wq", [16, 8])], ["q"], "proj_q");
            g.AddNode("MatMul", ["x", Weight(g, "wk", [16, 8], seed: 5)], ["k"], "proj_k");
            g.AddNode("Transpose", ["k"], ["kt"], "kt").SetInts("perm", [0, 2, 1]);
            g.AddNode("MatMul", ["q", "kt"], ["y"], "op");                                        // attention scores [6, 6]
        }),
        ["Add"] = new(Image, g => g.AddNode("Add", [ConvIn(g, 3), "x"], ["y"], "op")),
        ["Mul"] = new(Image, g => g.AddNode("Mul", [ConvIn(g), Weight(g, "m", [4, 1, 1], 1f)], ["y"], "op")),
        ["Concat"] = new(Image, g => g.AddNode("Concat", [ConvIn(g), "x"], ["y"], "op").SetInt("axis", 1)),
        ["Split"] = new(Image, g =>
        {
            g.AddNode("Split", [ConvIn(g), Int64s(g, "sizes", 1, 3)], ["s1", "s2"], "op").SetInt("axis", 1);
            g.AddNode("Conv", ["s2", Weight(g, "w", [2, 3, 1, 1]), Weight(g, "b", [2], 0.1f)], ["t"], "conv_out");
            g.AddNode("Concat", ["s1", "t"], ["y"], "concat").SetInt("axis", 1);
        }),
        ["Resize"] = new(Image, g => g.AddNode("Resize", [ConvIn(g), "", Weight(g, "scales", [4]).With(g, [1, 1, 2, 2])], ["y"], "op")
            .With(n => n.SetString("mode", "linear"))),
        ["MaxPool"] = new(Image, g => g.AddNode("MaxPool", [ConvIn(g)], ["y"], "op").With(n => { n.SetInts("kernel_shape", [2, 2]); n.SetInts("strides", [2, 2]); })),
        ["AveragePool"] = new(Image, g => g.AddNode("AveragePool", [ConvIn(g)], ["y"], "op").With(n => { n.SetInts("kernel_shape", [2, 2]); n.SetInts("strides", [2, 2]); })),
        ["GlobalAveragePool"] = new(Image, g => g.AddNode("GlobalAveragePool", [ConvIn(g)], ["y"], "op")),
        ["Relu"] = new(Image, g =>
        {
            g.AddNode("Sin", [ConvIn(g)], ["s"], "float_op");                                      // a float producer: the Relu cannot fold
            g.AddNode("Relu", ["s"], ["r"], "op");
            g.AddNode("Conv", ["r", Weight(g, "w", [2, 4, 1, 1]), Weight(g, "b", [2], 0.1f)], ["y"], "conv_out");
        }),
        ["Clip"] = new(Image, g => g.AddNode("Clip", [ConvIn(g), Scalar(g, "lo", -0.3f), Scalar(g, "hi", 0.4f)], ["y"], "op")),
        ["LeakyRelu"] = new(Image, g => g.AddNode("LeakyRelu", [ConvIn(g)], ["y"], "op").SetFloat("alpha", 0.1f)),
        ["Sigmoid"] = new(Image, g => g.AddNode("Sigmoid", [ConvIn(g)], ["y"], "op")),
        ["HardSigmoid"] = new(Image, g => g.AddNode("HardSigmoid", [ConvIn(g)], ["y"], "op")),
        ["HardSwish"] = new(Image, g => g.AddNode("HardSwish", [ConvIn(g)], ["y"], "op"), Opset: 14),
        ["Softmax"] = new([6, 16], g =>
        {
            g.AddNode("MatMul", ["x", Weight(g, "w", [16, 12], 1.5f)], ["m"], "proj");
            g.AddNode("Softmax", ["m"], ["y"], "op").SetInt("axis", -1);
        }),
        ["Gather"] = new(Image, g => g.AddNode("Gather", [ConvIn(g), Int64s(g, "indices", 3, 0, 2)], ["y"], "op").SetInt("axis", 1)),
        ["Where"] = new(Image, g =>
        {
            string c = ConvIn(g);
            g.AddNode("Greater", ["x", Scalar(g, "zero", 0f)], ["positive"], "greater");
            g.AddNode("Slice", ["positive", Int64s(g, "s0", 0), Int64s(g, "s1", 1), Int64s(g, "sa", 1)], ["mask"], "mask");
            g.AddNode("Where", ["mask", c, Weight(g, "other", [4, 1, 1], 0.3f)], ["y"], "op");
        }, DataInput: 1),
        ["Pad"] = new(Image, g => g.AddNode("Pad", [ConvIn(g), Int64s(g, "pads", 0, 0, 1, 2, 0, 0, 2, 1)], ["y"], "op").SetString("mode", "reflect")),
        ["PassThrough"] = new(Image, g =>
        {
            string c = ConvIn(g);
            g.AddNode("Transpose", [c], ["t"], "transpose").SetInts("perm", [0, 1, 3, 2]);
            g.AddNode("Slice", ["t", Int64s(g, "start", 1), Int64s(g, "end", 7), Int64s(g, "axes", 2)], ["sl"], "slice");
            g.AddNode("Unsqueeze", ["sl", Int64s(g, "ax0", 1)], ["u"], "unsqueeze");
            g.AddNode("Squeeze", ["u", Int64s(g, "ax1", 1)], ["sq"], "squeeze");
            g.AddNode("Flatten", ["sq"], ["f"], "flatten").SetInt("axis", 1);
            g.AddNode("Reshape", ["f", Int64s(g, "shape", 0, 4, 6, 8)], ["op_out"], "op");
            g.AddNode("Conv", ["op_out", Weight(g, "w", [2, 4, 1, 1]), Weight(g, "b", [2], 0.1f)], ["y"], "conv_out");
        }),
        ["Expand"] = new(Image, g =>
        {
            g.AddNode("GlobalAveragePool", [ConvIn(g)], ["p"], "pool");
            g.AddNode("Expand", ["p", Int64s(g, "to", 1, 4, 8, 8)], ["e"], "op");
            g.AddNode("Mul", ["e", "c"], ["y"], "scale");
        }),
        ["InstanceNormalization"] = new(Image, g => g.AddNode("InstanceNormalization", [ConvIn(g), Weight(g, "s", [4], 1f), Weight(g, "bias", [4], 0.2f)], ["y"], "op")),
        ["LayerNormalization"] = new([6, 16], g =>
        {
            g.AddNode("MatMul", ["x", Weight(g, "w", [16, 16])], ["m"], "proj");
            g.AddNode("LayerNormalization", ["m", Weight(g, "s", [16], 1f), Weight(g, "bias", [16], 0.2f)], ["y"], "op").SetInt("axis", -1);
        }, Opset: 17),
        ["ArgMax"] = new([16], g =>
        {
            g.AddNode("Gemm", ["x", Weight(g, "w", [10, 16]), Weight(g, "b", [10], 0.1f)], ["logits"], "fc").SetInt("transB", 1);
            g.AddNode("ArgMax", ["logits"], ["y"], "op").SetInt("axis", 1);
        }, OutputQuantized: false),
    };

    public static TheoryData<string> Ops => [.. Cases.Keys];

    [Theory]
    [MemberData(nameof(Ops))]
    public void Op_IsQuantized_AndRunsCloseToFloat(string op)
    {
        var c = Cases[op];
        var model = BuildModel(c);
        var context = new MLContext(seed: 1);
        var options = new PostTrainingOptions
        {
            ModelBytes = model.ToBytes(), SampleCount = Rows, BatchSize = 8, IntraOpNumThreads = 1, MinOutputCosine = 0,
        };
        if (op == "ArgMax")
            options.Outputs.Add(new OnnxColumnBinding("logits", "logits"));   // columns are float; the int64 argmax is checked in ONNX Runtime below
        int rowSize = c.RowDims.Aggregate(1, (a, b) => a * b);
        using var quantized = context.Quantization.PostTraining(options).Fit(Data(context, rowSize, c.RowDims, seed: 1));

        var info = quantized.Nodes.Single(n => n.Name == "op");
        Assert.True(info.Precision is not null, $"{op} stayed float: {info.Reason}");
        var q = OnnxModel.Parse(quantized.QuantizedModel).Graph;
        var node = q.Nodes.Single(n => n.Name == "op");
        Assert.Equal("DequantizeLinear", q.Producer(node.Inputs[c.DataInput])?.OpType);
        if (c.OutputQuantized)
            Assert.Contains(q.Consumers(node.Outputs[0]), n => n.OpType == "QuantizeLinear");

        // Held-out rows through both models in ONNX Runtime.
        float[] x = Values(8 * rowSize, 1f, seed: 99);
        int[] dims = [8, .. c.RowDims];
        if (op == "ArgMax")
        {
            long[] expected = RunInt64(model.ToBytes(), x, dims), actual = RunInt64(quantized.QuantizedModel, x, dims);
            Assert.True(expected.Zip(actual).Count(p => p.First == p.Second) >= 7, $"ArgMax agrees on {expected.Zip(actual).Count(p => p.First == p.Second)} of 8 rows");
            return;
        }
        float[] floatOut = OrtRunner.Run(model.ToBytes(), x, dims), quantOut = OrtRunner.Run(quantized.QuantizedModel, x, dims);
        double cosine = OrtRunner.Cosine(floatOut, quantOut);
        Assert.True(cosine >= c.MinCosine, $"{op}: output cosine {cosine:F5} < {c.MinCosine}");
    }

    [Fact]
    public void PassThroughOps_KeepTheirInputScale_SoftmaxOutputsOnUnitRange()
    {
        var context = new MLContext(seed: 1);
        foreach (string op in new[] { "PassThrough", "Softmax", "Concat" })
        {
            var c = Cases[op];
            int rowSize = c.RowDims.Aggregate(1, (a, b) => a * b);
            var options = new PostTrainingOptions { ModelBytes = BuildModel(c).ToBytes(), SampleCount = Rows, BatchSize = 8, IntraOpNumThreads = 1, MinOutputCosine = 0 };
            using var quantized = context.Quantization.PostTraining(options).Fit(Data(context, rowSize, c.RowDims, seed: 1));
            var g = OnnxModel.Parse(quantized.QuantizedModel).Graph;
            float Scale(string quantizedTensor) => g.Nodes.Single(n => n.OpType == "QuantizeLinear" && n.Inputs[0] == quantizedTensor) is var qn && g.TryGetInitializer(qn.Inputs[1], out var s) ? s.ToFloatArray()[0] : float.NaN;
            switch (op)
            {
                case "PassThrough":
                    foreach (string name in new[] { "transpose", "slice", "unsqueeze", "squeeze", "flatten", "op" })
                    {
                        var node = g.Nodes.Single(n => n.Name == name);
                        string input = g.Producer(node.Inputs[0])!.Inputs[0];     // the DQ's integer input
                        string source = g.Producer(input)!.Inputs[0];             // what its Q quantized
                        Assert.Equal(Scale(source), Scale(node.Outputs[0]));
                    }
                    break;
                case "Softmax":
                    Assert.Equal(1f / 255, Scale(g.Nodes.Single(n => n.Name == "op").Outputs[0]), 6);
                    break;
                case "Concat":
                    var concat = g.Nodes.Single(n => n.Name == "op");
                    var scales = concat.Inputs.Select(i => g.TryGetInitializer(g.Producer(i)!.Inputs[1], out var t) ? t.ToFloatArray()[0] : float.NaN).Distinct().ToList();
                    Assert.Single(scales);
                    Assert.Equal(scales[0], Scale(concat.Outputs[0]));
                    break;
            }
        }
    }

    [Fact]
    public void ShapeSubgraphs_AndConcatOfInt64_StayFloat_DataConcatIsQuantized()
    {
        // The direction classifier's pattern: Shape -> Gather -> Unsqueeze -> Concat(int64) -> Reshape of a float tensor.
        var model = BuildModel(new Case(Image, g =>
        {
            string c = ConvIn(g);
            g.AddNode("Shape", [c], ["shape"], "shape");
            g.AddNode("Gather", ["shape", Int64s(g, "zero", 0)], ["n"], "batch_dim").SetInt("axis", 0);
            g.AddNode("Concat", ["n", Int64s(g, "rest", 256)], ["target"], "shape_concat").SetInt("axis", 0);
            g.AddNode("Reshape", [c, "target"], ["flat"], "reshape");
            g.AddNode("Gemm", ["flat", Weight(g, "w", [10, 256]), Weight(g, "b", [10], 0.1f)], ["y"], "op").SetInt("transB", 1);
        }));
        var context = new MLContext(seed: 1);
        var options = new PostTrainingOptions { ModelBytes = model.ToBytes(), SampleCount = Rows, BatchSize = 8, IntraOpNumThreads = 1, MinOutputCosine = 0 };
        using var quantized = context.Quantization.PostTraining(options).Fit(Data(context, 192, Image, seed: 1));
        var nodes = quantized.Nodes.ToDictionary(n => n.Name);
        Assert.Null(nodes["shape_concat"].Precision);
        Assert.Contains("do not depend on the input data", nodes["shape_concat"].Reason);
        Assert.Null(nodes["batch_dim"].Precision);
        Assert.NotNull(nodes["reshape"].Precision);
        Assert.NotNull(nodes["op"].Precision);
    }

    private static OnnxModel BuildModel(Case c)
    {
        var model = Generated(c.RowDims, c.Build, c.Opset);
        if (model.Graph.Nodes.Any(n => n.OpType == "ArgMax" && n.Outputs[0] == "y"))
            model.Graph.Proto.Output[0] = Value("y", OnnxElementType.Int64, null);
        return model;
    }

    /// <summary>A generated model: input x [batch, rowDims...] (batch symbolic), float output y, the nodes <paramref name="build"/> adds.</summary>
    internal static OnnxModel Generated(int[] rowDims, Action<OnnxGraph> build, int opset = 13)
    {
        long ir = opset >= 21 ? 10 : opset >= 15 ? 8 : 7;
        var proto = new ModelProto { IrVersion = ir, ProducerName = "qatml-tests", Graph = new GraphProto { Name = "generated" } };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        proto.Graph.Input.Add(Value("x", OnnxElementType.Float, [null, .. rowDims.Select(d => (long?)d)]));
        proto.Graph.Output.Add(Value("y", OnnxElementType.Float, null));
        var model = OnnxModel.Parse(proto.ToByteArray());
        build(model.Graph);
        return model;
    }

    internal static ValueInfoProto Value(string name, OnnxElementType type, long?[]? dims) => OnnxValueInfo.Create(name, type, dims).Proto;

    private static IDataView Data(MLContext context, int rowSize, int[] rowDims, int seed)
    {
        var random = new Random(seed);
        // Smooth images with a per-row contrast, not white noise.
        return GeneratedRows.View(context, Enumerable.Range(0, Rows).Select(r =>
        {
            float contrast = 0.5f + (float)random.NextDouble();
            return (float[])[.. Enumerable.Range(0, rowSize).Select(i => contrast * MathF.Sin(0.37f * i + r) + 0.2f * (float)(random.NextDouble() - 0.5))];
        }).ToList(), rowDims);
    }

    private static long[] RunInt64(byte[] model, float[] input, int[] dims)
    {
        using var session = new InferenceSession(model);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("x", new DenseTensor<float>(input, dims))]);
        return [.. results.First().AsTensor<long>()];
    }
}

internal static class OpCoverageGraphExtensions
{
    /// <summary>Replaces an initializer's values (for constants whose values matter, like Resize scales).</summary>
    public static string With(this string initializer, OnnxGraph g, float[] values)
    {
        g.TryGetInitializer(initializer, out var t);
        g.SetInitializer(OnnxTensor.FromFloats(initializer, t.Dims, values));
        return initializer;
    }
}

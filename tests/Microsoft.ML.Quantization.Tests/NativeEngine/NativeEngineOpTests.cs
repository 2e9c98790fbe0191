using Google.Protobuf;
using Microsoft.ML.Quantization.Inference;
using Microsoft.ML.Quantization.Lowering;
using Microsoft.ML.Quantization.NativeEngine;
using Microsoft.ML.Quantization.Onnx;
using Microsoft.ML.Quantization.Onnx.Proto;
using static Microsoft.ML.Quantization.Tests.NativeEngine.NativeEngineTests;

namespace Microsoft.ML.Quantization.Tests.NativeEngine;

/// <summary>
/// The lowering of wider models' ops, each in a small QDQ model against ONNX Runtime (ORT_ENABLE_ALL, its own QDQ
/// fusions): integer units (Add and Mul with broadcasting and constants, Concat with per-input scales, MatMul of two
/// activations, elementwise tables, data movement, Resize, ConvTranspose) within 1 LSB of the output scale, and float
/// segments (ops between a DequantizeLinear and a QuantizeLinear that the model leaves in float) within 1 LSB too.
/// </summary>
public sealed class NativeEngineOpTests
{
    private const float InScale = 0.03f;
    private const int InZero = 120;

    /// <summary>A model: float input x [N, dims], x quantized (uint8) and dequantized to "xq", then <paramref name="body"/>, whose
    /// float result "r" is quantized with (outScale, outZero) and dequantized to the output y.</summary>
    private static byte[] Model(long[] dims, float outScale, int outZero, Action<GraphProto, Func<string, float, int, string>> body, long opset = 17, long[]? outDims = null)
    {
        var g = new GraphProto { Name = "op" };
        g.Input.Add(Value("x", dims));
        g.Output.Add(Value("y", outDims ?? dims));
        var model = new ModelProto { IrVersion = 8, ProducerName = "qatml-tests", Graph = g };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        int n = 0;
        // Quantize a float value with (scale, zero point) and dequantize it again; returns the dequantized name.
        string Qdq(string input, float scale, int zero, string? output)
        {
            string s = $"s{n}", z = $"z{n}", q = $"q{n}", d = output ?? $"d{n}";
            n++;
            g.Initializer.Add(OnnxTensor.FromFloats(s, [], [scale]).Proto);
            g.Initializer.Add(OnnxTensor.FromUInt8(z, [], [(byte)zero]).Proto);
            g.Node.Add(new NodeProto { OpType = "QuantizeLinear", Name = q, Input = { input, s, z }, Output = { q } });
            g.Node.Add(new NodeProto { OpType = "DequantizeLinear", Name = d, Input = { q, s, z }, Output = { d } });
            return d;
        }
        Qdq("x", InScale, InZero, "xq");
        body(g, (input, scale, zero) => Qdq(input, scale, zero, null));
        Qdq("r", outScale, outZero, "y");
        foreach (var (node, i) in g.Node.Select((node, i) => (node, i)))
            node.Name = $"{node.OpType.ToLowerInvariant()}{i}";  // unique, as ONNX Runtime wants
        return model.ToByteArray();
    }

    private static ValueInfoProto Value(string name, long[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "N" });
        foreach (long d in dims)
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxElementType.Float, Shape = shape } } };
    }

    private static NodeProto Node(string op, string[] inputs, string output, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = op.ToLowerInvariant() };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        foreach (var (name, value) in attributes)
            node.Attribute.Add(value switch
            {
                long i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
                float f => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = f },
                string s => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(s) },
                long[] ints => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { ints } },
                _ => throw new ArgumentException(name),
            });
        return node;
    }

    private static float[] Input(int rows, long[] dims, int seed)
    {
        var r = new Random(seed);
        long n = rows * dims.Aggregate(1L, (a, b) => a * b);
        return Enumerable.Range(0, (int)n).Select(_ => (float)(r.NextDouble() * 7 - 3.5)).ToArray();
    }

    /// <summary>Runs the model natively (it must lower completely, with the kinds named) and on ONNX Runtime; at most 1 LSB apart.</summary>
    private static void AssertWithinOneLsb(byte[] model, long[] dims, float outScale, params EngineOpKind[] kinds)
    {
        const int rows = 3;
        float[] x = Input(rows, dims, 7);
        using var engine = NativeInt8Engine.TryLoad(model, "op", [], [], new Dictionary<string, int[]>(), 1, out var why)
                           ?? throw new Xunit.Sdk.XunitException("not lowered: " + string.Join("; ", why));
        foreach (var kind in kinds)
            Assert.Contains(engine.Ops, o => o.Kind == kind);
        var native = new float[rows * engine.Outputs[0].RowSize];
        engine.Run(rows, [x], [native]);
        float[] ort = RunOrt(model, x, rows, dims.Select(d => (int)d).ToArray());
        Assert.Equal(ort.Length, native.Length);
        Assert.InRange(MaxLsb(ort, native, outScale), 0, 1);
    }

    private static string Const(GraphProto g, string name, long[] dims, float[] values)
    {
        g.Initializer.Add(OnnxTensor.FromFloats(name, dims, values).Proto);
        return name;
    }

    private static string Ints(GraphProto g, string name, long[] values)
    {
        g.Initializer.Add(OnnxTensor.FromInt64(name, [values.Length], values).Proto);
        return name;
    }

    /// <summary>An 8-bit constant behind a DequantizeLinear (per tensor).</summary>
    private static string QuantizedConst(GraphProto g, string name, long[] dims, byte[] values, float scale, int zero)
    {
        g.Initializer.Add(OnnxTensor.FromUInt8(name + "_q", dims, values).Proto);
        g.Initializer.Add(OnnxTensor.FromFloats(name + "_s", [], [scale]).Proto);
        g.Initializer.Add(OnnxTensor.FromUInt8(name + "_z", [], [(byte)zero]).Proto);
        g.Node.Add(new NodeProto { OpType = "DequantizeLinear", Input = { name + "_q", name + "_s", name + "_z" }, Output = { name } });
        return name;
    }

    [Fact]
    public void AddAndMulBroadcastWithConstantsAndActivations()
    {
        long[] dims = [4, 5, 6];
        // Mul by a per-channel quantized constant [1, 4, 1, 1] (a squeeze-excitation scale), then Add of the
        // activation's own [4, 5, 1] slice... as a second activation through another quantization.
        byte[] model = Model(dims, 0.05f, 110, (g, qdq) =>
        {
            string c = QuantizedConst(g, "c", [1, 4, 1, 1], [10, 200, 128, 77], 0.02f, 100);
            g.Node.Add(Node("Mul", ["xq", c], "m"));
            string mq = qdq("m", 0.04f, 128);
            g.Node.Add(Node("ReduceMean", ["xq"], "red", ("axes", new long[] { 3 }), ("keepdims", 1L)));
            string rq = qdq("red", 0.02f, 130);
            g.Node.Add(Node("Add", [mq, rq], "r"));
        });
        AssertWithinOneLsb(model, dims, 0.05f, EngineOpKind.Binary, EngineOpKind.ReduceMean);
    }

    [Fact]
    public void SameShapeAddOfTwoActivationsIsTheAddOpTheEngineFuses()
    {
        long[] dims = [4, 5, 6];
        byte[] model = Model(dims, 0.05f, 110, (g, qdq) =>
        {
            g.Node.Add(Node("Relu", ["xq"], "relu"));
            g.Node.Add(Node("Add", [qdq("relu", 0.02f, 0), "xq"], "r"));
        });
        AssertWithinOneLsb(model, dims, 0.05f, EngineOpKind.Add);
    }

    [Fact]
    public void ConcatRequantizesItsInputsToTheOutputScale()
    {
        long[] dims = [3, 4, 5];
        byte[] model = Model(dims, 0.05f, 128, (g, qdq) =>
        {
            g.Node.Add(Node("Relu", ["xq"], "a"));
            string aq = qdq("a", 0.02f, 0);
            string bq = qdq("xq", 0.07f, 125);
            g.Node.Add(Node("Concat", [aq, bq, "xq"], "cat", ("axis", 1L)));
            g.Node.Add(Node("Slice", ["cat", Ints(g, "st", [1, 2]), Ints(g, "en", [8, 5]), Ints(g, "ax", [1, 3]), Ints(g, "sp", [2, 1])], "r"));
        }, outDims: [3, 4, 3]);
        AssertWithinOneLsb(model, dims, 0.05f, EngineOpKind.Concat, EngineOpKind.Copy);
    }

    [Fact]
    public void DataMovementRunsOnTheIntegers()
    {
        long[] dims = [8, 4, 6];
        byte[] model = Model(dims, InScale, InZero, (g, qdq) =>
        {
            g.Node.Add(Node("Transpose", ["xq"], "t", ("perm", new long[] { 0, 2, 3, 1 })));  // [N, 4, 6, 8]
            string tq = qdq("t", InScale, InZero);
            g.Node.Add(Node("Transpose", [tq], "u", ("perm", new long[] { 0, 3, 1, 2 })));  // back to [N, 8, 4, 6]
            string uq = qdq("u", InScale, InZero);
            g.Node.Add(Node("DepthToSpace", [uq], "d", ("blocksize", 2L), ("mode", "CRD")));  // [N, 2, 8, 12]
            string dq = qdq("d", InScale, InZero);
            g.Node.Add(Node("Pad", [dq, Ints(g, "pads", [0, 0, 1, 2, 0, 0, 0, 1])], "p"));  // [N, 2, 9, 15]
            string pq = qdq("p", InScale, InZero);
            g.Node.Add(Node("Sigmoid", [pq], "r"));
        }, outDims: [2, 9, 15]);
        AssertWithinOneLsb(model, dims, InScale, EngineOpKind.Copy, EngineOpKind.Pad, EngineOpKind.Lut);
    }

    [Theory]
    [InlineData("nearest", "asymmetric", "floor")]
    [InlineData("nearest", "half_pixel", "round_prefer_floor")]
    [InlineData("linear", "half_pixel", "")]
    [InlineData("linear", "align_corners", "")]
    public void ResizeFollowsOnnxRuntimesCoordinates(string mode, string transform, string nearest)
    {
        long[] dims = [3, 5, 7];
        byte[] model = Model(dims, 0.04f, 118, (g, qdq) =>
        {
            var attributes = new List<(string, object)> { ("mode", mode), ("coordinate_transformation_mode", transform) };
            if (nearest.Length > 0)
                attributes.Add(("nearest_mode", nearest));
            g.Node.Add(Node("Resize", ["xq", "", Const(g, "scales", [4], [1f, 1f, 2f, 1.5f])], "r", [.. attributes]));
        }, opset: 13, outDims: [3, 10, 10]);
        AssertWithinOneLsb(model, dims, 0.04f, EngineOpKind.Resize);
    }

    private static readonly long[] AttentionDims = [2, 6, 5];

    // Attention-like: scores = x @ x^T (two activations), softmax (left in float), context = scores @ x.
    private static byte[] AttentionModel() => Model(AttentionDims, 0.03f, 120, (g, qdq) =>
    {
        g.Node.Add(Node("Transpose", ["xq"], "xt", ("perm", new long[] { 0, 1, 3, 2 })));
        string xt = qdq("xt", InScale, InZero);
        g.Node.Add(Node("MatMul", ["xq", xt], "scores"));
        string sq = qdq("scores", 0.3f, 128);
        g.Node.Add(Node("Softmax", [sq], "probabilities", ("axis", -1L)));
        string pq = qdq("probabilities", 1f / 255, 0);
        g.Node.Add(Node("MatMul", [pq, "xq"], "r"));
    });

    [Fact]
    public void MatMulOfTwoActivationsAndASoftmaxFloatSegment()
        => AssertWithinOneLsb(AttentionModel(), AttentionDims, 0.03f, EngineOpKind.MatMul, EngineOpKind.Softmax);

    [Fact]
    public void WiderOpsRunOnTheCudaDeviceOrOnTheCpuWithAWarning()
    {
        // The plan holds COPY, MATMUL and SOFTMAX: the CUDA runner takes them (docs/cuda.md), so a GPU runs the plan;
        // without a GPU or a CUDA build the engine loads on the CPU and says why.
        const int rows = 3;
        byte[] model = AttentionModel();
        var warnings = new List<string>();
        using var requested = NativeInt8Engine.TryLoad(model, "op", [], [], new Dictionary<string, int[]>(), 1, ComputeDevice.Cuda(0), warnings.Add, out var why)
                              ?? throw new Xunit.Sdk.XunitException("not lowered: " + string.Join("; ", why));
        using var cpu = NativeInt8Engine.TryLoad(model, "op", [], [], new Dictionary<string, int[]>(), 1, out _)!;
        Assert.Contains(requested.Ops, o => o.Kind == EngineOpKind.Copy);
        Assert.Contains(requested.Ops, o => o.Kind == EngineOpKind.MatMul);
        Assert.Contains(requested.Ops, o => o.Kind == EngineOpKind.Softmax);
        if (NativeRuntime.CudaCompiled && NativeRuntime.CudaDeviceCount > 0)
        {
            Assert.Equal(ComputeDevice.Cuda(0), requested.Device);
            Assert.Empty(warnings);
        }
        else
        {
            Assert.Equal(ComputeDevice.Cpu, requested.Device);
            Assert.Contains(warnings, m => m.Contains("CUDA device 0") && m.Contains("Running on the CPU instead"));
        }
        float[] x = Input(rows, AttentionDims, 11);
        var onDevice = new float[rows * requested.Outputs[0].RowSize];
        var onCpu = new float[rows * cpu.Outputs[0].RowSize];
        requested.Run(rows, [x], [onDevice]);
        cpu.Run(rows, [x], [onCpu]);
        // The softmax's exp is CUDA's on a GPU (a few ulp from libm's): at most one step of the output's scale apart.
        Assert.InRange(MaxLsb(onCpu, onDevice, 0.03f), 0, 1);
    }

    [Fact]
    public void LayerNormalizationAndElementwiseFloatSegments()
    {
        long[] dims = [4, 8];
        byte[] model = Model(dims, 0.02f, 100, (g, qdq) =>
        {
            g.Node.Add(Node("LayerNormalization", ["xq", Const(g, "gamma", [8], [1f, 0.5f, 2f, 1.5f, 1f, 0.75f, 1.25f, 1f]), Const(g, "beta", [8], [0f, 0.1f, -0.1f, 0.2f, 0f, 0f, 0.3f, -0.2f])],
                "ln", ("axis", -1L), ("epsilon", 1e-5f)));
            g.Node.Add(Node("Mul", ["ln", Const(g, "half", [], [0.5f])], "half_ln"));
            g.Node.Add(Node("Erf", ["half_ln"], "erf"));
            g.Node.Add(Node("HardSwish", ["erf"], "r"));
        }, opset: 17);
        AssertWithinOneLsb(model, dims, 0.02f, EngineOpKind.LayerNorm, EngineOpKind.Unary, EngineOpKind.Binary);
    }

    [Theory]
    [InlineData(2L, 2L, 0L)]  // ppocr-det's upsampling: four 1x1 phase convolutions
    [InlineData(4L, 2L, 1L)]  // a GAN-style 4x4 stride-2 kernel: four 2x2 phases
    [InlineData(3L, 2L, 1L)]  // odd output: the zero insertion
    public void ConvTransposeIntegerAndFloat(long k, long stride, long pad)
    {
        long[] dims = [4, 5, 6];
        long oh = (5 - 1) * stride - 2 * pad + k, ow = (6 - 1) * stride - 2 * pad + k;
        var r = new Random(3);
        sbyte[] w = Enumerable.Range(0, (int)(4 * 3 * k * k)).Select(_ => (sbyte)r.Next(-60, 61)).ToArray();
        foreach (bool quantizedWeights in new[] { true, false })
        {
            byte[] model = Model(dims, 0.05f, 128, (g, qdq) =>
            {
                string weights;
                if (quantizedWeights)
                {
                    g.Initializer.Add(OnnxTensor.FromInt8("w_q", [4, 3, k, k], w).Proto);
                    g.Initializer.Add(OnnxTensor.FromFloats("w_s", [3], [0.01f, 0.02f, 0.015f]).Proto);
                    var dqw = new NodeProto { OpType = "DequantizeLinear", Input = { "w_q", "w_s" }, Output = { "w" } };
                    dqw.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
                    g.Node.Add(dqw);
                    weights = "w";
                }
                else
                {
                    weights = Const(g, "w", [4, 3, k, k], w.Select(v => v * 0.01f).ToArray());
                }
                g.Node.Add(Node("ConvTranspose", ["xq", weights], "r", ("strides", new long[] { stride, stride }), ("pads", new long[] { pad, pad, pad, pad })));
            }, outDims: [3, oh, ow]);
            AssertWithinOneLsb(model, dims, 0.05f, quantizedWeights ? EngineOpKind.Conv : EngineOpKind.FloatConv);
        }
    }

    [Fact]
    public void BatchNormalizationAndFloatConvolutionBetweenQuantizedTensors()
    {
        long[] dims = [3, 6, 6];
        byte[] model = Model(dims, 0.05f, 128, (g, qdq) =>
        {
            g.Node.Add(Node("Conv", ["xq", Const(g, "cw", [5, 3, 3, 3], Enumerable.Range(0, 135).Select(i => (i % 7 - 3) * 0.05f).ToArray())], "conv",
                ("pads", new long[] { 1, 1, 1, 1 })));
            g.Node.Add(Node("BatchNormalization", ["conv", Const(g, "bs", [5], [1f, 2f, 0.5f, 1f, 1.5f]), Const(g, "bb", [5], [0f, 0.1f, 0.2f, -0.3f, 0f]),
                Const(g, "bm", [5], [0.1f, 0f, -0.2f, 0.3f, 0f]), Const(g, "bv", [5], [1f, 2f, 0.5f, 1f, 4f])], "r"));
        }, outDims: [5, 6, 6]);
        AssertWithinOneLsb(model, dims, 0.05f, EngineOpKind.FloatConv, EngineOpKind.Binary);
    }

    [Fact]
    public void UnsupportedNodesAreReportedOnceNotTheirDependents()
    {
        long[] dims = [4];
        byte[] model = Model(dims, 0.05f, 128, (g, qdq) =>
        {
            g.Node.Add(Node("Cos", ["xq"], "c"));
            string cq = qdq("c", 0.01f, 128);
            g.Node.Add(Node("Relu", [cq], "relu"));
            g.Node.Add(Node("Sigmoid", [qdq("relu", 0.01f, 0)], "r"));
        });
        var result = QdqLowering.Lower(OnnxModel.Parse(model), "op", [], [], new Dictionary<string, int[]>());
        Assert.False(result.Succeeded);
        string cos = OnnxModel.Parse(model).Graph.Nodes.Single(n => n.OpType == "Cos").Name;
        // The root cause once; what reads its output (Q, DQ, Relu, Sigmoid...) only as a count.
        Assert.Equal(2, result.Unsupported.Count);
        Assert.Equal($"op type Cos is not supported by the native engine: node '{cos}' (Cos)", result.Unsupported[0]);
        Assert.Matches(@"^\d+ more nodes or outputs depend on those$", result.Unsupported[1]);
    }

    /// <summary>
    /// The flatten exporters write as shape arithmetic: Shape of an integer unit's output (its float value, read only
    /// for its dims) -> Gather or Slice -> Unsqueeze / Cast -> Concat with -1 -> Reshape. Evaluated while lowering, the
    /// batch copied at run time: the model runs natively at several batch sizes.
    /// </summary>
    [Theory]
    [InlineData("gather")]
    [InlineData("slice")]
    public void ShapeArithmeticBeforeAReshapeIsEvaluatedWhileLowering(string how)
    {
        long[] dims = [3, 4, 5];
        byte[] model = Model(dims, 0.02f, 128, (g, qdq) =>
        {
            g.Node.Add(Node("GlobalAveragePool", ["xq"], "gap"));
            string gq = qdq("gap", 0.02f, 128);
            g.Node.Add(Node("Shape", ["gap"], "shp"));
            if (how == "gather")
            {
                g.Initializer.Add(OnnxTensor.FromInt64("first", [], [0]).Proto);
                g.Node.Add(Node("Gather", ["shp", "first"], "n", ("axis", 0L)));
                g.Node.Add(Node("Unsqueeze", ["n", Ints(g, "axes", [0])], "batch"));
            }
            else
            {
                g.Node.Add(Node("Slice", ["shp", Ints(g, "from", [0]), Ints(g, "to", [1])], "n"));
                g.Node.Add(Node("Cast", ["n"], "batch", ("to", (long)OnnxElementType.Int64)));
            }
            g.Node.Add(Node("Concat", ["batch", Ints(g, "rest", [-1])], "target", ("axis", 0L)));
            g.Node.Add(Node("Reshape", [gq, "target"], "r"));
        }, outDims: [3]);
        AssertWithinOneLsb(model, dims, 0.02f);
        using var engine = NativeInt8Engine.TryLoad(model, "op", [], [], new Dictionary<string, int[]>(), 1, out _)!;
        foreach (int rows in new[] { 1, 5 })
        {
            float[] x = Input(rows, dims, rows), native = new float[rows * 3];
            engine.Run(rows, [x], [native]);
            Assert.InRange(MaxLsb(RunOrt(model, x, rows, [3, 4, 5]), native, 0.02f), 0, 1);
        }
    }

    [Fact]
    public void AShapeThatMovesTheBatchIsReportedNotGuessed()
    {
        long[] dims = [3, 4, 5];
        byte[] model = Model(dims, InScale, InZero, (g, qdq) =>
        {
            g.Node.Add(Node("Shape", ["xq"], "shp"));
            g.Node.Add(Node("Slice", ["shp", Ints(g, "from", [0]), Ints(g, "to", [1])], "batch"));
            g.Node.Add(Node("Concat", [Ints(g, "lead", [-1]), "batch"], "target", ("axis", 0L)));
            g.Node.Add(Node("Reshape", ["xq", "target"], "r"));
        }, outDims: [60]);
        var result = QdqLowering.Lower(OnnxModel.Parse(model), "op", [], [], new Dictionary<string, int[]>());
        Assert.False(result.Succeeded);
        Assert.Contains(result.Unsupported, u => u.Contains("the target shape moves the batch away from the first dimension", StringComparison.Ordinal));
    }
}

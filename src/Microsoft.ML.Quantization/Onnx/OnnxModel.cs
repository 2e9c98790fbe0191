using Google.Protobuf;
using Microsoft.ML.Quantization.Internal;
using Microsoft.ML.Quantization.Onnx.Proto;

namespace Microsoft.ML.Quantization.Onnx;

/// <summary>How <see cref="OnnxModel.Save"/> writes a model.</summary>
internal sealed record OnnxSaveOptions
{
    /// <summary>Initializers of at least this many bytes go to a side file; null keeps everything inline.</summary>
    public long? ExternalDataThreshold { get; init; }

    /// <summary>The side file's name, relative to the model's folder (default: model file name + ".data").</summary>
    public string? ExternalDataFileName { get; init; }
}

/// <summary>
/// An ONNX ModelProto held in memory. External tensor data is read into the tensors on load, so the
/// object is self-contained; <see cref="Save"/> can externalize large tensors again.
/// </summary>
internal sealed class OnnxModel
{
    private const int MaxProtobufBytes = int.MaxValue;

    private OnnxModel(ModelProto proto, string? sourceName)
    {
        Proto = proto;
        SourceName = sourceName;
        Proto.Graph ??= new GraphProto { Name = "graph" };
        Graph = new OnnxGraph(Proto.Graph, this);
    }

    internal ModelProto Proto { get; }

    /// <summary>Whether some tensor's data came from an external file (now inline): the file's own bytes are not self-contained.</summary>
    public bool HadExternalData { get; private set; }

    /// <summary>The file (or name) the model came from, for error messages.</summary>
    public string? SourceName { get; internal set; }

    public OnnxGraph Graph { get; }

    public long IrVersion { get => Proto.IrVersion; set => Proto.IrVersion = value; }

    public string ProducerName { get => Proto.ProducerName; set => Proto.ProducerName = value; }

    /// <summary>Opset per domain ("" is the default ai.onnx domain).</summary>
    public IReadOnlyDictionary<string, long> OpsetImports =>
        Proto.OpsetImport.GroupBy(o => NormalizeDomain(o.Domain)).ToDictionary(g => g.Key, g => g.Max(o => o.Version));

    /// <summary>The default-domain opset (ai.onnx), or 0 when none is imported.</summary>
    public long DefaultOpset => OpsetImports.TryGetValue("", out long v) ? v : 0;

    public void SetOpset(string domain, long version)
    {
        domain = NormalizeDomain(domain);
        var existing = Proto.OpsetImport.Where(o => NormalizeDomain(o.Domain) == domain).ToList();
        foreach (var o in existing)
            Proto.OpsetImport.Remove(o);
        Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
    }

    internal static string NormalizeDomain(string domain) => domain == "ai.onnx" ? "" : domain;

    internal string Describe => SourceName is null ? "ONNX model" : $"ONNX model '{SourceName}'";

    public OnnxModel Clone() => new(Proto.Clone(), SourceName);

    /// <summary>Reads a model file; external data is resolved relative to the file's folder.</summary>
    public static OnnxModel Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path);
        return Parse(ReadFile(path), Path.GetDirectoryName(full), path);
    }

    /// <summary>The bytes of a model file; a FIFO, device or directory is refused without being opened.</summary>
    internal static byte[] ReadFile(string path)
    {
        try
        {
            return RegularFile.TryReadAllBytes(Path.GetFullPath(path), requireSingleLink: false, out string problem)
                ?? throw new InvalidOnnxModelException($"ONNX model '{path}' {problem}.");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidOnnxModelException($"ONNX model '{path}' could not be read: {e.Message}", e);
        }
    }

    /// <summary>Parses ModelProto bytes. Without <paramref name="baseDirectory"/>, external data is refused.</summary>
    public static OnnxModel Parse(ReadOnlySpan<byte> bytes, string? baseDirectory = null, string? sourceName = null)
    {
        string what = sourceName is null ? "ONNX model" : $"ONNX model '{sourceName}'";
        if (bytes.IsEmpty)
            throw new InvalidOnnxModelException($"{what} is empty: not an ONNX ModelProto.");
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // InvalidProtocolBufferException mostly; anything the parser throws on hostile bytes is reported the same way.
            throw new InvalidOnnxModelException($"{what} is truncated or not an ONNX ModelProto: {e.Message}", e);
        }
        // A random byte string can parse as a protobuf message with only unknown fields: demand the
        // parts every ONNX model has.
        if (proto.IrVersion <= 0 || proto.Graph is null)
            throw new InvalidOnnxModelException($"{what} is truncated or not an ONNX ModelProto: " +
                (proto.IrVersion <= 0 ? "it has no ir_version" : "it has no graph") + ".");
        var model = new OnnxModel(proto, sourceName);
        model.CheckTensorDims();
        model.ResolveExternalData(baseDirectory);
        return model;
    }

    /// <summary>The length of <see cref="ToBytes"/>, computed without serializing.</summary>
    public long SerializedSize => Proto.CalculateSize();

    /// <summary>The serialized model; every tensor inline.</summary>
    public byte[] ToBytes()
    {
        try
        {
            return Proto.ToByteArray();
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or OverflowException)
        {
            throw new InvalidOnnxModelException($"{Describe} could not be serialized (ONNX protobuf files are limited to 2 GB; save with an external data threshold): {e.Message}", e);
        }
    }

    /// <summary>
    /// Writes the model atomically (temporary files beside the target, then renames), optionally externalizing large
    /// tensors. A failure (disk full, read-only folder) leaves no temporary file and the previous file, if any, as it was,
    /// and says which file could not be written.
    /// </summary>
    public void Save(string path, OnnxSaveOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        ModelProto toWrite = Proto;
        string? dataTemp = null, dataFinal = null;
        string temp = full + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            Directory.CreateDirectory(folder);
            if (options?.ExternalDataThreshold is long threshold)
            {
                string dataName = options.ExternalDataFileName ?? Path.GetFileName(full) + ".data";
                dataFinal = Path.GetFullPath(Path.Combine(folder, dataName));
                CheckInside(folder, dataFinal, dataName, "<save>");
                toWrite = Proto.Clone();
                dataTemp = dataFinal + ".tmp-" + Guid.NewGuid().ToString("N");
                using var stream = new FileStream(dataTemp, FileMode.CreateNew, FileAccess.Write);
                WriteExternalData(toWrite, stream, threshold, dataName);
            }
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
                toWrite.WriteTo(stream);
            if (dataTemp is not null)
                File.Move(dataTemp, dataFinal!, overwrite: true);
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e) when (RegularFile.IsWriteFailure(e))
        {
            throw RegularFile.WriteFailure($"ONNX model '{path}'", e);
        }
        finally
        {
            TryDelete(temp);
            if (dataTemp is not null)
                TryDelete(dataTemp);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Nothing was created there, or the folder went read-only meanwhile.
        }
    }

    /// <summary>Moves every tensor of at least <paramref name="threshold"/> bytes into <paramref name="stream"/> (the file <paramref name="dataName"/>).</summary>
    private static void WriteExternalData(ModelProto model, FileStream stream, long threshold, string dataName)
    {
        foreach (var tensor in AllTensors(model.Graph))
        {
            var t = new OnnxTensor(tensor);
            if (t.ElementType == OnnxElementType.String)
                continue;
            t.MakeRaw();
            if (tensor.RawData.Length < threshold)
                continue;
            // Offsets aligned to 4 KiB, as onnx's own writer does, so readers can mmap.
            long offset = (stream.Position + 4095) / 4096 * 4096;
            stream.SetLength(offset);
            stream.Position = offset;
            tensor.RawData.WriteTo(stream);
            tensor.ExternalData.Clear();
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName.Replace('\\', '/') });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = tensor.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.RawData = ByteString.Empty;
        }
    }

    /// <summary>Every TensorProto in the graph: initializers, Constant values and tensor attributes, subgraphs included.</summary>
    internal static IEnumerable<TensorProto> AllTensors(GraphProto graph)
    {
        foreach (var t in graph.Initializer)
            yield return t;
        foreach (var node in graph.Node)
            foreach (var a in node.Attribute)
            {
                if (a.T is not null)
                    yield return a.T;
                foreach (var t in a.Tensors)
                    yield return t;
                if (a.G is not null)
                    foreach (var t in AllTensors(a.G))
                        yield return t;
                foreach (var g in a.Graphs)
                    foreach (var t in AllTensors(g))
                        yield return t;
            }
    }

    /// <summary>
    /// Every tensor's dims are non-negative and its byte size fits in a long: the rest of the code multiplies dims
    /// without overflow checks.
    /// </summary>
    private void CheckTensorDims()
    {
        foreach (var tensor in AllTensors(Proto.Graph))
            _ = TensorByteCount(tensor);
    }

    /// <summary>Bytes the tensor's type and dims need (-1 for variable-size types), or an error naming it.</summary>
    private long TensorByteCount(TensorProto tensor)
    {
        long count = 1;
        foreach (long d in tensor.Dims)
        {
            if (d < 0)
                throw new InvalidOnnxModelException($"{Describe}: tensor '{tensor.Name}' has the negative dimension {d} (dims [{string.Join(",", tensor.Dims)}]).");
            if (d > 0 && count > long.MaxValue / d)
                throw new InvalidOnnxModelException($"{Describe}: tensor '{tensor.Name}' has dims [{string.Join(",", tensor.Dims)}], whose element count overflows.");
            count *= d;
        }
        int elementSize = OnnxTensor.ElementSize((OnnxElementType)tensor.DataType);
        if (elementSize < 0)
            return -1;
        if (elementSize == 0)
            return count / 2 + count % 2;
        if (count > long.MaxValue / elementSize)
            throw new InvalidOnnxModelException($"{Describe}: tensor '{tensor.Name}' has dims [{string.Join(",", tensor.Dims)}], whose byte size overflows.");
        return count * elementSize;
    }

    private void ResolveExternalData(string? baseDirectory)
    {
        foreach (var tensor in AllTensors(Proto.Graph))
        {
            if (tensor.DataLocation != TensorProto.Types.DataLocation.External)
                continue;
            string? location = tensor.ExternalData.LastOrDefault(kv => kv.Key == "location")?.Value;
            if (string.IsNullOrEmpty(location))
                throw new InvalidOnnxModelException($"{Describe}: tensor '{tensor.Name}' is marked external but has no 'location'.");
            long offset = 0, length = -1;
            foreach (var kv in tensor.ExternalData.Where(kv => kv.Key is "offset" or "length"))
            {
                if (!long.TryParse(kv.Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long value))
                    throw new InvalidOnnxModelException($"{Describe}: external data {kv.Key} '{kv.Value}' of tensor '{tensor.Name}' (file '{location}') is not a non-negative integer.");
                if (kv.Key == "offset")
                    offset = value;
                else
                    length = value;
            }
            if (baseDirectory is null)
                throw new InvalidOnnxModelException($"{Describe}: tensor '{tensor.Name}' has external data '{location}' but the model was parsed from bytes without a base directory.");
            string folder = Path.GetFullPath(baseDirectory);
            if (Path.IsPathRooted(location) || location.Split('/', '\\').Contains(".."))
                throw new InvalidOnnxModelException($"External data location '{location}' of tensor '{tensor.Name}' escapes the model folder '{folder}'.");
            string file = Path.GetFullPath(Path.Combine(folder, location));
            CheckInside(folder, file, location, tensor.Name);
            string where = $"{Describe}: external data file '{location}' of tensor '{tensor.Name}' (in '{folder}')";
            long expected = TensorByteCount(tensor);
            FileStream? stream;
            try
            {
                stream = RegularFile.TryOpenRead(file, requireSingleLink: true, out string problem)
                    ?? throw new InvalidOnnxModelException($"{where} {problem}.");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new InvalidOnnxModelException($"{where} could not be read: {e.Message}", e);
            }
            using (stream)
            {
                long size = stream.Length;
                if (offset > size)
                    throw new InvalidOnnxModelException($"{where}: offset {offset} is past the end of the file ({size} bytes).");
                if (length < 0)
                    length = expected >= 0 ? expected : size - offset;
                if (expected >= 0 && length != expected)
                    throw new InvalidOnnxModelException($"{where} is {length} bytes but its type and dims [{string.Join(",", tensor.Dims)}] need {expected}.");
                if (length > size - offset) // offset <= size, so no overflow
                    throw new InvalidOnnxModelException($"{where}: offset {offset} and length {length} run past the end of the file ({size} bytes).");
                if (length > Array.MaxLength)
                    throw new InvalidOnnxModelException($"{where}: {length} bytes are more than one tensor can hold here (2 GB).");
                var buffer = new byte[length];
                stream.Position = offset;
                stream.ReadExactly(buffer);
                tensor.RawData = ByteString.CopyFrom(buffer);
            }
            tensor.ExternalData.Clear();
            tensor.DataLocation = TensorProto.Types.DataLocation.Default;
            HadExternalData = true;
        }
    }

    /// <summary>Refuses a path outside <paramref name="folder"/>, following symbolic links on the way.</summary>
    private static void CheckInside(string folder, string file, string location, string tensorName)
    {
        string root = Path.TrimEndingDirectorySeparator(folder) + Path.DirectorySeparatorChar;
        if (!file.StartsWith(root, StringComparison.Ordinal))
            throw new InvalidOnnxModelException($"External data location '{location}' of tensor '{tensorName}' escapes the model folder '{folder}'.");
        // A link inside the folder may point out of it: resolve each existing component.
        string current = Path.TrimEndingDirectorySeparator(folder);
        foreach (string part in file[root.Length..].Split(Path.DirectorySeparatorChar))
        {
            current = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            if (!info.Exists || info.LinkTarget is null)
                continue;
            var target = info.ResolveLinkTarget(returnFinalTarget: true);
            string resolved = target is null ? current : Path.GetFullPath(target.FullName);
            string realRoot = Path.TrimEndingDirectorySeparator(ResolveReal(folder)) + Path.DirectorySeparatorChar;
            if (!resolved.StartsWith(realRoot, StringComparison.Ordinal) && !resolved.StartsWith(root, StringComparison.Ordinal))
                throw new InvalidOnnxModelException($"External data location '{location}' of tensor '{tensorName}' escapes the model folder '{folder}' through the link '{current}' -> '{resolved}'.");
        }
    }

    private static string ResolveReal(string folder)
    {
        var info = new DirectoryInfo(folder);
        return info.LinkTarget is null ? info.FullName : info.ResolveLinkTarget(true)?.FullName ?? info.FullName;
    }
}

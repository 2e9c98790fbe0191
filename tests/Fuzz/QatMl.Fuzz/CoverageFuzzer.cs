using System.Diagnostics;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.ML.Quantization.Tests.Reliability;

namespace QatMl.Fuzz;

/// <summary>
/// A small in-process coverage-guided fuzzer over SharpFuzz's instrumentation: the instrumented assemblies count edges
/// in an AFL-style map (SharpFuzz.Common.Trace.SharedMem); an input that reaches a new edge or a new hit-count bucket
/// joins the corpus. Mutations: bit flips, byte sets, interesting values, chunk insert/delete/duplicate, splices.
/// The input being run is mirrored in a memory-mapped file, so a crash or hang that kills the process leaves it behind.
/// </summary>
internal static unsafe class CoverageFuzzer
{
    private const int MapSize = 1 << 16;
    private const int MaxInput = 64 << 10;
    private static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(20);

    public static int Run(string corpusDir, string findingsDir, TimeSpan duration)
    {
        Directory.CreateDirectory(corpusDir);
        Directory.CreateDirectory(findingsDir);
        byte* map = (byte*)NativeMemory.AllocZeroed(MapSize);
        SharpFuzz.Common.Trace.SharedMem = map;
        var virgin = new byte[MapSize];
        var corpus = new List<byte[]>();
        var random = new Random(Environment.ProcessId);
        var seen = new HashSet<string>();

        using var current = MemoryMappedFile.CreateFromFile(Path.Combine(findingsDir, "current-input.bin"), FileMode.Create, null, MaxInput + 4);
        using var view = current.CreateViewAccessor();
        long started = Stopwatch.GetTimestamp(), executions = 0, lastExecution = Stopwatch.GetTimestamp();
        int findings = 0;
        var watchdog = new Thread(() =>
        {
            while (true)
            {
                Thread.Sleep(1000);
                if (Stopwatch.GetElapsedTime(Volatile.Read(ref lastExecution)) > HangLimit)
                {
                    File.Copy(Path.Combine(findingsDir, "current-input.bin"), Path.Combine(findingsDir, $"hang-{DateTime.UtcNow:HHmmss}.bin"), true);
                    Console.WriteLine("FINDING hang: one input ran past the limit; the input is in findings/ (length-prefixed)");
                    Environment.FailFast("QatMl.Fuzz: hang");
                }
            }
        }) { IsBackground = true };
        watchdog.Start();

        bool Execute(byte[] input)
        {
            view.Write(0, input.Length);
            view.WriteArray(4, input, 0, input.Length);
            new Span<byte>(map, MapSize).Clear();
            SharpFuzz.Common.Trace.PrevLocation = 0;
            Volatile.Write(ref lastExecution, Stopwatch.GetTimestamp());
            Exception? finding = Target.Run(input);
            executions++;
            if (finding is not null)
            {
                string signature = finding.GetType().Name + " @ " + (finding.StackTrace?.Split('\n').FirstOrDefault()?.Trim() ?? "");
                if (seen.Add(signature))
                {
                    findings++;
                    string name = Convert.ToHexStringLower(SHA256.HashData(input))[..16];
                    File.WriteAllBytes(Path.Combine(findingsDir, $"finding-{name}.onnx"), input);
                    File.WriteAllText(Path.Combine(findingsDir, $"finding-{name}.txt"), finding.ToString());
                    Console.WriteLine($"FINDING {signature}: findings/finding-{name}.onnx");
                }
            }
            bool interesting = false;
            for (int i = 0; i < MapSize; i++)
            {
                byte hits = map[i];
                if (hits == 0)
                    continue;
                byte bucket = Bucket(hits);
                if ((virgin[i] & bucket) == 0)
                {
                    virgin[i] |= bucket;
                    interesting = true;
                }
            }
            return interesting;
        }

        void Keep(byte[] input, bool save)
        {
            corpus.Add(input);
            if (save)
                File.WriteAllBytes(Path.Combine(corpusDir, Convert.ToHexStringLower(SHA256.HashData(input))[..16] + ".onnx"), input);
        }

        foreach (byte[] seed in Seeds(corpusDir))
        {
            bool fresh = Execute(seed);
            Keep(seed, save: fresh);
        }
        bool instrumented = virgin.Any(b => b != 0);
        Console.WriteLine(instrumented
            ? $"{corpus.Count} seeds, {virgin.Count(b => b != 0)} edges covered"
            : "warning: no coverage (assemblies not instrumented: run build/fuzz-managed.sh); mutating blindly");

        long lastReport = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(started) < duration)
        {
            byte[] input = Mutate(corpus[random.Next(corpus.Count)], corpus, random);
            if (Execute(input))
                Keep(input, save: true);
            if (Stopwatch.GetElapsedTime(lastReport) > TimeSpan.FromSeconds(30))
            {
                lastReport = Stopwatch.GetTimestamp();
                Report();
            }
        }
        Report();
        return findings == 0 ? 0 : 1;

        void Report() => Console.WriteLine($"{Stopwatch.GetElapsedTime(started).TotalSeconds:F0} s: {executions} executions " +
            $"({executions / Stopwatch.GetElapsedTime(started).TotalSeconds:F0}/s), corpus {corpus.Count}, edges {virgin.Count(b => b != 0)}, findings {findings}");
    }

    /// <summary>AFL's hit-count classes: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+.</summary>
    private static byte Bucket(byte hits) => hits switch
    {
        1 => 1, 2 => 2, 3 => 4, <= 7 => 8, <= 15 => 16, <= 31 => 32, <= 127 => 64, _ => 128,
    };

    /// <summary>The saved corpus, else small valid models of several shapes (and a few broken ones).</summary>
    private static IEnumerable<byte[]> Seeds(string corpusDir)
    {
        var files = Directory.GetFiles(corpusDir).Where(f => new FileInfo(f).Length <= MaxInput).ToList();
        foreach (string f in files)
            yield return File.ReadAllBytes(f);
        if (files.Count > 0)
            yield break;
        foreach (string op in new[] { "Identity", "Relu", "Flatten", "Add" })
            yield return SyntheticGraphs.Chain(3, op);
        yield return SyntheticGraphs.FoldableChain(3);
        byte[] chain = SyntheticGraphs.Chain(2, "Relu");
        yield return chain[..(chain.Length / 2)];
        yield return [0x08, 0x08];
    }

    private static readonly long[] Interesting = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, int.MaxValue, int.MinValue, long.MaxValue, long.MinValue];

    private static byte[] Mutate(byte[] parent, List<byte[]> corpus, Random random)
    {
        var data = new List<byte>(parent);
        int rounds = 1 << random.Next(4);
        for (int r = 0; r < rounds; r++)
        {
            if (data.Count == 0)
            {
                data.Add((byte)random.Next(256));
                continue;
            }
            int at = random.Next(data.Count);
            switch (random.Next(8))
            {
                case 0:
                    data[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1:
                    data[at] = (byte)random.Next(256);
                    break;
                case 2:
                {
                    // An interesting value as a little-endian integer or a protobuf varint.
                    long v = Interesting[random.Next(Interesting.Length)];
                    byte[] bytes = random.Next(2) == 0 ? BitConverter.GetBytes(v)[..(1 << random.Next(4))] : Varint((ulong)v);
                    for (int i = 0; i < bytes.Length && at + i < data.Count; i++)
                        data[at + i] = bytes[i];
                    break;
                }
                case 3:
                    data.RemoveRange(at, Math.Min(data.Count - at, 1 + random.Next(32)));
                    break;
                case 4:
                {
                    var chunk = new byte[1 + random.Next(16)];
                    random.NextBytes(chunk);
                    data.InsertRange(at, chunk);
                    break;
                }
                case 5:
                {
                    // Duplicate a chunk: repeated protobuf fields.
                    int length = Math.Min(data.Count - at, 1 + random.Next(64));
                    data.InsertRange(random.Next(data.Count), data.GetRange(at, length));
                    break;
                }
                case 6:
                {
                    byte[] other = corpus[random.Next(corpus.Count)];
                    if (other.Length == 0)
                        break;
                    int from = random.Next(other.Length);
                    data.InsertRange(at, other.AsSpan(from, Math.Min(other.Length - from, 1 + random.Next(128))).ToArray());
                    break;
                }
                default:
                    data.RemoveRange(at, data.Count - at);
                    break;
            }
        }
        return data.Count > MaxInput ? [.. data.GetRange(0, MaxInput)] : [.. data];
    }

    private static byte[] Varint(ulong v)
    {
        var bytes = new List<byte>();
        do
        {
            byte b = (byte)(v & 0x7F);
            v >>= 7;
            bytes.Add(v != 0 ? (byte)(b | 0x80) : b);
        }
        while (v != 0);
        return [.. bytes];
    }
}

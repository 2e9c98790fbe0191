using System.Collections;
using System.Text.Json;

namespace Microsoft.ML.Quantization.Calibration;

/// <summary>
/// Calibration results keyed by tensor name, in insertion order. Saved as the JSON file documented in
/// docs/calibration-table.md; floats are written shortest-round-trip, so a loaded table equals the saved one exactly.
/// </summary>
public sealed class CalibrationTable : IReadOnlyCollection<CalibrationTableEntry>
{
    /// <summary>The <c>formatVersion</c> this library writes and reads.</summary>
    public const int FormatVersion = 1;

    private readonly List<CalibrationTableEntry> _entries = [];
    private readonly Dictionary<string, int> _index = new(StringComparer.Ordinal);

    /// <summary>Creates an empty table.</summary>
    public CalibrationTable()
    {
    }

    /// <summary>Creates a table from entries with distinct tensor names.</summary>
    public CalibrationTable(IEnumerable<CalibrationTableEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        foreach (var e in entries)
            Add(e);
    }

    /// <summary>Number of tensors.</summary>
    public int Count => _entries.Count;

    /// <summary>The entries in insertion order.</summary>
    public IReadOnlyList<CalibrationTableEntry> Entries => _entries;

    /// <summary>The entry of <paramref name="tensorName"/>; throws <see cref="KeyNotFoundException"/> when absent.</summary>
    public CalibrationTableEntry this[string tensorName]
        => TryGetEntry(tensorName, out var e) ? e : throw new KeyNotFoundException($"The calibration table has no tensor '{tensorName}'.");

    /// <summary>Looks up a tensor by name.</summary>
    public bool TryGetEntry(string tensorName, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out CalibrationTableEntry? entry)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        entry = _index.TryGetValue(tensorName, out int i) ? _entries[i] : null;
        return entry is not null;
    }

    /// <summary>Adds an entry; throws when its tensor name is already present.</summary>
    public void Add(CalibrationTableEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (!_index.TryAdd(entry.TensorName, _entries.Count))
            throw new ArgumentException($"The calibration table already has tensor '{entry.TensorName}'.", nameof(entry));
        _entries.Add(entry);
    }

    /// <summary>Adds an entry or replaces the one with the same tensor name (keeping its position).</summary>
    public void Set(CalibrationTableEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (_index.TryGetValue(entry.TensorName, out int i))
            _entries[i] = entry;
        else
            Add(entry);
    }

    /// <inheritdoc/>
    public IEnumerator<CalibrationTableEntry> GetEnumerator() => _entries.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>
    /// Writes the table as JSON atomically: to a temporary file beside <paramref name="path"/>, flushed to disk,
    /// then moved over it, so readers never see a partial file.
    /// </summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                WriteJson(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e) when (Internal.RegularFile.IsWriteFailure(e))
        {
            throw Internal.RegularFile.WriteFailure($"calibration table '{path}'", e);
        }
        finally
        {
            // Gone after the move; left by a failure, whatever it was.
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Reads a table saved by <see cref="Save"/>; errors (<see cref="InvalidDataException"/>) name the file and the problem.</summary>
    public static CalibrationTable Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        // A FIFO or device is refused without being opened (opening a FIFO blocks).
        byte[] bytes = Internal.RegularFile.TryReadAllBytes(Path.GetFullPath(path), requireSingleLink: false, out string problem)
            ?? throw (problem == "does not exist"
                ? new FileNotFoundException($"Calibration table '{path}' does not exist.", path)
                : new InvalidDataException($"Calibration table '{path}' {problem}."));
        return CalibrationTableJson.Read(bytes, $"Calibration table '{path}'");
    }

    /// <summary>The table as JSON text (the file format of <see cref="Save"/>).</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        WriteJson(stream);
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Parses JSON text in the file format of <see cref="Save"/>.</summary>
    public static CalibrationTable FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        return CalibrationTableJson.Read(System.Text.Encoding.UTF8.GetBytes(json), "Calibration table JSON");
    }

    private void WriteJson(Stream stream)
    {
        using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        CalibrationTableJson.Write(writer, this);
    }
}

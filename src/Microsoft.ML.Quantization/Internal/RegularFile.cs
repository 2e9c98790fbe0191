using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Microsoft.ML.Quantization.Internal;

/// <summary>
/// Opens files named by untrusted input (models, their external data, model zips) only when they are regular files.
/// A FIFO, device or socket is refused from its status, before anything opens it (opening a FIFO for reading blocks
/// until a writer comes). External data may also be required to have a single hard link, as onnx 1.21+ requires: a
/// second link inside the model folder can name any file on the same file system. On Linux the file is then opened
/// non-blocking and the opened descriptor is checked again, so a file swapped between the check and the open is
/// refused too. Elsewhere the checks are the managed ones .NET offers (no link count).
/// </summary>
internal static partial class RegularFile
{
    /// <summary>Opens <paramref name="path"/> for reading, or returns null and why not (a sentence fragment: "is a FIFO").</summary>
    internal static FileStream? TryOpenRead(string path, bool requireSingleLink, out string problem)
    {
        if (!OperatingSystem.IsLinux())
            return TryOpenManaged(path, out problem);
        if (LinuxStatus(path, out Status before) is string statProblem)
        {
            problem = statProblem;
            return null;
        }
        if (Refusal(before, requireSingleLink) is string refused)
        {
            problem = refused;
            return null;
        }
        int fd = Open(path, OpenReadOnly | OpenNonBlocking | OpenCloseOnExec);
        if (fd < 0)
        {
            problem = "could not be opened: " + Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());
            return null;
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (DescriptorStatus(fd, out Status opened) is string fstatProblem || Refusal(opened, requireSingleLink) is not null
            || opened.Device != before.Device || opened.Inode != before.Inode)
        {
            handle.Dispose();
            problem = "changed while it was being opened";
            return null;
        }
        problem = "";
        return new FileStream(handle, FileAccess.Read, bufferSize: 0);
    }

    /// <summary>
    /// Whether <paramref name="e"/> is the file system refusing a write: I/O errors (a full disk), permissions (a
    /// read-only folder), and a file grown past the file system's or the process's size limit (EFBIG, which .NET reports
    /// as ArgumentOutOfRangeException on the written length).
    /// </summary>
    internal static bool IsWriteFailure(Exception e)
        => e is IOException or UnauthorizedAccessException || e is ArgumentOutOfRangeException { ParamName: "value" or "length" };

    /// <summary>The exception a failed write of <paramref name="what"/> becomes: same kind, naming it.</summary>
    internal static Exception WriteFailure(string what, Exception e)
    {
        string message = $"Could not write {what}: {e.Message}";
        return e is UnauthorizedAccessException ? new UnauthorizedAccessException(message, e) : new IOException(message, e);
    }

    /// <summary>Reads a whole file (at most 2 GB) after the checks of <see cref="TryOpenRead"/>; null and why not on refusal.</summary>
    internal static byte[]? TryReadAllBytes(string path, bool requireSingleLink, out string problem)
    {
        using FileStream? stream = TryOpenRead(path, requireSingleLink, out problem);
        if (stream is null)
            return null;
        if (stream.Length > Array.MaxLength)
        {
            problem = $"is {stream.Length} bytes, more than one array holds";
            return null;
        }
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    private static FileStream? TryOpenManaged(string path, out string problem)
    {
        var info = new FileInfo(path);
        problem = !info.Exists ? (Directory.Exists(path) ? "is a directory, not a file" : "does not exist")
            : (info.Attributes & FileAttributes.Device) != 0 ? "is a device, not a regular file"
            : "";
        return problem.Length > 0 ? null : new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
    }

    private static string? Refusal(Status s, bool requireSingleLink) => (s.Mode & FileTypeMask) switch
    {
        RegularType when requireSingleLink && s.Links > 1
            => $"has {s.Links} hard links (a second link may name a file outside the model folder; external data must have exactly one)",
        RegularType => null,
        DirectoryType => "is a directory, not a file",
        FifoType => "is a FIFO (named pipe), not a regular file",
        CharacterDeviceType or BlockDeviceType => "is a device, not a regular file",
        SocketType => "is a socket, not a regular file",
        _ => "is not a regular file",
    };

    private readonly record struct Status(uint Mode, uint Links, ulong Inode, ulong Device);

    // Linux statx(2): its struct has the same layout on every architecture, unlike struct stat.
    private const int CurrentDirectory = -100;    // AT_FDCWD
    private const int EmptyPath = 0x1000;         // AT_EMPTY_PATH
    private const uint BasicStats = 0x7ff;        // STATX_BASIC_STATS
    private const int OpenReadOnly = 0;           // O_RDONLY
    private const int OpenNonBlocking = 0x800;    // O_NONBLOCK (asm-generic: x86, x86-64, ARM, ARM64)
    private const int OpenCloseOnExec = 0x80000;  // O_CLOEXEC
    private const uint FileTypeMask = 0xF000, RegularType = 0x8000, DirectoryType = 0x4000, FifoType = 0x1000,
        CharacterDeviceType = 0x2000, BlockDeviceType = 0x6000, SocketType = 0xC000;

    private static string? LinuxStatus(string path, out Status status) => StatX(CurrentDirectory, path, 0, out status);

    private static string? DescriptorStatus(int fd, out Status status) => StatX(fd, "", EmptyPath, out status);

    private static unsafe string? StatX(int directory, string path, int flags, out Status status)
    {
        byte* buffer = stackalloc byte[256];
        if (StatX(directory, path, flags, BasicStats, buffer) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            status = default;
            return errno == 2 ? "does not exist" : "could not be examined: " + Marshal.GetPInvokeErrorMessage(errno);
        }
        // struct statx: stx_nlink at 16, stx_mode (u16) at 28, stx_ino at 32, stx_dev_major/minor at 136/140.
        status = new Status(*(ushort*)(buffer + 28), *(uint*)(buffer + 16), *(ulong*)(buffer + 32),
            ((ulong)*(uint*)(buffer + 136) << 32) | *(uint*)(buffer + 140));
        return null;
    }

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int StatX(int directory, string path, int flags, uint mask, byte* buffer);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);
}

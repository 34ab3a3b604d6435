using System.Runtime.InteropServices;

namespace Allocators.Native;

public static unsafe partial class Libc
{
    /// <summary><c>memfd_create(2)</c>: creates an anonymous memory-backed file. Returns the fd, or -1 with errno set.</summary>
    /// <param name="name">Debug name shown in <c>/proc/self/fd</c> (prefixed with <c>memfd:</c>).</param>
    /// <param name="flags">A combination of the <c>Mfd*</c> constants.</param>
    /// <returns>A file descriptor, or -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MemfdCreate(string name, uint flags);

    /// <summary><c>ftruncate(2)</c>: sets the size of the file. Returns 0, or -1 with errno set.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="length">New size in bytes.</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int Ftruncate(int fd, long length);

    /// <summary><c>fallocate(2)</c>: allocates or deallocates file space. Returns 0, or -1 with errno set.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="mode">0 or a combination of the <c>FallocFl*</c> constants.</param>
    /// <param name="offset">Start of the range in bytes.</param>
    /// <param name="length">Length of the range in bytes.</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "fallocate", SetLastError = true)]
    public static partial int Fallocate(int fd, int mode, long offset, long length);

    /// <summary>
    /// <c>fstat(2)</c> into <paramref name="stat"/>, a <c>struct stat</c> of at least 144 bytes (x86-64 layout:
    /// <c>st_dev</c> at 0, <c>st_ino</c> at 8). Returns 0, or -1 with errno set.
    /// </summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="stat">The buffer.</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "fstat", SetLastError = true)]
    public static partial int Fstat(int fd, byte* stat);

    /// <summary>One segment of a vectored I/O call (<c>struct iovec</c>).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        /// <summary>Start of the segment.</summary>
        public void* Base;

        /// <summary>Bytes in the segment.</summary>
        public nuint Length;
    }

    /// <summary><c>preadv(2)</c>: reads into <paramref name="count"/> segments from <paramref name="offset"/>. Returns the bytes read, or -1 with errno set.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="iov">The segments.</param>
    /// <param name="count">Number of segments (at most IOV_MAX, 1024).</param>
    /// <param name="offset">File offset.</param>
    /// <returns>Bytes read (fewer at end of file), or -1.</returns>
    [LibraryImport(LibraryName, EntryPoint = "preadv", SetLastError = true)]
    public static partial nint Preadv(int fd, IoVec* iov, int count, long offset);

    /// <summary><c>pwritev(2)</c>: writes <paramref name="count"/> segments at <paramref name="offset"/>. Returns the bytes written, or -1 with errno set.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="iov">The segments.</param>
    /// <param name="count">Number of segments (at most IOV_MAX, 1024).</param>
    /// <param name="offset">File offset.</param>
    /// <returns>Bytes written (possibly fewer than asked), or -1.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pwritev", SetLastError = true)]
    public static partial nint Pwritev(int fd, IoVec* iov, int count, long offset);

    /// <summary><c>SEEK_DATA</c> for <see cref="Lseek"/>: the next offset at or after the given one that holds data.</summary>
    public const int SeekData = 3;

    /// <summary><c>SEEK_HOLE</c> for <see cref="Lseek"/>: the next offset at or after the given one inside a hole (end of file counts as one).</summary>
    public const int SeekHole = 4;

    /// <summary><c>lseek(2)</c>: moves the file offset, or with <see cref="SeekData"/>/<see cref="SeekHole"/> finds data and holes. Returns the new offset, or -1 with errno set.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="offset">Offset in bytes.</param>
    /// <param name="whence">SEEK_SET (0), SEEK_CUR (1), SEEK_END (2), <see cref="SeekData"/> or <see cref="SeekHole"/>.</param>
    /// <returns>The resulting offset, or -1 (ENXIO when no data or hole lies at or after <paramref name="offset"/>).</returns>
    [LibraryImport(LibraryName, EntryPoint = "lseek", SetLastError = true)]
    public static partial long Lseek(int fd, long offset, int whence);

    /// <summary><c>close(2)</c>: closes a file descriptor. Returns 0, or -1 with errno set.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);
}

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

    /// <summary><c>close(2)</c>: closes a file descriptor. Returns 0, or -1 with errno set.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);
}

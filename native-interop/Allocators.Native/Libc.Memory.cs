using System.Runtime.InteropServices;

namespace Allocators.Native;

public static unsafe partial class Libc
{
    /// <summary>
    /// <c>mmap(2)</c>: maps <paramref name="length"/> bytes. Returns <see cref="MapFailed"/> on failure,
    /// with errno in <see cref="Marshal.GetLastPInvokeError"/>.
    /// </summary>
    /// <param name="addr">Placement hint, or the exact address with <see cref="MapFixed"/>.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="prot">A combination of the <c>Prot*</c> constants.</param>
    /// <param name="flags">A combination of the <c>Map*</c> constants.</param>
    /// <param name="fd">File descriptor to map, or -1 for anonymous memory.</param>
    /// <param name="offset">Offset into the file; a multiple of the page size.</param>
    /// <returns>The mapped address or <see cref="MapFailed"/>.</returns>
    [LibraryImport(LibraryName, EntryPoint = "mmap", SetLastError = true)]
    public static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    /// <summary><c>munmap(2)</c>: removes mappings in the range. Returns 0, or -1 with errno set.</summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="length">Length in bytes (rounded up to whole pages by the kernel).</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(void* addr, nuint length);

    /// <summary><c>mprotect(2)</c>: changes the protection of the pages in the range. Returns 0, or -1 with errno set.</summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="prot">A combination of the <c>Prot*</c> constants.</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "mprotect", SetLastError = true)]
    public static partial int Mprotect(void* addr, nuint length, int prot);

    /// <summary><c>madvise(2)</c>: gives the kernel advice about the range. Returns 0, or -1 with errno set.</summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="advice">One of the <c>Madv*</c> constants.</param>
    /// <returns>0 on success, -1 on failure.</returns>
    [LibraryImport(LibraryName, EntryPoint = "madvise", SetLastError = true)]
    public static partial int Madvise(void* addr, nuint length, int advice);
}

using System.Runtime.InteropServices;

namespace Allocators.Native;

public static unsafe partial class Libc
{
    /// <summary><c>malloc(3)</c> from the process C library. Returns null on failure.</summary>
    /// <param name="size">Size in bytes.</param>
    /// <returns>The block, or null.</returns>
    [LibraryImport(LibraryName, EntryPoint = "malloc")]
    public static partial void* Malloc(nuint size);

    /// <summary><c>free(3)</c> from the process C library; accepts null.</summary>
    /// <param name="p">A block from <see cref="Malloc"/>, or null.</param>
    [LibraryImport(LibraryName, EntryPoint = "free")]
    public static partial void Free(void* p);
}

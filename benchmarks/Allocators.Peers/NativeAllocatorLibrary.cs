using Allocators.Native;

namespace Allocators.Peers;

/// <summary>
/// One native allocator loaded into the process for comparison (glibc, mimalloc, jemalloc or
/// tcmalloc). When the library could not be loaded, <see cref="IsAvailable"/> is false, every
/// function pointer is null and <see cref="Status"/> starts with <c>absent:</c> and says why.
/// </summary>
/// <remarks>
/// The function pointers suppress the GC transition, which keeps calls cheap for benchmarks but
/// lets a call that blocks (for example one that maps memory) delay a garbage collection.
/// Blocks must be freed by the library that allocated them.
/// </remarks>
public sealed unsafe class NativeAllocatorLibrary
{
    internal NativeAllocatorLibrary(string name, string status)
    {
        Name = name;
        Status = status;
    }

    internal NativeAllocatorLibrary(string name, string status, string libraryPath, in NativeAllocatorExports exports)
        : this(name, status)
    {
        LibraryPath = libraryPath;
        Malloc = exports.Malloc;
        Free = exports.Free;
        Calloc = exports.Calloc;
        Realloc = exports.Realloc;
        AlignedAlloc = exports.AlignedAlloc;
    }

    /// <summary>The allocator's short name: <c>glibc</c>, <c>mimalloc</c>, <c>jemalloc</c> or <c>tcmalloc</c>.</summary>
    public string Name { get; }

    /// <summary>True when the library loaded and all five entry points were found.</summary>
    public bool IsAvailable => Malloc != null;

    /// <summary>The file the library was loaded from, or null when it is absent.</summary>
    public string? LibraryPath { get; }

    /// <summary>
    /// A one-line description: <c>loaded NAME</c> when available, otherwise <c>absent: REASON</c>
    /// (for example the package to install or the environment variable that is needed).
    /// </summary>
    public string Status { get; }

    /// <summary><c>malloc(size)</c>; null when absent.</summary>
    public delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*> Malloc { get; }

    /// <summary><c>free(p)</c>; null when absent.</summary>
    public delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void> Free { get; }

    /// <summary><c>calloc(count, size)</c>; null when absent.</summary>
    public delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*> Calloc { get; }

    /// <summary><c>realloc(p, size)</c>; null when absent.</summary>
    public delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, nuint, void*> Realloc { get; }

    /// <summary><c>aligned_alloc(alignment, size)</c> (or the library's equivalent with the same argument order); null when absent.</summary>
    public delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*> AlignedAlloc { get; }

    /// <inheritdoc />
    public override string ToString() => $"{Name}: {Status}";
}

namespace Allocators.Buffers;

/// <summary>Configuration of a <see cref="NativeMemoryPool"/>.</summary>
public sealed class NativeMemoryPoolOptions
{
    /// <summary>Size handed out when a caller asks for "any size" (-1), like Kestrel's 4 KiB blocks. Default 4096.</summary>
    public int DefaultBufferSize { get; init; } = 4096;

    /// <summary>Largest buffer the pool hands out. Default 4 MiB (one max-order block).</summary>
    public int MaxBufferSize { get; init; } = 4 << 20;

    /// <summary>
    /// Detect returning a buffer twice and using it after return: owners are not recycled and every access checks
    /// that the buffer is still rented. Costs one managed object per rent. Default false.
    /// </summary>
    public bool DebugChecks { get; init; }

    /// <summary>
    /// Hand out every buffer as a real <c>byte[]</c> (<c>MemoryMarshal.TryGetArray</c> succeeds), for APIs that need
    /// arrays, such as Kestrel's socket transport, which sends multi-segment buffers through
    /// <c>SocketAsyncEventArgs.BufferList</c>. The arrays are allocated pinned on the pinned object heap, outside the
    /// native arena, and pooled by size (see <see cref="MaxPooledArrayBytes"/>), so renting in steady state allocates
    /// nothing. An array kept after its owner is returned stays the same array: it may see a later renter's bytes, but
    /// its length never changes and it reaches nothing outside itself.
    /// Default false; <c>AddAllocatorsMemoryPool</c> turns it on.
    /// </summary>
    public bool ExposeAsArrays { get; init; }

    /// <summary>
    /// With <see cref="ExposeAsArrays"/>, most bytes of returned arrays kept for reuse; arrays returned beyond it are
    /// left to the garbage collector. Default 64 MiB.
    /// </summary>
    public long MaxPooledArrayBytes { get; init; } = 64L << 20;

    /// <summary>Most owner objects kept for reuse. Default 1024.</summary>
    public int MaxPooledOwners { get; init; } = 1024;
}

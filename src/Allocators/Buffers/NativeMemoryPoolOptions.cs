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
    /// Make every buffer also visible as a <c>byte[]</c> (<c>MemoryMarshal.TryGetArray</c> succeeds), for APIs that
    /// need arrays, such as Kestrel's socket transport. The array header lives in 32 native bytes before the data.
    /// Default false; <c>AddAllocatorsMemoryPool</c> turns it on.
    /// </summary>
    public bool ExposeAsArrays { get; init; }

    /// <summary>Most owner objects kept for reuse. Default 1024.</summary>
    public int MaxPooledOwners { get; init; } = 1024;
}

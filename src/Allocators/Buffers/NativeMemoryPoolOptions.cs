namespace Allocators.Buffers;

/// <summary>Configuration of a <see cref="NativeMemoryPool"/>.</summary>
public sealed class NativeMemoryPoolOptions
{
    /// <summary>
    /// Name of the pool in metrics (<c>allocators.memory_pool.owner</c>), events and messages, such as the owner Kestrel
    /// gives its pools. A name a live pool already has gets a suffix (<c>-2</c>, <c>-3</c>, ...). Default "memory-pool".
    /// </summary>
    public string? Name { get; init; }

    /// <summary>Size handed out when a caller asks for "any size" (-1), like Kestrel's 4 KiB blocks. Default 4096.</summary>
    public int DefaultBufferSize { get; init; } = 4096;

    /// <summary>Largest buffer the pool hands out. Default 4 MiB (one max-order block).</summary>
    public int MaxBufferSize { get; init; } = 4 << 20;

    /// <summary>
    /// Detect returning a buffer twice and using it after return: every rent gets a fresh owner object, and every
    /// access checks that the buffer is still rented. Costs one managed object per rent. Default false.
    /// </summary>
    public bool DebugChecks { get; init; }

    /// <summary>
    /// Hand out every buffer as a real <c>byte[]</c> (<c>MemoryMarshal.TryGetArray</c> succeeds), for APIs that need
    /// arrays, such as Kestrel's socket transport, which sends multi-segment buffers through
    /// <c>SocketAsyncEventArgs.BufferList</c>. The arrays are allocated pinned on the pinned object heap, outside the
    /// native arena, and pooled like native buffers, so renting in steady state allocates nothing. Without
    /// <see cref="DebugChecks"/> an owner's <c>Memory</c> is over the array itself (as Kestrel's own pool does it): an
    /// array kept after its owner is returned may see a later renter's bytes, but its length never changes and it
    /// reaches nothing outside itself.
    /// Default false; <c>AddAllocatorsMemoryPool</c> turns it on.
    /// </summary>
    public bool ExposeAsArrays { get; init; }

    /// <summary>
    /// Most bytes of returned buffers kept in the pool's shared stacks; a buffer returned beyond it is evicted (freed,
    /// or left to the garbage collector). Threads' caches hold at most <see cref="ThreadCacheBytes"/> per size class
    /// each on top. Default 64 MiB.
    /// </summary>
    public long MaxPooledBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Most bytes of one size class a thread keeps to itself (at most 64 buffers; none for buffers larger than this).
    /// Rent and return go through the thread's cache without a lock or an atomic instruction on the pool; only an
    /// empty or full cache moves a batch to or from the shared stacks. 0 turns the caches off. Default 256 KiB.
    /// </summary>
    public int ThreadCacheBytes { get; init; } = 256 << 10;

    /// <summary>
    /// How often the pool gives back what was not used: each period, threads that did not use the pool hand their
    /// caches back, and half of the buffers that stayed in the shared stacks through the whole period are evicted
    /// (the kernel's cache_reap). A burst's buffers are gone a few periods after it ends; a steady load keeps what
    /// it uses. null turns it off. Default 5 s.
    /// </summary>
    public TimeSpan? TrimInterval { get; init; } = TimeSpan.FromSeconds(5);
}

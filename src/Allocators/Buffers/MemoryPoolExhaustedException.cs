namespace Allocators.Buffers;

/// <summary>
/// A <see cref="NativeMemoryPool"/> found no memory for a buffer: the arena (or, for arrays, the garbage-collected
/// heap) is out of room even after the pool gave back what it held. The pool's
/// <see cref="NativeMemoryPool.RentFailed"/> event and the <c>allocators.memory_pool.rent_failures</c> counter have
/// recorded it.
/// </summary>
public sealed class MemoryPoolExhaustedException : OutOfMemoryException
{
    /// <summary>Creates the exception for <paramref name="failure"/>.</summary>
    public MemoryPoolExhaustedException(MemoryPoolRentFailure failure)
        : base((failure ?? throw new ArgumentNullException(nameof(failure))).Message) => Failure = failure;

    /// <summary>What failed.</summary>
    public MemoryPoolRentFailure Failure { get; }
}

/// <summary>A rent that found no memory (<see cref="NativeMemoryPool.RentFailed"/>).</summary>
/// <param name="Pool">The pool's <see cref="NativeMemoryPool.Name"/>.</param>
/// <param name="RequestedSize">The size asked for (-1: the default size).</param>
/// <param name="BufferSize">The size of the buffer that could not be allocated.</param>
/// <param name="RentedBytes">Bytes rented out of the pool at the time.</param>
/// <param name="Message">What happened and what to do about it, in one sentence.</param>
public sealed record MemoryPoolRentFailure(string Pool, int RequestedSize, int BufferSize, long RentedBytes, string Message)
{
    /// <inheritdoc/>
    public override string ToString() => Message;
}

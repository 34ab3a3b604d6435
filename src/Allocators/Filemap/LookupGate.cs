using System.Numerics;
using System.Runtime.InteropServices;
using Allocators.Threading;

namespace Allocators.Filemap;

/// <summary>
/// What the kernel's RCU read side gives a page-cache lookup: a lockless reader enters the gate, walks the tree and
/// takes a page reference (or copies the page) and leaves; a remover deletes a page from the tree, then
/// <see cref="Synchronize"/>s, and only then drops the cache's reference or frees tree nodes. Counts live in one
/// cache line per processor stripe and two epochs, so readers on different processors share no line and a
/// synchronizer waits only for readers that entered before it flipped the epoch (it cannot be starved).
/// </summary>
/// <remarks>
/// Dekker on both sides: the remover's store to the slot and its read of the counts are separated by the epoch flip's
/// full fence, the reader's count increment and its tree walk by the increment's, so either the remover sees the
/// reader and waits, or the reader sees the empty slot.
/// </remarks>
internal sealed unsafe class LookupGate : IDisposable
{
    private const int LineLongs = CacheLines.Size / sizeof(long);
    private readonly int _stripes;
    private readonly long* _counts; // [epoch][stripe], one cache line each
    private readonly Lock _syncLock = new();
    private int _epoch;

    public LookupGate()
    {
        _stripes = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(Environment.ProcessorCount, 1));
        nuint bytes = (nuint)(2 * _stripes * CacheLines.Size);
        _counts = (long*)NativeMemory.AlignedAlloc(bytes, CacheLines.Size);
        NativeMemory.Clear(_counts, bytes);
    }

    /// <summary>Enters a read-side section; pass the result to <see cref="Exit"/>.</summary>
    public int Enter()
    {
        int slot = ((Volatile.Read(ref _epoch) & 1) * _stripes + (Thread.GetCurrentProcessorId() & (_stripes - 1))) * LineLongs;
        Interlocked.Increment(ref _counts[slot]);
        return slot;
    }

    /// <summary>Leaves the section <paramref name="token"/> came from.</summary>
    public void Exit(int token) => Interlocked.Decrement(ref _counts[token]);

    /// <summary>Returns once every reader that entered before the call has left (synchronize_rcu for this gate).</summary>
    public void Synchronize()
    {
        lock (_syncLock)
        {
            int old = (Interlocked.Increment(ref _epoch) - 1) & 1;
            var spin = new SpinWait();
            while (Sum(old) != 0) spin.SpinOnce(sleep1Threshold: 20);
        }
    }

    private long Sum(int epoch)
    {
        long sum = 0;
        for (int i = 0; i < _stripes; i++) sum += Volatile.Read(ref _counts[(epoch * _stripes + i) * LineLongs]);
        return sum;
    }

    /// <inheritdoc/>
    public void Dispose() => NativeMemory.AlignedFree(_counts);
}

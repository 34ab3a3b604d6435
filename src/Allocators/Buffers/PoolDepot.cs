using System.Runtime.InteropServices;
using Allocators.Threading;

namespace Allocators.Buffers;

/// <summary>
/// The buffers of one size class that no thread caches: a stack of owner ids in native memory under a spin lock,
/// taken only on slow paths (a thread's magazine empty or full, a drain, a reap). Besides the count it keeps the
/// least count since the last reap: that many buffers sat here unused through the whole period. A closed depot
/// (capacity -1, its pool disposed) takes nothing.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal unsafe struct PoolDepot
{
    public int Lock;
    public int Count;
    public int Capacity;
    public int LowWater;
    public int* Items;

    /// <summary>Length of the class's buffers.</summary>
    public int Length;

    /// <summary>Slots of each thread's magazine for this class.</summary>
    public int ThreadCapacity;

    /// <summary>Moves the first <paramref name="count"/> of <paramref name="ids"/>, at most <paramref name="max"/>, in; returns how many.</summary>
    public static int Push(PoolDepot* depot, int* ids, int count, int max)
    {
        int n = Math.Min(count, max);
        if (n <= 0) return 0;
        NativeSpinLock.Acquire(&depot->Lock);
        if (depot->Capacity < 0)
        {
            NativeSpinLock.Release(&depot->Lock);
            return 0; // closed: the pool is disposed
        }
        if (depot->Count + n > depot->Capacity) Grow(depot, depot->Count + n);
        for (int i = 0; i < n; i++) depot->Items[depot->Count++] = ids[i];
        NativeSpinLock.Release(&depot->Lock);
        return n;
    }

    /// <summary>Takes up to <paramref name="max"/> ids, the most recently pushed first; returns how many.</summary>
    public static int Pop(PoolDepot* depot, int* ids, int max)
    {
        NativeSpinLock.Acquire(&depot->Lock);
        int n = Math.Min(max, depot->Count);
        for (int i = 0; i < n; i++) ids[i] = depot->Items[--depot->Count];
        if (depot->Count < depot->LowWater) depot->LowWater = depot->Count;
        NativeSpinLock.Release(&depot->Lock);
        return n;
    }

    /// <summary>
    /// Takes half (rounded up), at most <paramref name="max"/>, of the ids that stayed unused since the last call (from
    /// the bottom of the stack, the longest idle) and starts a new period: the kernel's cache_reap, which frees a part
    /// of what sat idle so that a steady load keeps its working set and a finished burst drains away geometrically.
    /// </summary>
    public static int TakeIdle(PoolDepot* depot, int* ids, int max)
    {
        NativeSpinLock.Acquire(&depot->Lock);
        int n = Math.Min(max, Math.Min((depot->LowWater + 1) / 2, depot->Count));
        for (int i = 0; i < n; i++) ids[i] = depot->Items[i];
        depot->Count -= n;
        new Span<int>(depot->Items + n, depot->Count).CopyTo(new Span<int>(depot->Items, depot->Count));
        depot->LowWater = depot->Count;
        NativeSpinLock.Release(&depot->Lock);
        return n;
    }

    private static void Grow(PoolDepot* depot, int needed)
    {
        int capacity = Math.Max(needed, Math.Max(16, depot->Capacity * 2));
        depot->Items = (int*)NativeMemory.Realloc(depot->Items, (nuint)capacity * sizeof(int));
        depot->Capacity = capacity;
    }

    /// <summary>Refuses every later push (the pool is being disposed); pops still take what is there.</summary>
    public static void Close(PoolDepot* depot)
    {
        NativeSpinLock.Acquire(&depot->Lock);
        depot->Capacity = -1;
        NativeSpinLock.Release(&depot->Lock);
    }

    /// <summary>Frees the memory of a closed depot that was emptied after it was closed.</summary>
    public static void Free(PoolDepot* depot)
    {
        NativeSpinLock.Acquire(&depot->Lock);
        NativeMemory.Free(depot->Items);
        depot->Items = null;
        depot->Count = depot->LowWater = 0;
        NativeSpinLock.Release(&depot->Lock);
    }
}

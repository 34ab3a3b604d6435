using System.Diagnostics;
using Allocators.Threading;

namespace Allocators.Swap;

public sealed unsafe partial class SwapDevice
{
    /// <summary>
    /// A free slot, marked SwapHasCache with no PTE yet (folio_alloc_swap / get_swap_pages for one page); none when the
    /// device is full or not writable. Looks in the calling processor's cluster first, then takes a free cluster, then a
    /// nonfull one, then allocates from other processors' clusters.
    /// </summary>
    internal SwapEntry GetSwapPage()
    {
        if (!_writeOk || Volatile.Read(ref _usedPages) >= Pages) return default;
        int home = (int)((uint)Thread.GetCurrentProcessorId() % (uint)_percpuCount);
        uint offset = AllocFromPercpu(home, takeNew: true);
        if (offset == 0)
        {
            // The lists are empty: the free slots are in other processors' clusters, or behind this one's cursor (a
            // released cluster then sits on the nonfull list, where the second try finds it).
            offset = Steal(home);
            if (offset == 0) offset = AllocFromPercpu(home, takeNew: true);
        }
        return offset == 0 ? default : new SwapEntry(Type, offset);
    }

    /// <summary>A slot from processor <paramref name="cpu"/>'s cluster, taking a new cluster when it runs out if <paramref name="takeNew"/>; 0 if none.</summary>
    private uint AllocFromPercpu(int cpu, bool takeNew)
    {
        SwapPercpuCluster* pc = Percpu(cpu);
        NativeSpinLock.Acquire(&pc->Lock);
        try
        {
            // A listed cluster always has a free slot, so one exhausted cluster plus one new one suffice.
            for (int attempt = 0; attempt < 2; attempt++)
            {
                if (pc->Cluster < 0 && (!takeNew || !TakeCluster(pc))) return 0;
                uint offset = AllocInCluster(pc);
                if (offset != 0) return offset;
            }
            return 0;
        }
        finally
        {
            NativeSpinLock.Release(&pc->Lock);
        }
    }

    private uint Steal(int home)
    {
        for (int k = 1; k < _percpuCount; k++)
        {
            int cpu = (home + k) % _percpuCount;
            if (Volatile.Read(ref Percpu(cpu)->Cluster) < 0) continue;
            uint offset = AllocFromPercpu(cpu, takeNew: false);
            if (offset != 0) return offset;
        }
        return 0;
    }

    /// <summary>
    /// The first free slot at or after the processor's cursor in its cluster, marked SwapHasCache; 0 if none. Gives the
    /// cluster up when it is full or the cursor reached its end. Percpu lock held.
    /// </summary>
    private uint AllocInCluster(SwapPercpuCluster* pc)
    {
        int c = pc->Cluster;
        SwapClusterInfo* ci = &_clusters[c];
        uint end = (uint)(c + 1) << ClusterShift;
        uint from = pc->Next;
        NativeSpinLock.Acquire(&ci->Lock);
        int index = new ReadOnlySpan<ushort>(_map + from, (int)(end - from)).IndexOf((ushort)0);
        uint found = 0;
        if (index >= 0)
        {
            found = from + (uint)index;
            Volatile.Write(ref _map[found], SwapHasCache);
            ci->Count++;
            AssertCount(c);
            Interlocked.Increment(ref _usedPages);
            pc->Next = found + 1;
        }
        if (index < 0 || ci->Count == ClusterSize || pc->Next == end)
        {
            NativeSpinLock.Acquire(&_lists->Lock);
            Debug.Assert(ci->Flags == ClusterFlags.None);
            ListAdd(c, ci->Count == 0 ? ClusterFlags.Free : ci->Count == ClusterSize ? ClusterFlags.Full : ClusterFlags.Nonfull);
            NativeSpinLock.Release(&_lists->Lock);
            pc->Cluster = -1;
        }
        NativeSpinLock.Release(&ci->Lock);
        return found;
    }

    /// <summary>Makes a free cluster, else a nonfull one, the processor's current cluster; false when both lists are empty. Percpu lock held.</summary>
    private bool TakeCluster(SwapPercpuCluster* pc)
    {
        NativeSpinLock.Acquire(&_lists->Lock);
        int c = _lists->FreeHead >= 0 ? _lists->FreeHead : _lists->NonfullHead;
        if (c >= 0) ListDel(c);
        NativeSpinLock.Release(&_lists->Lock);
        if (c < 0) return false;
        pc->Cluster = c;
        pc->Next = (uint)c << ClusterShift;
        return true;
    }

    /// <summary>
    /// Slot <paramref name="offset"/>'s map entry just became 0: one used slot fewer, and its cluster moves from full to
    /// nonfull, or to the free list when it is empty (a processor's current cluster stays where it is). Cluster lock held.
    /// </summary>
    private void SlotFreed(uint offset)
    {
        int c = (int)(offset >> ClusterShift);
        SwapClusterInfo* ci = &_clusters[c];
        int count = --ci->Count;
        AssertCount(c);
        Interlocked.Decrement(ref _usedPages);
        if (count != ClusterSize - 1 && count != 0) return; // the common case: no list changes
        NativeSpinLock.Acquire(&_lists->Lock);
        if (ci->Flags == ClusterFlags.Full || (ci->Flags == ClusterFlags.Nonfull && count == 0))
        {
            ListDel(c);
            ListAdd(c, count == 0 ? ClusterFlags.Free : ClusterFlags.Nonfull);
        }
        NativeSpinLock.Release(&_lists->Lock);
    }

    /// <summary>Sets the cluster's flags and puts it at the head of the free or nonfull list. List lock held, cluster on no list.</summary>
    private void ListAdd(int c, ClusterFlags flags)
    {
        SwapClusterInfo* ci = &_clusters[c];
        ci->Flags = flags;
        ci->Prev = ci->Next = -1;
        int* head = flags == ClusterFlags.Free ? &_lists->FreeHead : flags == ClusterFlags.Nonfull ? &_lists->NonfullHead : null;
        if (head == null) return;
        ci->Next = *head;
        if (*head >= 0) _clusters[*head].Prev = c;
        *head = c;
        if (flags == ClusterFlags.Free) _lists->FreeCount++;
        else _lists->NonfullCount++;
    }

    /// <summary>Takes the cluster off its list (if it is on one) and marks it isolated. List lock held.</summary>
    private void ListDel(int c)
    {
        SwapClusterInfo* ci = &_clusters[c];
        if (ci->Flags is ClusterFlags.Free or ClusterFlags.Nonfull)
        {
            if (ci->Prev >= 0) _clusters[ci->Prev].Next = ci->Next;
            else if (ci->Flags == ClusterFlags.Free) _lists->FreeHead = ci->Next;
            else _lists->NonfullHead = ci->Next;
            if (ci->Next >= 0) _clusters[ci->Next].Prev = ci->Prev;
            if (ci->Flags == ClusterFlags.Free) _lists->FreeCount--;
            else _lists->NonfullCount--;
        }
        ci->Flags = ClusterFlags.None;
        ci->Prev = ci->Next = -1;
    }
}

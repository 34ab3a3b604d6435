using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>
/// Workingset detection (mm/workingset.c): an evicted page leaves a shadow entry holding its node's nonresident age
/// at eviction; when the page faults back, the refault distance — evictions and activations since — says whether it
/// would have stayed resident had the inactive list been that much longer. If the distance fits in the workingset
/// (the active lists, and the inactive file list), the page returns straight to the active list, so a working set a
/// little larger than the inactive list is protected instead of thrashing through it.
/// </summary>
internal static unsafe class Workingset
{
    private const int NodeBits = 6;
    private const int EvictionShift = 1 + NodeBits;

    /// <summary>workingset_eviction: ages the node's clock and packs the page's node and the age into a shadow value.</summary>
    public static ulong Eviction(PageAllocator pages, PageFrame* page)
    {
        int node = pages.NodeOf(page);
        long age = pages.Lru.AgeNonresident(node);
        return ((ulong)age << EvictionShift) | ((ulong)node << 1) | 1;
    }

    /// <summary>
    /// workingset_refault: counts the refault and returns whether the page should be activated (its refault
    /// distance is within the workingset), counting that too.
    /// </summary>
    public static bool Refault(PageAllocator pages, ulong shadow, bool anon)
    {
        int node = (int)((shadow >> 1) & ((1UL << NodeBits) - 1));
        if (node >= pages.NodeCount) return false;
        long eviction = (long)(shadow >> EvictionShift);
        long distance = ((pages.Lru.NonresidentAge(node) << EvictionShift) - (eviction << EvictionShift)) >> EvictionShift;
        ReclaimCounters counters = pages.ReclaimCounters;
        Interlocked.Increment(ref anon ? ref counters.WorkingsetRefaultAnon : ref counters.WorkingsetRefaultFile);
        Lru lru = pages.Lru;
        long workingset = lru.Count(node, LruList.ActiveFile) + lru.Count(node, LruList.ActiveAnon);
        if (anon) workingset += lru.Count(node, LruList.InactiveFile);
        else workingset += lru.Count(node, LruList.InactiveAnon);
        if (distance < 0 || distance > workingset) return false;
        Interlocked.Increment(ref anon ? ref counters.WorkingsetActivateAnon : ref counters.WorkingsetActivateFile);
        lru.NoteRefaultActivation(node, anon);
        lru.AgeNonresident(node);
        return true;
    }
}

namespace Allocators.PageAlloc;

/// <summary>
/// An address space whose TLB shootdown reclaim may defer: the MMU's half of <see cref="TlbUnmapBatch"/>.
/// </summary>
internal interface ITlbFlushTarget
{
    /// <summary>
    /// Returns once no other thread is inside an access to this space that began before generation
    /// <paramref name="generation"/>; the caller has already run the process-wide barrier after that generation.
    /// </summary>
    void WaitForTlbGeneration(long generation);
}

/// <summary>
/// The reclaiming thread's deferred TLB shootdowns (the kernel's per-task <c>tlbflush_unmap_batch</c>): while a batch
/// is open, try_to_unmap clears each entry and bumps its address space's TLB generation (every thread drops that
/// space's translations at its next access) but does not wait for the accesses already under way; the batch waits
/// for all of them at once, with one process-wide barrier (<see cref="Flush"/>, try_to_unmap_flush).
/// </summary>
/// <remarks>
/// <para>Rules, as in mm/rmap.c and mm/vmscan.c: a page unmapped under a batch is not freed and not given back to
/// the LRU before <see cref="Flush"/> (a thread may still be inside an access through the old translation), and
/// before a page is written out, <see cref="FlushDirty"/> waits if any entry unmapped under the batch was dirty
/// (only a dirty entry gives a writable translation, so only then can the data change under the write). The
/// address spaces wait for a pending batch themselves before munmap, mprotect or mremap return
/// (flush_tlb_batched_pending).</para>
/// <para>One batch per thread, used only by that thread; <see cref="Begin"/> and <see cref="End"/> bracket one
/// shrink_folio_list.</para>
/// </remarks>
internal sealed class TlbUnmapBatch
{
    [ThreadStatic] private static TlbUnmapBatch? t_batch;

    private readonly List<(ITlbFlushTarget Target, long Generation)> _pending = new();
    private bool _open;
    private bool _writable;

    /// <summary>The calling thread's open batch, or null: unmaps then flush at once.</summary>
    public static TlbUnmapBatch? Current => t_batch is { _open: true } batch ? batch : null;

    /// <summary>Address spaces waiting for the shootdown (tests).</summary>
    internal int PendingCount => _pending.Count;

    /// <summary>Opens the calling thread's batch.</summary>
    public static TlbUnmapBatch Begin()
    {
        TlbUnmapBatch batch = t_batch ??= new TlbUnmapBatch();
        if (batch._open) throw new InvalidOperationException("tlbflush_unmap_batch: this thread already has a batch open.");
        batch._open = true;
        return batch;
    }

    /// <summary>Flushes what is pending and closes the batch.</summary>
    public void End()
    {
        try { Flush(); }
        finally { _open = false; }
    }

    /// <summary>
    /// set_tlb_ubc_flush_pending: an entry of <paramref name="target"/> was cleared and its generation bumped to
    /// <paramref name="generation"/>; <paramref name="dirty"/> when the entry was dirty (writable translations may exist).
    /// </summary>
    public void Add(ITlbFlushTarget target, long generation, bool dirty)
    {
        _writable |= dirty;
        for (int i = 0; i < _pending.Count; i++)
        {
            if (!ReferenceEquals(_pending[i].Target, target)) continue;
            if (_pending[i].Generation < generation) _pending[i] = (target, generation);
            return;
        }
        _pending.Add((target, generation));
    }

    /// <summary>try_to_unmap_flush: one process-wide barrier, then each address space's wait; nothing pending after.</summary>
    public void Flush()
    {
        if (_pending.Count == 0) return;
        // Every thread's store of Busy = 1 is now visible, or its next load of a generation sees the bumps.
        Interlocked.MemoryBarrierProcessWide();
        foreach (var (target, generation) in _pending) target.WaitForTlbGeneration(generation);
        _pending.Clear();
        _writable = false;
    }

    /// <summary>try_to_unmap_flush_dirty: <see cref="Flush"/> if a dirty entry was unmapped since the last one.</summary>
    public void FlushDirty()
    {
        if (_writable) Flush();
    }
}

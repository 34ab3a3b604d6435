using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Reclaim;
using Allocators.Swap;

namespace Allocators.Mmu;

/// <summary>
/// Anonymous memory's side of reclaim and swap for one kernel (mm/swap_state.c, the anon half of mm/vmscan.c's
/// shrink_folio_list, mm/swapfile.c's try_to_unuse, mm/shmem.c's swap side): the swap devices (<see cref="SwapTable"/>),
/// the swap cache, swap-out of cold anonymous pages through the anon_vma rmap and of shared anonymous (shmem) pages
/// through their object's mappers, swap-in for the fault handlers, the swap counts that fork and unmapping change,
/// and swapoff.
/// </summary>
/// <remarks>
/// <para>Locks: the page lock (PG_locked) serialises everything done to one page: reclaim holds it (trylock) while it
/// adds the page to the swap cache, unmaps it, writes it and removes it; swap-in holds it while it reads the page and
/// maps it. Under it: the address spaces' rmap locks (trylock), then the swap cache's lock or a device's.</para>
/// <para>Invariants, for every slot of every device, whenever no reclaim or fault is running:
/// <c>swap count = #swap PTEs holding the entry + #shmem slots holding it</c>, and <c>SWAP_HAS_CACHE ⇔ the swap cache holds a page for it</c>;
/// a cached page mapped by any PTE is mapped read-only (a write copies it or takes it out of the cache first), so
/// the slot's copy of a clean cached page is current.</para>
/// </remarks>
internal sealed unsafe partial class AnonSwap : ILruOwner, IDisposable
{
    private readonly KernelAddressSpace _kernel;
    private readonly PageAllocator _pages;
    private readonly ReclaimCounters _counters;
    private readonly Lock _swaponLock = new();

    /// <summary>Swap writes started by the calling thread (tests check which reclaim did I/O).</summary>
    [ThreadStatic] internal static long t_swapWrites;

    private readonly Func<ShrinkControl, long> _splitHugePages;

    public AnonSwap(KernelAddressSpace kernel, PageAllocator pages)
    {
        _kernel = kernel;
        _pages = pages;
        _counters = pages.ReclaimCounters;
        _splitHugePages = SplitHugePages;
        pages.RegisterShrinker(_splitHugePages); // idle until swap has room (CanReclaim)
    }

    /// <summary>
    /// The shrinker that makes huge pages reclaimable: a huge page stays off the LRU while it is mapped whole, so under
    /// pressure (and only when swap has room) a few are split into base pages, which join the inactive list for
    /// reclaim to swap out — the kernel splits a THP that cannot go to swap whole. One huge page per batch of
    /// <see cref="ShrinkControl.NrToScan"/> 512 pages, at least one; it frees nothing itself.
    /// </summary>
    private long SplitHugePages(ShrinkControl control)
    {
        if ((control.Gfp & Gfp.Io) == 0 || !CanReclaim) return 0;
        int budget = (int)Math.Max(1, control.NrToScan >> 9);
        foreach (AddressSpace mm in _kernel.Processes())
        {
            budget -= mm.TrySplitHugePages(budget);
            if (budget <= 0) break;
        }
        return 0;
    }

    /// <summary>The swap devices.</summary>
    public SwapTable Table { get; } = new();

    /// <summary>The swap cache.</summary>
    public SwapCache Cache { get; } = new();

    /// <summary>swapon(2): adds the swap file at <paramref name="path"/> and lets reclaim swap anonymous memory out.</summary>
    public SwapDevice Swapon(string path, int priority)
    {
        lock (_swaponLock)
        {
            SwapDevice device = Table.Swapon(path, priority);
            var vmscan = (Vmscan)_pages.GetOrCreateReclaimer(() => new Vmscan(_pages));
            vmscan.SetAnonOwner(this);
            return device;
        }
    }

    /// <summary>swapoff(2): brings every page on the device back into memory, then removes it.</summary>
    public void Swapoff(string path)
    {
        lock (_swaponLock) Table.Swapoff(path, Unuse);
    }

    /// <inheritdoc/>
    public bool CanReclaim => Table.FreePages > 0; // can_reclaim_anon_pages: swap has room

    /// <inheritdoc/>
    public int Referenced(PageFrame* page)
    {
        int young = 0;
        if (!page->Has(PageFlags.Anon))
        {
            if (_kernel.ShmemOf((int)page->Private) is { } shmem)
                foreach (var (mm, _) in shmem.Mappers.Snapshot) young += mm.ShmemReferenced(shmem, page->Data0, page);
            return young;
        }
        AnonVma? family = _kernel.AnonVmaOf((int)page->Private);
        if (family == null) return 0;
        foreach (AddressSpace mm in family.Members) young += mm.AnonReferenced(page, page->Data0);
        return young;
    }

    /// <inheritdoc/>
    /// <remarks>Anonymous pages leave the swap cache under its lock, with no lockless reader to wait for: never deferred.</remarks>
    public bool FreezeDeleted(PageFrame* page) => throw new System.Diagnostics.UnreachableException("reclaim deferred an anonymous page");

    /// <inheritdoc/>
    public PageReclaim ReclaimPage(PageFrame* page, Gfp gfp, ReclaimCounters counters)
    {
        if (!page->Has(PageFlags.Anon)) return ReclaimShmemPage(page, gfp, counters);
        SwapEntry entry;
        if (!page->Has(PageFlags.SwapCache))
        {
            // add_to_swap, and PG_dirty: the slot holds nothing yet.
            if (AddToSwap(page, gfp, counters, out entry) is { } refused) return refused;
            PageFrame.SetFlags(page, PageFlags.Dirty);
        }
        else
        {
            entry = SwapCache.EntryOf(page);
        }
        SwapDevice device = Table.DeviceOf(entry);

        if (Volatile.Read(ref page->_mapcount) > 0)
        {
            AnonVma? family = _kernel.AnonVmaOf((int)page->Private);
            if (family != null)
            {
                foreach (AddressSpace mm in family.Members)
                    if (mm.AnonUnmapToSwap(page, page->Data0, device, entry)) PageFrame.SetFlags(page, PageFlags.Dirty);
            }
            if (Volatile.Read(ref page->_mapcount) > 0) return PageReclaim.Activate;
        }

        if (page->Has(PageFlags.Dirty))
        {
            if ((gfp & Gfp.Io) == 0)
            {
                Interlocked.Increment(ref counters.NoIoSkipped);
                return PageReclaim.Keep;
            }
            // pageout: the page stays locked, so a fault finds it in the cache and waits instead of reading the slot.
            if (!PageOut(page, device, entry, counters)) return PageReclaim.Activate;
        }

        return RemoveFromSwapCache(page, entry);
    }

    /// <summary>
    /// shrink_folio_list and shmem_writepage for a page of a shmem object (a shared anonymous mapping's): every PTE
    /// that maps it goes (the areas fault it back from the object), it is written to a new swap slot through the swap
    /// cache, and the object's slot takes the entry in its place. A page still in the swap cache is one whose slot
    /// already holds its entry (a fault looked it up while it was being swapped out): only the cache lets it go.
    /// </summary>
    private PageReclaim ReclaimShmemPage(PageFrame* page, Gfp gfp, ReclaimCounters counters)
    {
        ShmemObject? shmem = _kernel.ShmemOf((int)page->Private);
        ulong index = page->Data0;
        SwapEntry entry;
        if (page->Has(PageFlags.SwapCache))
        {
            // Its slot holds the entry (the data is on swap), or nothing does any more (the object went while the
            // page was cached): either way only the cache keeps it.
            entry = SwapCache.EntryOf(page);
            if (Volatile.Read(ref page->_mapcount) > 0) return PageReclaim.Keep;
            if (Table.DeviceOf(entry).SwapCount(entry) != 0 && (shmem == null || !shmem.HoldsSwap(index, entry))) return PageReclaim.Keep;
            return RemoveFromSwapCache(page, entry);
        }
        if (shmem == null) return PageReclaim.Keep; // going away: its release frees the page
        if (Volatile.Read(ref page->_mapcount) > 0)
        {
            foreach (var (mm, _) in shmem.Mappers.Snapshot) mm.ShmemTryUnmap(shmem, index, page);
            if (Volatile.Read(ref page->_mapcount) > 0) return PageReclaim.Activate;
        }
        if (AddToSwap(page, gfp, counters, out entry) is { } refused) return refused;
        SwapDevice device = Table.DeviceOf(entry);
        if (!PageOut(page, device, entry, counters))
        {
            DeleteFromSwapCache(page, entry); // the page stays in its slot; the new swap slot goes
            return PageReclaim.Activate;
        }
        device.Duplicate(entry); // the object's slot holds the entry from here on
        if (!shmem.ReplaceWithSwap(index, page, entry))
        {
            device.SwapFree(entry);
            DeleteFromSwapCache(page, entry);
            return PageReclaim.Keep;
        }
        _pages.PutPage(page); // the slot's reference: the isolation's and the cache's are left
        return RemoveFromSwapCache(page, entry);
    }

    /// <summary>
    /// add_to_swap for a locked page: a new slot, and the page in the swap cache for it. Null when done; otherwise what
    /// reclaim does with the page instead: keep it when the gfp forbids swap I/O, activate it when swap is full.
    /// </summary>
    private PageReclaim? AddToSwap(PageFrame* page, Gfp gfp, ReclaimCounters counters, out SwapEntry entry)
    {
        entry = default;
        if ((gfp & Gfp.Io) == 0)
        {
            Interlocked.Increment(ref counters.NoIoSkipped);
            return PageReclaim.Keep;
        }
        entry = Table.GetSwapPage();
        if (entry.IsNone) return PageReclaim.Activate;
        if (!Cache.Add(page, entry))
            throw new InvalidOperationException($"swap: {entry} was handed out while its slot is in the swap cache.");
        return null;
    }

    /// <summary>
    /// pageout through swap_writepage for a locked page in the swap cache at <paramref name="entry"/>: writes it with
    /// PG_writeback set. False when the write failed (end_swap_bio_write's error path): the data is only in memory,
    /// so the page stays dirty.
    /// </summary>
    private bool PageOut(PageFrame* page, SwapDevice device, SwapEntry entry, ReclaimCounters counters)
    {
        TlbUnmapBatch.Current?.FlushDirty(); // no writable translation may outlive the write
        PageFrame.ClearFlags(page, PageFlags.Dirty);
        PageWait.Set(page, PageFlags.Writeback);
        try
        {
            t_swapWrites++;
            device.WritePage(entry, (byte*)_pages.AddressOf(page));
            Interlocked.Increment(ref counters.PswpOut);
            return true;
        }
        catch (IOException)
        {
            PageFrame.SetFlags(page, PageFlags.Dirty);
            Interlocked.Increment(ref counters.SwapWriteErrors);
            return false;
        }
        finally
        {
            PageWait.ClearAndWake(page, PageFlags.Writeback);
        }
    }

    /// <summary>
    /// __remove_mapping for a page whose data is on swap at <paramref name="entry"/>: only the isolation's reference and
    /// the cache's may be left; it leaves the swap cache, a shadow in its place.
    /// </summary>
    private PageReclaim RemoveFromSwapCache(PageFrame* page, SwapEntry entry)
    {
        if (!Cache.RemoveFrozen(page, entry, expectedRefs: 2, Workingset.Eviction(_pages, page))) return PageReclaim.Keep;
        Table.DeviceOf(entry).PutSwapCache(entry);
        return PageReclaim.Freed;
    }

    /// <summary>
    /// The swap-in half of do_swap_page and shmem_swapin_folio: the page of <paramref name="entry"/>, locked, with a
    /// reference for the caller — from the swap cache, or a new page read from the slot (a major fault) and added to
    /// the cache and the LRU, with <paramref name="kind"/>'s flags and named by <paramref name="owner"/> (an anon_vma
    /// family or a shmem object) at <paramref name="index"/>. Null when the entry was freed meanwhile (another thread
    /// swapped it in): the caller looks at its PTE or slot again.
    /// </summary>
    /// <exception cref="IOException">The slot could not be read; nothing changed.</exception>
    public PageFrame* SwapIn(SwapEntry entry, PageFlags kind, nuint owner, ulong index, out bool major)
    {
        major = false;
        SwapDevice device = Table.DeviceOf(entry);
        while (true)
        {
            PageFrame* page = Cache.Lookup(entry, out ulong shadow);
            if (page != null)
            {
                NoteReadaheadHit(page);
                PageWait.Lock(page);
                if (page->Has(PageFlags.SwapCache) && SwapCache.EntryOf(page) == entry) return page;
                PageWait.Unlock(page);
                _pages.PutPage(page);
                if (device.SwapCount(entry) == 0) return null;
                continue;
            }
            if (device.SwapCount(entry) == 0) return null;
            page = _pages.AllocPages(Gfp.HighUserMovable | Gfp.NoWarn, 0);
            if (page == null) throw new OutOfMemoryException($"Out of memory swapping in {entry} (VM_FAULT_OOM).");
            if (!device.SwapcachePrepare(entry))
            {
                // Another thread is adding it (or it went): look again once it has.
                _pages.FreePages(page, 0);
                Thread.Yield();
                continue;
            }
            page->FlagsAndZone |= (uint)(kind | PageFlags.SwapBacked | PageFlags.Locked);
            page->Private = owner;
            page->Data0 = index;
            if (!Cache.Add(page, entry)) throw new InvalidOperationException($"swap cache: {entry} is cached though SWAP_HAS_CACHE was clear.");
            try
            {
                device.ReadPage(entry, (byte*)_pages.AddressOf(page));
            }
            catch (IOException)
            {
                DiscardUnreadPage(page, entry);
                throw;
            }
            PageFrame.SetFlags(page, PageFlags.Uptodate);
            Interlocked.Increment(ref _counters.PswpIn);
            _pages.Lru.Add(page, _pages.NodeOf(page), active: shadow != 0 && Workingset.Refault(_pages, shadow, anon: true));
            major = true;
            Readahead(device, entry);
            return page;
        }
    }

    /// <summary>
    /// A locked page the caller added to the swap cache for <paramref name="entry"/> and could not read: it leaves
    /// the cache and goes back to the page allocator (its only reference is the caller's).
    /// </summary>
    private void DiscardUnreadPage(PageFrame* page, SwapEntry entry)
    {
        DeleteFromSwapCache(page, entry);
        PageWait.Unlock(page);
        page->_refcount = 0;
        _pages.FreeIsolatedPage(page);
    }

    /// <summary>delete_from_swap_cache: a locked page leaves the cache, and its slot SWAP_HAS_CACHE (freed when no PTE holds it).</summary>
    private void DeleteFromSwapCache(PageFrame* page, SwapEntry entry)
    {
        Cache.Delete(page, entry);
        Table.DeviceOf(entry).PutSwapCache(entry);
    }

    /// <summary>
    /// folio_free_swap for a locked page: when it is <paramref name="entry"/>'s page in the swap cache, not being
    /// written, and no PTE holds the slot any more, it leaves the cache; its data lives only in the page now (dirty).
    /// </summary>
    private void FreeSwap(PageFrame* page, SwapEntry entry)
    {
        if (!page->Has(PageFlags.SwapCache) || SwapCache.EntryOf(page) != entry || page->Has(PageFlags.Writeback)
            || Table.DeviceOf(entry).SwapCount(entry) != 0)
            return;
        DeleteFromSwapCache(page, entry);
        PageFrame.SetFlags(page, PageFlags.Dirty);
    }

    /// <summary>
    /// vm_swap_full: less than half of the swap space is free. A page swapped in then gives its slot back at once
    /// rather than keep it for the next reclaim.
    /// </summary>
    public bool SwapFull => Table.FreePages * 2 < Table.TotalPages;

    /// <summary>
    /// After the PTE that held <paramref name="entry"/> took <paramref name="page"/> (locked): drops that PTE's swap
    /// count, and returns true when it was the last (the page is the mapper's alone if nothing else maps it). The page
    /// then leaves the swap cache and the slot is freed (the data lives only in the page, so it is dirty) when
    /// <paramref name="keepCache"/> is false or swap is full — should_try_to_free_swap; otherwise it stays in the
    /// cache, clean, and reclaim can take it again without writing it unless a mapping's Dirty says otherwise.
    /// </summary>
    public bool SwapFreeMapped(PageFrame* page, SwapEntry entry, bool keepCache)
    {
        if (Table.DeviceOf(entry).SwapFree(entry) != 0) return false;
        if (!keepCache || SwapFull)
        {
            DeleteFromSwapCache(page, entry);
            PageFrame.SetFlags(page, PageFlags.Dirty);
        }
        return true;
    }

    /// <summary>swap_duplicate for a PTE copied by fork.</summary>
    public void Duplicate(SwapEntry entry) => Table.DeviceOf(entry).Duplicate(entry);

    /// <summary>
    /// free_swap_and_cache for a swap PTE being zapped: drops its count; when no PTE holds the slot any more and
    /// its cached page is unmapped and not busy, the page leaves the cache too. Under the ptl (takes no sleeping lock).
    /// </summary>
    public void FreeSwapAndCache(SwapEntry entry)
    {
        SwapDevice device = Table.DeviceOf(entry);
        if (device.SwapFree(entry) != 0) return;
        if (!device.HasCache(entry))
        {
            Cache.ClearShadow(entry); // the slot is free: its eviction record means nothing now
            return;
        }
        PageFrame* page = Cache.Lookup(entry);
        if (page == null) return;
        if (PageWait.TryLock(page))
        {
            FreeSwap(page, entry); // a page still mapped (by a fork that swapped it in) keeps its data in memory only now
            PageWait.Unlock(page);
        }
        _pages.PutPage(page);
    }

    /// <summary>
    /// free_swap_cache: a page in the swap cache whose last mapping just went leaves the cache when no swap entry
    /// holds its slot and its lock is free (trylock; otherwise reclaim takes it later).
    /// </summary>
    public void FreeSwapCache(PageFrame* page) => TryFreeSwap(page, unmappedOnly: true);

    /// <summary>
    /// folio_free_swap with trylock: a page in the swap cache whose slot no PTE holds leaves the cache (dirty: the copy
    /// on swap is stale from the next write on) when its lock is free — and, with <paramref name="unmappedOnly"/>, only
    /// once nothing maps it. Without it, for a write fault to a read-only entry (wp_can_reuse_anon_folio), so the writer
    /// can reuse the page instead of copying it. Takes no sleeping lock (callers hold the ptl).
    /// </summary>
    public void TryFreeSwap(PageFrame* page, bool unmappedOnly = false)
    {
        if (!PageWait.TryLock(page)) return;
        if (page->Has(PageFlags.SwapCache) && (!unmappedOnly || Volatile.Read(ref page->_mapcount) == 0)) FreeSwap(page, SwapCache.EntryOf(page));
        PageWait.Unlock(page);
    }

    /// <summary>
    /// try_to_unuse for swapoff: every process swaps in each of its PTEs on <paramref name="device"/>, then pages
    /// left in the cache with no PTE leave it. False when memory ran out (the device stays).
    /// </summary>
    private bool Unuse(SwapDevice device)
    {
        try
        {
            foreach (AddressSpace mm in _kernel.Processes()) mm.UnuseSwap(device.Type);
            foreach (ShmemObject shmem in _kernel.ShmemObjects()) shmem.UnuseSwap(device.Type);
            foreach (ulong offset in Cache.Offsets(device.Type))
            {
                var entry = new SwapEntry(device.Type, offset);
                PageFrame* page = Cache.Lookup(entry);
                if (page == null) continue;
                PageWait.Lock(page);
                PageWait.WaitWhile(page, PageFlags.Writeback);
                FreeSwap(page, entry);
                PageWait.Unlock(page);
                _pages.PutPage(page);
            }
            Cache.DropShadows(device.Type);
            return device.UsedPages == 0;
        }
        catch (OutOfMemoryException)
        {
            return false;
        }
    }

    /// <summary>Checks the swap cache against the devices' maps.</summary>
    public void CheckConsistency()
    {
        Cache.CheckConsistency(e => Table.DeviceOf(e).HasCache(e));
        foreach (SwapDevice d in Table.Devices) d.CheckConsistency();
    }

    /// <summary>Closes the devices and frees the cache's trees.</summary>
    public void Dispose()
    {
        _pages.UnregisterShrinker(_splitHugePages);
        Table.Dispose();
        Cache.Dispose();
    }
}

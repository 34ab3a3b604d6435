using Allocators.Physical;

namespace Allocators.Mmu;

public sealed unsafe partial class KernelAddressSpace
{
    // The persistent kmap area (mm/highmem.c): LAST_PKMAP entries in one page table at PKMAP_BASE. pkmap_count[i]:
    // 0 = free and flushed, 1 = free but possibly still in some thread's TLB (flushed in bulk by
    // flush_all_zero_pkmaps when the search wraps), n > 1 = n - 1 users. kmap_lock (_pkmapLock, a monitor) guards
    // the counts, the entries and the page -> slot table; a kmap that finds every entry busy sleeps on it until a
    // kunmap frees one.

    /// <summary>LAST_PKMAP: entries of the pkmap area (one page table).</summary>
    public const int LastPkmap = VirtualAddress.EntriesPerTable;

    /// <summary>PKMAP_BASE: the 2 MiB-aligned start of the pkmap area, below the fixmap.</summary>
    public const ulong PkmapBase = 0xFFFF_FFFF_FEE0_0000UL;

    private readonly object _pkmapLock = new();
    private readonly int[] _pkmapCount = new int[LastPkmap];
    private readonly ulong[] _pkmapPfn = new ulong[LastPkmap]; // pfn mapped by each entry whose count is > 0
    private readonly Dictionary<ulong, int> _pkmapSlot = []; // page_address_htable: pfn -> entry
    private ulong* _pkmapPte;
    private int _lastPkmapNr;
    private long _pkmapFlushes;
    private long _pkmapWaits;

    /// <summary>PKMAP_ADDR(i).</summary>
    public static ulong PkmapAddress(int index) => PkmapBase + ((ulong)index << VirtualAddress.PageShift);

    /// <summary>flush_all_zero_pkmaps runs (each one TLB flush of the pkmap area).</summary>
    public long PkmapFlushes => Interlocked.Read(ref _pkmapFlushes);

    /// <summary>kmap calls that slept because every pkmap entry was in use.</summary>
    public long PkmapWaits => Interlocked.Read(ref _pkmapWaits);

    /// <summary>pkmap_count[<paramref name="index"/>] (0 free, 1 free but not flushed, n users + 1).</summary>
    public int PkmapCount(int index)
    {
        lock (_pkmapLock) return _pkmapCount[index];
    }

    private void SetUpPkmap()
    {
        lock (_ptl)
        {
            _pkmapPte = AllocPteSlot(PkmapBase, PteFlags.KernelPageTable);
            if (_pkmapPte == null) throw new OutOfMemoryException("pkmap: no memory for its page table.");
        }
    }

    /// <summary>
    /// kmap: a kernel address for <paramref name="page"/> that stays valid for every thread until the matching
    /// <see cref="Kunmap"/>. A low page returns its direct-map address; a high page reuses its existing pkmap entry or
    /// takes a free one, sleeping while every entry is in use. May sleep, so not inside <see cref="KmapAtomic"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called inside an atomic kmap.</exception>
    public ulong Kmap(PageFrame* page)
    {
        ThrowIfDisposed();
        _memory.ThrowIfNotFrame(page, "kmap");
        MightSleep("kmap");
        ulong pfn = page->Pfn;
        if (pfn < _lowPfnEnd) return VirtualAddress.PageOffset + (pfn << VirtualAddress.PageShift);
        lock (_pkmapLock)
        {
            if (!_pkmapSlot.TryGetValue(pfn, out int slot)) slot = MapNewVirtual(pfn);
            // Two users at least now; a count of 1 (free but mapped) goes back to 2.
            _pkmapCount[slot]++;
            return PkmapAddress(slot);
        }
    }

    /// <summary>kunmap: drops a <see cref="Kmap"/> of <paramref name="page"/>; the entry stays mapped until a wrap flushes it.</summary>
    /// <exception cref="InvalidOperationException">The page is not kmapped; nothing changes.</exception>
    public void Kunmap(PageFrame* page)
    {
        _memory.ThrowIfNotFrame(page, "kunmap");
        ulong pfn = page->Pfn;
        if (pfn < _lowPfnEnd) return;
        lock (_pkmapLock)
        {
            if (!_pkmapSlot.TryGetValue(pfn, out int slot) || _pkmapCount[slot] < 2)
                throw new InvalidOperationException($"kunmap: pfn 0x{pfn:x} is not kmapped.");
            // Down to 1: free for reuse, so a sleeper in kmap can have it.
            if (--_pkmapCount[slot] == 1) Monitor.PulseAll(_pkmapLock);
        }
    }

    /// <summary>The pkmap address of a kmapped high page, or 0 (page_address for high memory).</summary>
    private ulong PkmapAddressOf(PageFrame* page)
    {
        lock (_pkmapLock) return _pkmapSlot.TryGetValue(page->Pfn, out int slot) ? PkmapAddress(slot) : 0;
    }

    /// <summary>map_new_virtual: the next free entry after the last one used, flushing once per wrap; sleeps while none is free. kmap_lock held.</summary>
    private int MapNewVirtual(ulong pfn)
    {
        while (true)
        {
            for (int count = LastPkmap; count > 0; count--)
            {
                _lastPkmapNr = (_lastPkmapNr + 1) & (LastPkmap - 1);
                if (_lastPkmapNr == 0)
                {
                    FlushAllZeroPkmaps();
                    count = LastPkmap;
                }
                if (_pkmapCount[_lastPkmapNr] != 0) continue;
                int slot = _lastPkmapNr;
                Volatile.Write(ref _pkmapPte[slot], PageTableEntry.Make(pfn, PteFlags.PageKernel).Value);
                _pkmapCount[slot] = 1;
                _pkmapPfn[slot] = pfn;
                _pkmapSlot[pfn] = slot;
                return slot;
            }
            // Every entry is in use: sleep until a kunmap frees one, then look again — another thread may have
            // mapped this very page meanwhile.
            Interlocked.Increment(ref _pkmapWaits);
            Monitor.Wait(_pkmapLock);
            if (_pkmapSlot.TryGetValue(pfn, out int mapped)) return mapped;
        }
    }

    /// <summary>
    /// flush_all_zero_pkmaps: every entry whose count is 1 (unused but maybe cached in a TLB) is cleared, and the area
    /// is flushed from every thread's TLB once. kmap_lock held.
    /// </summary>
    private void FlushAllZeroPkmaps()
    {
        bool flush = false;
        for (int i = 0; i < LastPkmap; i++)
        {
            if (_pkmapCount[i] != 1) continue;
            _pkmapCount[i] = 0;
            Volatile.Write(ref _pkmapPte[i], 0UL);
            _pkmapSlot.Remove(_pkmapPfn[i]);
            flush = true;
        }
        if (!flush) return;
        Interlocked.Increment(ref _pkmapFlushes);
        Flush(PkmapBase, PkmapAddress(LastPkmap), waitForAccesses: true);
    }
}

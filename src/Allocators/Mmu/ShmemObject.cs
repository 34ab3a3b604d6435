using System.Runtime.InteropServices;
using Allocators.Collections;
using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

/// <summary>
/// The memory behind a shared anonymous mapping (mm/shmem.c: the kernel backs these with a shmem file): a native array
/// of slots indexed by page offset, each empty, a page, or — once reclaim swapped the page out — its swap entry, so
/// that every mapping of it (a forked child's included) finds the same data. Its pages are swap-backed pages on the
/// anonymous LRU lists; reclaim unmaps them through the object's mappers (its i_mmap) and writes them to swap
/// (shmem_writepage), and a fault reads them back (shmem_swapin_folio).
/// </summary>
/// <remarks>
/// <para>Locks: the object's lock guards the slots and is taken alone or under a page lock (reclaim holds the page
/// lock and then replaces the page's slot); nothing sleeps under it. A fault takes a page from a slot with a reference,
/// then locks the page and checks the slot again, so it never maps a page reclaim is taking away.</para>
/// <para>Invariants, with the lock free: each page slot holds one page reference and the page names this object and
/// its index (<c>Private = Id</c>, <c>Data0 = index</c>); each swap slot holds one swap count of its entry;
/// <c>nr_shmem = Σ over live objects of #page slots</c>.</para>
/// </remarks>
internal sealed unsafe class ShmemObject
{
    private const ulong SwapTag = 1; // page pointers are aligned: bit 0 tells a swap entry from a page

    private readonly KernelAddressSpace _kernel;
    private readonly PageAllocator _pages;
    private readonly Lock _lock = new();
    private ulong* _slots;
    private ulong _capacity;
    private int _refs = 1;

    public ShmemObject(KernelAddressSpace kernel, ulong pageCount)
    {
        _kernel = kernel;
        _pages = kernel.Pages;
        _capacity = Math.Max(pageCount, 1);
        _slots = (ulong*)NativeMemory.AllocZeroed((nuint)_capacity, sizeof(ulong));
        Id = kernel.RegisterShmem(this);
    }

    /// <summary>The number this object's pages carry (page->mapping's stand-in: <see cref="KernelAddressSpace.ShmemOf"/>).</summary>
    public int Id { get; }

    /// <summary>The address spaces whose areas map the object (i_mmap).</summary>
    public MapperList<AddressSpace> Mappers { get; } = new();

    public void AddRef() => Interlocked.Increment(ref _refs);

    /// <summary>Pages in the object's slots changed by <paramref name="pages"/>: the system's nr_shmem.</summary>
    private void AddResident(long pages) => Interlocked.Add(ref _kernel.Statistics.NrShmem, pages);

    /// <summary>Drops an area's reference; the last one gives every page and swap slot back.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        _kernel.UnregisterShmem(Id);
        ulong* slots;
        ulong capacity;
        lock (_lock)
        {
            slots = _slots;
            capacity = _capacity;
            _slots = null;
            _capacity = 0;
        }
        long resident = 0;
        for (ulong i = 0; i < capacity; i++)
        {
            ulong slot = slots[i];
            if (slot == 0) continue;
            if ((slot & SwapTag) != 0)
            {
                _kernel.Swap.FreeSwapAndCache(EntryOf(slot));
            }
            else
            {
                resident++;
                _pages.PutPage((PageFrame*)slot);
            }
        }
        AddResident(-resident);
        NativeMemory.Free(slots);
    }

    private static SwapEntry EntryOf(ulong slot)
    {
        ulong value = slot >> 1;
        return new SwapEntry((int)(value >> (SwapEntry.OffsetBits + 8)), value & SwapEntry.MaxOffset);
    }

    private static ulong SlotOf(SwapEntry entry) => (entry.Value << 1) | SwapTag;

    /// <summary>
    /// shmem_get_folio for a fault: the page at <paramref name="index"/> — the one in the slot, a new zeroed page for an
    /// empty slot, or the page read back from swap (<paramref name="major"/>) — locked, with a reference for the
    /// caller, who maps it and unlocks it. Null when out of memory.
    /// </summary>
    /// <exception cref="IOException">The swap device could not be read; nothing changed.</exception>
    public PageFrame* GetLockedPage(ulong index, out bool major)
    {
        major = false;
        while (true)
        {
            ulong slot;
            lock (_lock)
            {
                EnsureCapacityLocked(index + 1);
                slot = _slots[index];
                if (slot != 0 && (slot & SwapTag) == 0) _pages.GetPage((PageFrame*)slot);
            }
            PageFrame* page;
            if (slot == 0)
            {
                page = NewPage(index);
                if (page == null) return null;
                if (Install(index, 0, page)) return page;
                PageWait.Unlock(page);
                _pages.PutPage(page);
                continue;
            }
            if ((slot & SwapTag) != 0)
            {
                SwapEntry entry = EntryOf(slot);
                page = _kernel.Swap.SwapIn(entry, PageFlags.SwapBacked, (nuint)Id, index, out bool read);
                if (page == null) continue; // the entry went meanwhile: look again
                if (Install(index, slot, page))
                {
                    // The data lives in the page from now on: the slot and the swap cache let it go.
                    _kernel.Swap.SwapFreeMapped(page, entry, keepCache: false);
                    major = read;
                    return page;
                }
                PageWait.Unlock(page);
                _pages.PutPage(page);
                continue;
            }
            page = (PageFrame*)slot;
            PageWait.Lock(page); // reclaim may hold it while it swaps the page out
            lock (_lock)
            {
                if (_slots != null && _slots[index] == slot) return page;
            }
            PageWait.Unlock(page);
            _pages.PutPage(page);
        }
    }

    /// <summary>A zeroed, locked page for slot <paramref name="index"/>, not yet in it; null when out of memory.</summary>
    private PageFrame* NewPage(ulong index)
    {
        PageFrame* page = _pages.AllocPages(Gfp.HighUserMovable | Gfp.Zero | Gfp.NoWarn, 0);
        if (page == null) return null;
        page->FlagsAndZone |= (uint)(PageFlags.SwapBacked | PageFlags.Locked | PageFlags.Uptodate);
        page->Private = (nuint)Id;
        page->Data0 = index;
        return page;
    }

    /// <summary>
    /// Puts the locked <paramref name="page"/> (which the caller holds a reference to) into slot <paramref name="index"/>
    /// if it still holds <paramref name="expected"/>: the slot takes a reference of its own, and a new page joins the
    /// LRU. False when the slot changed (another fault was first, or the object went).
    /// </summary>
    private bool Install(ulong index, ulong expected, PageFrame* page)
    {
        lock (_lock)
        {
            if (_slots == null || _slots[index] != expected) return false;
            _slots[index] = (ulong)page;
            _pages.GetPage(page);
            AddResident(1);
        }
        // A page read from swap or found in the swap cache came from the swap layer, already on the LRU; it may have
        // been read ahead for anyone, so it is made this object's.
        page->Private = (nuint)Id;
        page->Data0 = index;
        if (expected != 0) PageFrame.ClearFlags(page, PageFlags.Anon);
        else _pages.Lru.Add(page, _pages.NodeOf(page));
        return true;
    }

    /// <summary>
    /// shmem_writepage's swap of the slot: when slot <paramref name="index"/> still holds the locked
    /// <paramref name="page"/>, it holds <paramref name="entry"/> instead (the caller gave the entry its count) and
    /// the slot's page reference passes to the caller. False when the slot changed (the object went).
    /// </summary>
    public bool ReplaceWithSwap(ulong index, PageFrame* page, SwapEntry entry)
    {
        lock (_lock)
        {
            if (_slots == null || index >= _capacity || _slots[index] != (ulong)page) return false;
            _slots[index] = SlotOf(entry);
            AddResident(-1);
            return true;
        }
    }

    /// <summary>True when slot <paramref name="index"/> holds <paramref name="entry"/> (a cached page's data is on swap).</summary>
    public bool HoldsSwap(ulong index, SwapEntry entry)
    {
        lock (_lock) return _slots != null && index < _capacity && _slots[index] == SlotOf(entry);
    }

    /// <summary>shmem_unuse for swapoff: reads back every page of the object on swap device <paramref name="type"/>.</summary>
    /// <exception cref="OutOfMemoryException">No page for one of them.</exception>
    /// <exception cref="IOException">The device could not be read.</exception>
    public void UnuseSwap(int type)
    {
        for (ulong index = 0; ; index++)
        {
            ulong slot;
            lock (_lock)
            {
                if (_slots == null || index >= _capacity) return;
                slot = _slots[index];
            }
            if ((slot & SwapTag) == 0 || EntryOf(slot).Type != type) continue;
            PageFrame* page = GetLockedPage(index, out _);
            if (page == null) throw new OutOfMemoryException($"swapoff: out of memory reading back shmem page {index}.");
            PageWait.Unlock(page);
            _pages.PutPage(page);
        }
    }

    /// <summary>Makes room for <paramref name="pages"/> page offsets (a shared mapping grown by mremap).</summary>
    public void EnsureCapacity(ulong pages)
    {
        lock (_lock) EnsureCapacityLocked(pages);
    }

    private void EnsureCapacityLocked(ulong pages)
    {
        if (pages <= _capacity || _slots == null) return;
        ulong capacity = Math.Max(pages, _capacity * 2);
        var slots = (ulong*)NativeMemory.AllocZeroed((nuint)capacity, sizeof(ulong));
        Buffer.MemoryCopy(_slots, slots, capacity * sizeof(ulong), _capacity * sizeof(ulong));
        NativeMemory.Free(_slots);
        _slots = slots;
        _capacity = capacity;
    }
}

using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Mmu;

/// <summary>
/// The memory behind a shared anonymous mapping (the kernel backs these with a shmem file): a native array of page
/// pointers indexed by page offset, filled on first fault, so that every mapping of it — a forked child's included —
/// finds the same page. Holds one reference to each of its pages and is itself counted by the areas that map it.
/// </summary>
internal sealed unsafe class ShmemObject
{
    private readonly PageAllocator _pages;
    private readonly Lock _lock = new();
    private PageFrame** _slots;
    private ulong _capacity;
    private int _refs = 1;
    private long _resident;

    public ShmemObject(PageAllocator pages, ulong pageCount)
    {
        _pages = pages;
        _capacity = Math.Max(pageCount, 1);
        _slots = (PageFrame**)NativeMemory.AllocZeroed((nuint)_capacity, (nuint)sizeof(nint));
    }

    /// <summary>Pages currently allocated to the object (nr_shmem share).</summary>
    public long ResidentPages => Interlocked.Read(ref _resident);

    public void AddRef() => Interlocked.Increment(ref _refs);

    /// <summary>Drops an area's reference; the last one gives every page back.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        for (ulong i = 0; i < _capacity; i++)
        {
            if (_slots[i] != null) _pages.PutPage(_slots[i]);
        }
        NativeMemory.Free(_slots);
        _slots = null;
        _capacity = 0;
    }

    /// <summary>
    /// The page at <paramref name="index"/>, allocated and zeroed on first use (shmem_get_folio), with an extra
    /// reference for the caller's mapping. Null when out of memory.
    /// </summary>
    public PageFrame* GetPageForMapping(ulong index)
    {
        lock (_lock)
        {
            EnsureCapacity(index + 1);
            PageFrame* page = _slots[index];
            if (page == null)
            {
                page = _pages.AllocPages(Gfp.HighUserMovable | Gfp.Zero | Gfp.NoWarn, 0);
                if (page == null) return null;
                page->FlagsAndZone |= (uint)PageFlags.SwapBacked;
                _slots[index] = page;
                Interlocked.Increment(ref _resident);
            }
            _pages.GetPage(page);
            return page;
        }
    }

    /// <summary>Makes room for <paramref name="pages"/> page offsets (a shared mapping grown by mremap).</summary>
    public void EnsureCapacity(ulong pages)
    {
        lock (_lock)
        {
            if (pages <= _capacity) return;
            ulong capacity = Math.Max(pages, _capacity * 2);
            var slots = (PageFrame**)NativeMemory.AllocZeroed((nuint)capacity, (nuint)sizeof(nint));
            Buffer.MemoryCopy(_slots, slots, capacity * (ulong)sizeof(nint), _capacity * (ulong)sizeof(nint));
            NativeMemory.Free(_slots);
            _slots = slots;
            _capacity = capacity;
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Allocators.Physical;

/// <summary>
/// The metadata of one 4 KiB page frame: the kernel's <c>struct page</c>. Frames live in one native array per
/// memory section (the "mem_map"), never as managed objects, so a page's metadata is found from its pfn or its
/// address in O(1) and can be read by an out-of-process inspector.
/// </summary>
/// <remarks>
/// 64 bytes like the kernel's (1.6 % of memory). <see cref="Next"/>/<see cref="Prev"/> link the frame into
/// whatever list currently owns it (buddy free list, per-CPU page list, slab partial list).
/// The three union words are interpreted by the subsystem that owns the page (see <see cref="Flags"/>).
/// </remarks>
[StructLayout(LayoutKind.Sequential, Size = 64)]
public unsafe struct PageFrame
{
    /// <summary>Size of one page in bytes.</summary>
    public const int PageSize = 4096;

    /// <summary>log2 of <see cref="PageSize"/>.</summary>
    public const int PageShift = 12;

    /// <summary>log2 of the size of a frame (64 bytes).</summary>
    internal const int SizeShift = 6;

    /// <summary>
    /// 64-bit words of extension data every page has beside its frame (the kernel's <c>page_ext</c>), in a parallel
    /// array: the slab layer keeps its per-object bitmaps there, out of the objects and out of the frame's line.
    /// </summary>
    internal const int ExtWords = 8;

    // The raw words are the allocator's: callers outside the library read a frame through the accessors below, so
    // no caller can put a page into a state the allocator did not (the kernel's page_ref_count() and friends).

    /// <summary>Page flags (low 32 bits) and the zone id (bits 48..55).</summary>
    internal ulong FlagsAndZone;

    /// <summary>Next frame in the list that owns this frame.</summary>
    internal PageFrame* Next;

    /// <summary>Previous frame in the list that owns this frame.</summary>
    internal PageFrame* Prev;

    /// <summary>Buddy: unused. Tail page: the compound head. Slab: the owning cache.</summary>
    internal nuint Private;

    /// <summary>Reference count word (the kernel's <c>_refcount</c>); 0 while the page is free.</summary>
    internal int _refcount;

    /// <summary>Page-table entries that map this page (the kernel's <c>_mapcount</c>, here not offset by one).</summary>
    internal int _mapcount;

    /// <summary>The order of a free block (head) or of a live allocation (head).</summary>
    internal int _order;

    /// <summary>This frame's page frame number.</summary>
    internal uint _pfn;

    /// <summary>Subsystem-defined word (slab: the owner thread's full-slab chain link; page tables: used-entry count).</summary>
    internal ulong Data0;

    /// <summary>Subsystem-defined word (slab: owner/state word).</summary>
    internal ulong Data1;

    /// <summary>Reference count (page_ref_count); 0 while the page is free.</summary>
    public readonly int RefCount
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _refcount;
    }

    /// <summary>Number of page-table entries that map this page (page_mapcount).</summary>
    public readonly int MapCount
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _mapcount;
    }

    /// <summary>The order of a free block (head) or of a live allocation (head).</summary>
    public readonly int Order
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _order;
    }

    /// <summary>This frame's page frame number (page_to_pfn).</summary>
    public readonly uint Pfn
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _pfn;
    }

    internal const int ZoneShift = 48;
    internal const ulong FlagMask = 0xFFFF_FFFFUL;

    /// <summary>The page flags.</summary>
    public PageFlags Flags
    {
        readonly get => (PageFlags)(uint)(FlagsAndZone & FlagMask);
        internal set => FlagsAndZone = (FlagsAndZone & ~FlagMask) | (uint)value;
    }

    /// <summary>Global index of the zone this page belongs to.</summary>
    public readonly int ZoneId
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (int)((FlagsAndZone >> ZoneShift) & 0xFF);
    }

    /// <summary>True when <paramref name="flag"/> is set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Has(PageFlags flag) => (FlagsAndZone & (uint)flag) != 0;

    /// <summary>Atomically sets <paramref name="flags"/> (set_bit): for pages whose flags several threads change. Returns the previous flags.</summary>
    internal static PageFlags SetFlags(PageFrame* page, PageFlags flags) => (PageFlags)(uint)Interlocked.Or(ref page->FlagsAndZone, (uint)flags);

    /// <summary>Atomically clears <paramref name="flags"/> (clear_bit). Returns the previous flags.</summary>
    internal static PageFlags ClearFlags(PageFrame* page, PageFlags flags) => (PageFlags)(uint)Interlocked.And(ref page->FlagsAndZone, ~(ulong)(uint)flags);

    /// <summary>For a tail page, its compound head; otherwise the page itself (compound_head).</summary>
    public static PageFrame* CompoundHead(PageFrame* page)
        => page->Has(PageFlags.Tail) ? (PageFrame*)page->Private : page;

    /// <summary>A short description of the page's state for error reports.</summary>
    public readonly string Describe()
        => $"pfn 0x{Pfn:x} flags=[{Flags}] order={Order} refcount={RefCount} mapcount={MapCount} zone={ZoneId}";
}

/// <summary>Page flags (the kernel's PG_* bits and page types, where they exist).</summary>
[Flags]
public enum PageFlags : uint
{
    /// <summary>No flag.</summary>
    None = 0,
    /// <summary>Locked (PG_locked).</summary>
    Locked = 1u << 0,
    /// <summary>Referenced recently (PG_referenced).</summary>
    Referenced = 1u << 1,
    /// <summary>Contents valid (PG_uptodate).</summary>
    Uptodate = 1u << 2,
    /// <summary>Written since last write-back (PG_dirty).</summary>
    Dirty = 1u << 3,
    /// <summary>On an LRU list (PG_lru).</summary>
    Lru = 1u << 4,
    /// <summary>Active LRU (PG_active).</summary>
    Active = 1u << 5,
    /// <summary>Owned by the slab allocator (PG_slab).</summary>
    Slab = 1u << 6,
    /// <summary>Never handed to the allocator (PG_reserved).</summary>
    Reserved = 1u << 7,
    /// <summary>Private data present (PG_private).</summary>
    Private = 1u << 8,
    /// <summary>Head of a compound page (PG_head).</summary>
    Head = 1u << 9,
    /// <summary>Tail of a compound page (the kernel encodes this in compound_head bit 0).</summary>
    Tail = 1u << 10,
    /// <summary>Anonymous or shmem memory (PG_swapbacked).</summary>
    SwapBacked = 1u << 11,
    /// <summary>Head of a free block in the buddy lists (page type PG_buddy).</summary>
    Buddy = 1u << 12,
    /// <summary>Allocated from the emergency reserve (pfmemalloc).</summary>
    PfMemAlloc = 1u << 13,
    /// <summary>Sits on a per-CPU (per-thread) page list.</summary>
    Pcp = 1u << 14,
    /// <summary>Head of a live allocation from the page allocator (order in <see cref="PageFrame.Order"/>).</summary>
    Allocated = 1u << 15,
    /// <summary>A page-table page (page type PG_table).</summary>
    PageTable = 1u << 16,
    /// <summary>Memory offline (page type PG_offline).</summary>
    Offline = 1u << 17,
    /// <summary>Free block whose memory was given back to the host (free page reporting, PG_reported).</summary>
    Reported = 1u << 18,
    /// <summary>Mapped into a user address space as anonymous memory (PageAnon).</summary>
    Anon = 1u << 19,
    /// <summary>Isolated from the free lists while being worked on.</summary>
    Isolated = 1u << 20,
    /// <summary>A kmalloc allocation above the largest kmalloc cache, served as a compound page (large kmalloc).</summary>
    LargeKmalloc = 1u << 21,
    /// <summary>Being written back to its file (PG_writeback).</summary>
    Writeback = 1u << 22,
    /// <summary>The page-cache page whose first read starts the next asynchronous readahead (PG_readahead).</summary>
    Readahead = 1u << 23,
    /// <summary>Someone sleeps on this page's lock or writeback bit (PG_waiters): the clearer must wake them.</summary>
    Waiters = 1u << 24,
    /// <summary>In the swap cache (PG_swapcache): <see cref="PageFrame.Data1"/> holds its swap entry.</summary>
    SwapCache = 1u << 25,
    /// <summary>A block kept as KASAN's guard after the block before it (the kernel's PageGuard page type); never freed on its own.</summary>
    Guard = 1u << 26,
    /// <summary>
    /// A free max-order block whose tail frames were never written (deferred struct page init): they are zero, in host
    /// memory not yet touched, until the block first leaves its free list.
    /// </summary>
    DeferredInit = 1u << 27,
}

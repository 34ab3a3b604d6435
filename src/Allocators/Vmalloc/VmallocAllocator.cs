using System.Diagnostics;
using System.Runtime.InteropServices;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Vmalloc;

/// <summary>
/// vmalloc: virtually contiguous memory in the kernel address space built from scattered order-0 pages, mapped
/// through the software MMU's kernel page tables. Areas and free space are kept in native AVL trees (free space
/// augmented with the largest block per subtree, so a fit is found in O(log n)); every area is followed by an
/// unmapped guard page; freed areas are unmapped at once and their address ranges purged lazily in batches.
/// With the memfd arena the same frames are also mapped for real into a reserved host window, so an area is one
/// contiguous <see cref="Span{T}"/> as well.
/// </summary>
/// <remarks>
/// <para>Thread-safe: one vmap lock over both trees and the lazy list, taken after the mmap and page-table locks and
/// before the slab and page allocators' (docs/locking.md).</para>
/// <para>Invariants (<c>CheckConsistency</c>, run by the tests): busy areas (lazily freed ones included) and free
/// blocks tile the range, <c>Σ busy + Σ free = VmallocSize</c> with no gap or overlap; each free-tree node's
/// <c>LargestFree = max(own size, children's LargestFree)</c>; <c>VmallocPages = Σ NrPages</c> of live vmalloc areas.</para>
/// </remarks>
public sealed unsafe partial class VmallocAllocator : IDisposable
{
    /// <summary>VMALLOC_START of x86-64 with 4-level paging and no KASLR.</summary>
    public const ulong VmallocStart = 0xffffc90000000000UL;

    /// <summary>Size of the vmalloc range: 32 TiB.</summary>
    public const ulong VmallocSize = 32UL << 40;

    /// <summary>One past the last vmalloc address.</summary>
    public const ulong VmallocEnd = VmallocStart + VmallocSize;

    private const ulong PageSize = PageFrame.PageSize;

    private readonly KernelAddressSpace _kernel;
    private readonly PageAllocator _pages;
    private readonly PhysicalMemory _memory;
    private readonly SlabAllocator _slab;
    private readonly KmemCache _areaCache;
    private readonly Lock _lock = new();
    private readonly VmallocStats* _stats = (VmallocStats*)NativeMemory.AllocZeroed((nuint)sizeof(VmallocStats));
    private VmapTree _busy;
    private VmapTree _free;
    private VmapArea* _lazy;
    private long _lazyPages;
    private readonly long _lazyMaxPages;
    private readonly HostWindow? _host;
    private long _purges;
    private long _failures;
    private bool _disposed;

    /// <summary>Builds vmalloc over the kernel page tables <paramref name="kernel"/> and the slab layer <paramref name="slab"/>.</summary>
    /// <param name="kernel">The kernel address space whose tables map vmalloc areas.</param>
    /// <param name="slab">Slab layer for area records and page arrays (and kmalloc for Kvmalloc).</param>
    /// <param name="hostWindowSize">Bytes of host address space reserved for real mappings on the memfd arena (default 64 GiB).</param>
    /// <exception cref="OutOfMemoryException">No memory for the record of the free range; nothing is left behind.</exception>
    public VmallocAllocator(KernelAddressSpace kernel, SlabAllocator slab, ulong hostWindowSize = 64UL << 30)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(slab);
        _kernel = kernel;
        _slab = slab;
        _pages = slab.Pages;
        _memory = _pages.Memory;
        _busy = new VmapTree(augmented: false, &_stats->BusyRoot);
        _free = new VmapTree(augmented: true, &_stats->FreeRoot);
        _stats->CallSites = _callSites.Native;
        _stats->VmapAreaSize = sizeof(VmapArea);
        _areaCache = slab.CreateCache("vmap_area", sizeof(VmapArea), 8);
        VmapArea* all = NewArea(VmallocStart, VmallocEnd);
        if (all == null)
        {
            _areaCache.Destroy();
            NativeMemory.Free(_stats);
            throw new OutOfMemoryException("vmalloc: no memory for the record of the free range.");
        }
        _free.Insert(all);
        // lazy_max_pages: 32 MiB per fls(online CPUs).
        _lazyMaxPages = (32L << 20) / PageFrame.PageSize * (32 - int.LeadingZeroCount(Environment.ProcessorCount));
        if (_memory.Backing == ArenaBacking.MemFd && hostWindowSize > 0) _host = new HostWindow(_memory, hostWindowSize);
        _stats->Magic = VmallocStats.MagicValue;
    }

    /// <summary>The kernel address space vmalloc maps into.</summary>
    public KernelAddressSpace Kernel => _kernel;

    /// <summary>True when areas are also mapped for real into host memory (memfd arena).</summary>
    public bool HasHostMappings => _host != null;

    /// <summary>Pages currently allocated by vmalloc (VmallocUsed in pages).</summary>
    public long VmallocPages => Interlocked.Read(ref _stats->VmallocPages);

    /// <summary>The native counters an out-of-process inspector reads (SystemDescriptor.Vmalloc).</summary>
    internal VmallocStats* NativeStats => _stats;

    /// <summary>Lazy purges done so far.</summary>
    public long Purges => Interlocked.Read(ref _purges);

    /// <summary>Requests that found no address range or no pages.</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>Pages of freed areas whose address ranges still wait for the purge.</summary>
    public long LazyPages { get { lock (_lock) return _lazyPages; } }

    /// <summary>Number of busy areas (unpurged ones included).</summary>
    public long BusyAreas { get { lock (_lock) return _busy.Count; } }

    /// <summary>Number of free blocks of address space.</summary>
    public long FreeBlocks { get { lock (_lock) return _free.Count; } }

    /// <summary>True when <paramref name="address"/> lies in the vmalloc range (is_vmalloc_addr).</summary>
    public static bool IsVmallocAddr(ulong address) => address >= VmallocStart && address < VmallocEnd;

    private VmapArea* NewArea(ulong start, ulong end)
    {
        var area = (VmapArea*)_areaCache.Alloc(Gfp.Kernel);
        if (area == null) return null;
        *area = default;
        area->Start = start;
        area->End = end;
        area->Node = -1;
        return area;
    }

    /// <summary>
    /// Reserves <paramref name="size"/> bytes (a page multiple, guard page included) at <paramref name="align"/>
    /// (alloc_vmap_area). Purges lazily freed ranges once when nothing fits. Returns null when the range is exhausted.
    /// </summary>
    private VmapArea* AllocVmapArea(ulong size, ulong align, VmAreaFlags flags)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            for (int attempt = 0; attempt < 2; attempt++)
            {
                ulong length = align > PageSize ? size + align - 1 : size;
                if (length < size) return null;
                VmapArea* block = _free.LowestMatch(size, align, length, VmallocStart, VmallocEnd);
                if (block != null)
                {
                    ulong start = (Math.Max(block->Start, VmallocStart) + align - 1) & ~(align - 1);
                    VmapArea* busy = NewArea(start, start + size);
                    if (busy == null) return null;
                    // Cutting the area out of the middle of a free block leaves two blocks: the second record is
                    // taken before anything changes, so running out of memory leaves both trees as they were
                    // (the kernel's ne_fit_preload).
                    VmapArea* rest = null;
                    if (start > block->Start && start + size < block->End)
                    {
                        rest = NewArea(start + size, block->End);
                        if (rest == null)
                        {
                            _areaCache.Free(busy);
                            return null;
                        }
                    }
                    Carve(block, start, start + size, rest);
                    busy->Flags = flags;
                    _busy.Insert(busy);
                    return busy;
                }
                if (_lazy == null) break;
                PurgeLocked();
            }
            return null;
        }
    }

    /// <summary>
    /// Takes [start, end) out of free block <paramref name="block"/>, keeping what is left on either side;
    /// <paramref name="rest"/> is the record for what is left above when both sides are (null otherwise).
    /// </summary>
    private void Carve(VmapArea* block, ulong start, ulong end, VmapArea* rest)
    {
        bool left = start > block->Start;
        bool right = end < block->End;
        if (!left && !right)
        {
            _free.Remove(block);
            _areaCache.Free(block);
        }
        else if (!left)
        {
            block->Start = end;
            _free.Refresh(block);
        }
        else if (!right)
        {
            block->End = start;
            _free.Refresh(block);
        }
        else
        {
            block->End = start;
            _free.Refresh(block);
            _free.Insert(rest);
        }
    }

    /// <summary>Returns [start, end) to the free tree, merging with free neighbours (merge_or_add_vmap_area).</summary>
    private void ReleaseRange(VmapArea* area)
    {
        ulong start = area->Start, end = area->End;
        VmapArea* before = _free.Floor(start);
        VmapArea* after = _free.Ceiling(start);
        bool mergeBefore = before != null && before->End == start;
        bool mergeAfter = after != null && after->Start == end;
        if (mergeBefore && mergeAfter)
        {
            ulong afterEnd = after->End;
            _free.Remove(after);
            _areaCache.Free(after);
            before->End = afterEnd;
            _free.Refresh(before);
            _areaCache.Free(area);
        }
        else if (mergeBefore)
        {
            before->End = end;
            _free.Refresh(before);
            _areaCache.Free(area);
        }
        else if (mergeAfter)
        {
            after->Start = start;
            _free.Refresh(after);
            _areaCache.Free(area);
        }
        else
        {
            area->Flags = VmAreaFlags.None;
            area->Pages = null;
            area->NrPages = 0;
            area->Order = 0;
            _free.Insert(area);
        }
    }

    /// <summary>
    /// Gives every lazily freed range back to the free space after one TLB flush over their span
    /// (__purge_vmap_area_lazy). Happens on its own when lazy pages pass lazy_max_pages or when nothing fits.
    /// </summary>
    public void PurgeVmapAreas()
    {
        lock (_lock) PurgeLocked();
    }

    private void PurgeLocked()
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        if (_lazy == null) return;
        ulong min = ulong.MaxValue, max = 0;
        for (VmapArea* a = _lazy; a != null; a = a->NextLazy)
        {
            min = Math.Min(min, a->Start);
            max = Math.Max(max, a->End);
        }
        _kernel.FlushTlbRange(min, max);
        VmapArea* list = _lazy;
        _lazy = null;
        _lazyPages = 0;
        while (list != null)
        {
            VmapArea* next = list->NextLazy;
            list->NextLazy = null;
            _busy.Remove(list);
            ReleaseRange(list);
            list = next;
        }
        Interlocked.Increment(ref _purges);
    }

    /// <summary>
    /// Checks the invariants (tests run it): both trees are ordered, balanced and counted right, the free tree's
    /// largest-block values are current, and busy areas (lazily freed ones included) and free blocks tile the vmalloc
    /// range exactly: Σ busy + Σ free = VmallocSize, with no gap and no overlap; VmallocPages = Σ pages of live vmalloc areas.
    /// </summary>
    internal void CheckConsistency()
    {
        lock (_lock)
        {
            _busy.Check();
            _free.Check();
            var ranges = new List<(ulong Start, ulong End, bool Busy)>();
            _busy.InOrder(p => ranges.Add((((VmapArea*)p)->Start, ((VmapArea*)p)->End, true)));
            _free.InOrder(p => ranges.Add((((VmapArea*)p)->Start, ((VmapArea*)p)->End, false)));
            ranges.Sort((a, b) => a.Start.CompareTo(b.Start));
            ulong at = VmallocStart;
            foreach (var (start, end, busy) in ranges)
            {
                if (start != at)
                    throw new InvalidOperationException($"vmalloc: {(busy ? "busy area" : "free block")} 0x{start:x}-0x{end:x} starts at 0x{start:x}, the previous range ended at 0x{at:x}.");
                at = end;
            }
            if (at != VmallocEnd) throw new InvalidOperationException($"vmalloc: the ranges end at 0x{at:x}, not at VMALLOC_END 0x{VmallocEnd:x}.");
            long pages = 0;
            _busy.InOrder(p =>
            {
                var a = (VmapArea*)p;
                if ((a->Flags & (VmAreaFlags.Alloc | VmAreaFlags.Unpurged)) == VmAreaFlags.Alloc) pages += a->NrPages;
            });
            if (pages != VmallocPages) throw new InvalidOperationException($"vmalloc: live vmalloc areas hold {pages} pages, VmallocPages is {VmallocPages}.");
        }
    }

    /// <summary>Gives the address space, every remaining page and its area records back. Areas still allocated are freed.</summary>
    public void Dispose()
    {
        ShutRcu();
        lock (_lock)
        {
            if (_disposed) return;
            var busy = new List<nint>();
            _busy.InOrder(p => busy.Add(p));
            foreach (nint p in busy)
            {
                var area = (VmapArea*)p;
                if ((area->Flags & VmAreaFlags.Unpurged) == 0) TearDown(area);
            }
            PurgeLocked();
            foreach (nint p in busy)
            {
                var area = (VmapArea*)p;
                if (_busy.Find(area->Start) == area) { _busy.Remove(area); ReleaseRange(area); }
            }
            // The records of the free space live in the slab layer, which outlives this allocator.
            var free = new List<nint>();
            _free.InOrder(p => free.Add(p));
            foreach (nint p in free)
            {
                _free.Remove((VmapArea*)p);
                _areaCache.Free((VmapArea*)p);
            }
            _areaCache.Destroy();
            _disposed = true;
        }
        _host?.Dispose();
    }
}

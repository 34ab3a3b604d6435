using System.Runtime.CompilerServices;
using System.Numerics;
using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Vmalloc;

public sealed unsafe partial class VmallocAllocator
{
    private readonly Slab.CallSiteTable _callSites = new();

    /// <summary>Allocates <paramref name="size"/> bytes of virtually contiguous memory (vmalloc). Returns the kernel address, or 0.</summary>
    public ulong Vmalloc(ulong size, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => VmallocNodeRange(size, PageSize, Gfp.Kernel, -1, allowHuge: false, _callSites.Intern(caller, callerFile, callerLine));

    /// <summary>Allocates zeroed memory (vzalloc).</summary>
    public ulong Vzalloc(ulong size, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => VmallocNodeRange(size, PageSize, Gfp.Kernel | Gfp.Zero, -1, allowHuge: false, _callSites.Intern(caller, callerFile, callerLine));

    /// <summary>Allocates with pages from <paramref name="node"/> (vmalloc_node).</summary>
    public ulong VmallocNode(ulong size, int node, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => VmallocNodeRange(size, PageSize, Gfp.Kernel, node, allowHuge: false, _callSites.Intern(caller, callerFile, callerLine));

    /// <summary>
    /// Allocates <paramref name="size"/> bytes at a power-of-two <paramref name="align"/> with pages allocated with
    /// <paramref name="gfp"/> (__vmalloc_node_range). Returns 0 quickly, leaving everything as it was, when the size or
    /// alignment cannot be met or memory runs out.
    /// </summary>
    /// <exception cref="ArgumentException"><see cref="Gfp.NoFail"/> without <see cref="Gfp.DirectReclaim"/>.</exception>
    public ulong Vmalloc(ulong size, ulong align, Gfp gfp, int node = -1, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => VmallocNodeRange(size, align, gfp, node, allowHuge: false, _callSites.Intern(caller, callerFile, callerLine));

    /// <summary>
    /// Allocates <paramref name="size"/> bytes that may be mapped with 2 MiB page-table entries (vmalloc_huge /
    /// vmalloc_huge_node, VM_ALLOW_HUGE_VMAP). From 2 MiB (PMD_SIZE) up, the area is rounded up to a 2 MiB multiple
    /// and 2 MiB aligned (plus the usual guard page), backed by order-9 blocks split into order-0 pages (so
    /// <see cref="VmallocToPage"/>, <see cref="Vfree"/> and the per-page bookkeeping work on 4 KiB pages as usual),
    /// and each 2 MiB block is mapped by one PMD entry. Smaller requests, and requests for which no order-9 block can
    /// be had, get ordinary order-0 pages and 4 KiB mappings instead (the kernel's fallback).
    /// </summary>
    /// <param name="size">Bytes wanted; the area may be larger (see <see cref="AreaSize"/>).</param>
    /// <param name="gfp">Allocation flags for the pages; order-9 attempts add NoWarn and NoRetry and drop NoFail.</param>
    /// <param name="node">Preferred node of the pages; -1 for the current one.</param>
    /// <param name="caller">Filled in by the compiler: the calling member, shown as the area's caller in vmallocinfo.</param>
    /// <param name="callerFile">Filled in by the compiler: the calling source file.</param>
    /// <param name="callerLine">Filled in by the compiler: the calling line.</param>
    /// <returns>The kernel address of the area, or 0 when the range or memory runs out.</returns>
    public ulong VmallocHuge(ulong size, Gfp gfp = Gfp.Kernel, int node = -1, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => VmallocNodeRange(size, PageSize, gfp, node, allowHuge: true, _callSites.Intern(caller, callerFile, callerLine));

    private ulong VmallocNodeRange(ulong size, ulong align, Gfp gfp, int node, bool allowHuge, int callSite)
    {
        gfp.ThrowIfNoFailCannotBlock(); // here, not at the first page, so that no area is reserved for a refused request
        if (size == 0 || size > VmallocSize - PageSize || align == 0 || !BitOperations.IsPow2(align) || align > VmallocSize)
            return Fail();
        align = Math.Max(align, PageSize);
        if (allowHuge && size >= VirtualAddress.PmdSize)
        {
            ulong hugeSize = (size + VirtualAddress.PmdSize - 1) & ~(VirtualAddress.PmdSize - 1);
            ulong huge = AllocAndMapArea(hugeSize, Math.Max(align, VirtualAddress.PmdSize), gfp, node, VirtualAddress.HugePageOrder, callSite);
            if (huge != 0) return huge;
            // No order-9 blocks (or no 2 MiB-aligned range): start over with order-0 pages, the real size and alignment.
        }
        ulong address = AllocAndMapArea(size, align, gfp, node, 0, callSite);
        return address != 0 ? address : Fail();
    }

    /// <summary>
    /// Reserves an area for <paramref name="size"/> bytes, fills it with pages of <paramref name="order"/> (split into
    /// order-0 pages) and maps it (__vmalloc_area_node). Returns 0, with everything as it was, on failure.
    /// </summary>
    private ulong AllocAndMapArea(ulong size, ulong align, Gfp gfp, int node, int order, int callSite)
    {
        long nrPages = (long)((size + PageSize - 1) / PageSize);
        VmapArea* area = AllocVmapArea((ulong)nrPages * PageSize + PageSize, align, VmAreaFlags.Alloc);
        if (area == null) return 0;
        area->CallSite = callSite;
        area->Node = node;
        var pages = (PageFrame**)AllocPageArray(nrPages);
        if (pages == null) return ReleaseUnusedArea(area);
        if (!AllocAreaPages(pages, nrPages, gfp, node, order))
        {
            FreePageArray(pages, nrPages);
            return ReleaseUnusedArea(area);
        }
        // Recently freed pages come back newest first, so a vfree'd area's pages return in descending order: sorted,
        // each physically contiguous run becomes one host mapping instead of one mmap per page.
        if (_host != null && order == 0) new Span<nint>(pages, (int)nrPages).Sort();
        area->Pages = pages;
        area->NrPages = (int)nrPages;
        area->Order = order;
        if (Kasan != null) KasanPoisonTail(pages[nrPages - 1], size);
        try
        {
            MapAreaPages(area, PteFlags.PageKernel);
        }
        catch (OutOfMemoryException)
        {
            _kernel.UnmapKernelRange(area->Start, (ulong)nrPages * PageSize);
            for (long j = 0; j < nrPages; j++) _pages.FreePages(pages[j], 0);
            FreePageArray(pages, nrPages);
            area->Pages = null;
            return ReleaseUnusedArea(area);
        }
        if (order > 0) area->Flags |= VmAreaFlags.Huge;
        _host?.Map(area);
        Interlocked.Add(ref _stats->VmallocPages, nrPages);
        return area->Start;
    }

    /// <summary>
    /// Fills <paramref name="pages"/> with <paramref name="nrPages"/> order-0 frames, taken as blocks of
    /// 2^<paramref name="order"/> pages that are split (vm_area_alloc_pages: huge vmalloc pages are split, not
    /// compound, so each 4 KiB page stands alone). All or nothing.
    /// </summary>
    private bool AllocAreaPages(PageFrame** pages, long nrPages, Gfp gfp, int node, int order)
    {
        Gfp pageGfp = (gfp & ~Gfp.Comp) | Gfp.NoWarn;
        // __vmalloc_area_node: vmalloc's pages are reached through its own mapping, so they may be high memory.
        if ((gfp & (Gfp.Dma | Gfp.Dma32)) == 0) pageGfp |= Gfp.HighMem;
        if (order > 0) pageGfp = (pageGfp & ~Gfp.NoFail) | Gfp.NoRetry;
        long step = 1L << order;
        for (long i = 0; i < nrPages; i += step)
        {
            PageFrame* page = _pages.AllocPagesNode(node, pageGfp, order);
            if (page == null)
            {
                for (long j = 0; j < i; j++) _pages.FreePages(pages[j], 0);
                return false;
            }
            if (order > 0) _pages.SplitPage(page, order);
            for (long k = 0; k < step; k++) pages[i + k] = page + k;
        }
        return true;
    }

    /// <summary>
    /// Maps an area's pages: 4 KiB entries for order 0; for order 9 one PMD entry per 2 MiB block, or 4 KiB entries for
    /// a block whose PMD slot is still taken by a page table in use (vmap_pmd_range falling back to vmap_pte_range).
    /// </summary>
    private void MapAreaPages(VmapArea* area, PteFlags prot)
    {
        if (area->Order == 0)
        {
            _kernel.MapKernelPages(area->Start, new ReadOnlySpan<nint>(area->Pages, area->NrPages), prot);
            return;
        }
        int block = 1 << area->Order;
        for (int i = 0; i < area->NrPages; i += block)
        {
            ulong va = area->Start + (ulong)i * PageSize;
            if (!_kernel.MapKernelHugePmd(va, area->Pages[i], prot))
                _kernel.MapKernelPages(va, new ReadOnlySpan<nint>(area->Pages + i, block), prot);
        }
    }

    /// <summary>Frees memory from <see cref="Vmalloc(ulong, string, string, int)"/> (vfree); 0 is ignored. Throws for an address that is not a live vmalloc area.</summary>
    public void Vfree(ulong address)
    {
        if (address == 0) return;
        Release(address, VmAreaFlags.Alloc, "vfree");
    }

    /// <summary>
    /// Maps caller-owned pages (PageFrame* entries) into one virtually contiguous range with protection
    /// <paramref name="prot"/> (vmap). The pages stay the caller's. Returns the address, or 0.
    /// </summary>
    public ulong Vmap(ReadOnlySpan<nint> pages, PteFlags prot = PteFlags.PageKernel, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => MapCallerPages(pages, prot, VmAreaFlags.Map, copies: 1, node: -1, _callSites.Intern(caller, callerFile, callerLine));

    /// <summary>Removes a mapping made by <see cref="Vmap"/> (vunmap); the pages are not freed.</summary>
    public void Vunmap(ulong address) => Release(address, VmAreaFlags.Map, "vunmap");

    /// <summary>Maps pages like vmap for short-lived use (vm_map_ram). Returns the address, or 0.</summary>
    public ulong VmMapRam(ReadOnlySpan<nint> pages, int node = -1, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => MapCallerPages(pages, PteFlags.PageKernel, VmAreaFlags.MapRam, copies: 1, node, _callSites.Intern(caller, callerFile, callerLine));

    /// <summary>Removes a <see cref="VmMapRam"/> mapping of <paramref name="count"/> pages (vm_unmap_ram).</summary>
    public void VmUnmapRam(ulong address, int count)
    {
        lock (_lock)
        {
            VmapArea* area = _busy.Find(address);
            if (area != null && area->Start == address && (area->Flags & VmAreaFlags.MapRam) != 0 && area->NrPages != count)
                throw new ArgumentException($"vm_unmap_ram: 0x{address:x} maps {area->NrPages} pages, not {count}.", nameof(count));
        }
        Release(address, VmAreaFlags.MapRam, "vm_unmap_ram");
    }

    /// <summary>
    /// Maps the same pages twice back to back (the kernel's BPF ring buffer trick): a reader or writer that runs past
    /// the end of the first copy lands at the start of the same pages, so a record never has to wrap.
    /// </summary>
    public ulong VmapRing(ReadOnlySpan<nint> pages, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
        => MapCallerPages(pages, PteFlags.PageKernel, VmAreaFlags.Map | VmAreaFlags.Ring, copies: 2, node: -1, _callSites.Intern(caller, callerFile, callerLine));

    private ulong MapCallerPages(ReadOnlySpan<nint> pages, PteFlags prot, VmAreaFlags flags, int copies, int node, int callSite)
    {
        if (pages.Length == 0) return Fail();
        foreach (nint p in pages)
        {
            if (p == 0 || _memory.PfnToPage(((PageFrame*)p)->Pfn) != (PageFrame*)p)
                throw new ArgumentException($"vmap: 0x{p:x} is not a page frame of this memory system.", nameof(pages));
        }
        long mapped = (long)pages.Length * copies;
        VmapArea* area = AllocVmapArea((ulong)mapped * PageSize + PageSize, PageSize, flags);
        if (area == null) return Fail();
        area->CallSite = callSite;
        area->Node = node;
        var array = (PageFrame**)AllocPageArray(mapped);
        if (array == null) return AbortArea(area);
        for (int c = 0; c < copies; c++)
            for (int i = 0; i < pages.Length; i++) array[c * pages.Length + i] = (PageFrame*)pages[i];
        area->Pages = array;
        area->NrPages = (int)mapped;
        try
        {
            _kernel.MapKernelPages(area->Start, new ReadOnlySpan<nint>(array, (int)mapped), prot);
        }
        catch (OutOfMemoryException)
        {
            FreePageArray(array, mapped);
            area->Pages = null;
            return AbortArea(area);
        }
        _host?.Map(area);
        return area->Start;
    }

    private void Release(ulong address, VmAreaFlags kind, string operation)
    {
        VmapArea* area;
        MemoryCorruptionException? misuse;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            area = _busy.Find(address);
            misuse =
                area == null || area->Start != address ? new MemoryCorruptionException($"{operation}: 0x{address:x} is not the start of a vmalloc area"
                    + (area == null ? "." : $" (it lies inside the area at 0x{area->Start:x})."), (nuint)address) :
                (area->Flags & VmAreaFlags.Unpurged) != 0 ? new MemoryCorruptionException($"{operation}: double free of the area at 0x{address:x}.", (nuint)address) :
                (area->Flags & kind) == 0 ? new MemoryCorruptionException(
                    $"{operation}: the area at 0x{address:x} was created by {Describe(area->Flags)}, not {operation}'s counterpart.", (nuint)address) :
                null;
            if (misuse == null) area->Flags |= VmAreaFlags.Unpurged;
        }
        // Reported outside the lock: a report's handlers may use vmalloc themselves.
        if (misuse != null) throw _pages.ReportMisuse(misuse);
        TearDown(area);
    }

    /// <summary>Unmaps an area, frees its pages if it owns them, and queues its range for the lazy purge.</summary>
    private void TearDown(VmapArea* area)
    {
        long mapped = area->NrPages;
        if (mapped > 0) _kernel.UnmapKernelRange(area->Start, (ulong)mapped * PageSize);
        _host?.Unmap(area);
        if ((area->Flags & VmAreaFlags.Alloc) != 0)
        {
            for (long i = 0; i < mapped; i++) _pages.FreePages(area->Pages[i], 0);
            Interlocked.Add(ref _stats->VmallocPages, -mapped);
        }
        if (area->Pages != null) FreePageArray(area->Pages, mapped);
        area->Pages = null;
        lock (_lock)
        {
            area->Flags |= VmAreaFlags.Unpurged;
            area->NextLazy = _lazy;
            _lazy = area;
            _lazyPages += area->End > area->Start ? (long)((area->End - area->Start) / PageSize) : 0;
            if (_lazyPages > _lazyMaxPages) PurgeLocked();
        }
    }

    private ulong AbortArea(VmapArea* area)
    {
        ReleaseUnusedArea(area);
        return Fail();
    }

    /// <summary>Gives back the range of an area that never got mapped (nothing to purge); returns 0.</summary>
    private ulong ReleaseUnusedArea(VmapArea* area)
    {
        lock (_lock)
        {
            _busy.Remove(area);
            ReleaseRange(area);
        }
        return 0;
    }

    private ulong Fail()
    {
        Interlocked.Increment(ref _failures);
        return 0;
    }

    private void* AllocPageArray(long count)
    {
        nuint bytes = (nuint)count * (nuint)sizeof(nint);
        return bytes <= Slab.SlabAllocator.KmallocMaxCacheSize ? _slab.Kmalloc(bytes, Gfp.Kernel | Gfp.NoWarn) : NativeMemory.Alloc(bytes);
    }

    private void FreePageArray(void* array, long count)
    {
        nuint bytes = (nuint)count * (nuint)sizeof(nint);
        if (bytes <= Slab.SlabAllocator.KmallocMaxCacheSize) _slab.Kfree(array);
        else NativeMemory.Free(array);
    }

    private static string Describe(VmAreaFlags flags)
        => (flags & VmAreaFlags.Alloc) != 0 ? "vmalloc" : (flags & VmAreaFlags.MapRam) != 0 ? "vm_map_ram" : "vmap";

    /// <summary>The page mapped at a vmalloc address, or null (vmalloc_to_page).</summary>
    public PageFrame* VmallocToPage(ulong address) => IsVmallocAddr(address) ? _kernel.TranslateToPage(address) : null;

    /// <summary>The pfn mapped at a vmalloc address, or <see cref="ulong.MaxValue"/> (vmalloc_to_pfn).</summary>
    public ulong VmallocToPfn(ulong address) => IsVmallocAddr(address) ? _kernel.TranslateToPfn(address) : ulong.MaxValue;

    /// <summary>
    /// Size in bytes of the live area starting at <paramref name="address"/> (without the guard page), or 0. Like
    /// ksize, it makes the whole area usable: with KASAN on the tail past the requested size is unpoisoned.
    /// </summary>
    public ulong AreaSize(ulong address)
    {
        lock (_lock)
        {
            VmapArea* area = _busy.Find(address);
            if (area == null || area->Start != address || (area->Flags & VmAreaFlags.Unpurged) != 0) return 0;
            if (Kasan != null && area->Pages != null && area->NrPages > 0) Kasan.Unpoison(_pages.AddressOf(area->Pages[area->NrPages - 1]), (nuint)PageSize);
            return (ulong)area->NrPages * PageSize;
        }
    }

    /// <summary>
    /// Allocates with kmalloc when it can, else vmalloc (kvmalloc). The result is a host pointer (as an address) for
    /// kmalloc memory or a vmalloc address; <see cref="Kvfree"/> tells them apart.
    /// </summary>
    public ulong Kvmalloc(ulong size, Gfp gfp = Gfp.Kernel, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
    {
        if (size <= (ulong)Slab.SlabAllocator.KmallocMaxCacheSize * 2)
        {
            void* p = _slab.Kmalloc((nuint)size, gfp | Gfp.NoWarn | (size > PageSize ? Gfp.NoRetry : 0));
            if (p != null) return (ulong)p;
        }
        return VmallocNodeRange(size, PageSize, gfp, -1, allowHuge: false, _callSites.Intern(caller, callerFile, callerLine));
    }

    /// <summary>Frees memory from <see cref="Kvmalloc"/> (kvfree).</summary>
    public void Kvfree(ulong address)
    {
        if (IsVmallocAddr(address)) Vfree(address);
        else _slab.Kfree((void*)address);
    }

    /// <summary>
    /// Zeroes memory from <see cref="Kvmalloc"/> and frees it (kvfree_sensitive): the whole vmalloc area, or the
    /// kmalloc block's usable size (<see cref="Slab.SlabAllocator.KfreeSensitive"/>), whatever the checked modes.
    /// A pointer that is not a live allocation throws and nothing is zeroed.
    /// </summary>
    public void KvfreeSensitive(ulong address)
    {
        if (!IsVmallocAddr(address))
        {
            _slab.KfreeSensitive((void*)address);
            return;
        }
        ulong size = AreaSize(address);
        if (size != 0) _kernel.Memset(address, 0, (long)size);
        Vfree(address); // a dead or foreign address (size 0) is refused here
    }

    /// <summary>
    /// Resizes a vmalloc area (vrealloc): in place while the new size fits its pages (zeroing what is given up),
    /// otherwise allocate, copy through the MMU, free. Returns 0 and leaves the old area intact on failure.
    /// </summary>
    public ulong Vrealloc(ulong address, ulong newSize, Gfp gfp = Gfp.Kernel, [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "", [CallerLineNumber] int callerLine = 0)
    {
        if (address == 0) return VmallocNodeRange(newSize, PageSize, gfp, -1, allowHuge: false, _callSites.Intern(caller, callerFile, callerLine));
        if (newSize == 0)
        {
            Vfree(address);
            return 0;
        }
        ulong old = AreaSize(address);
        if (old == 0) throw _pages.ReportMisuse(new MemoryCorruptionException($"vrealloc: 0x{address:x} is not a live vmalloc area.", (nuint)address));
        if (newSize <= old)
        {
            _kernel.Memset(address + newSize, 0, (long)(old - newSize));
            return address;
        }
        ulong fresh = VmallocNodeRange(newSize, PageSize, gfp, -1, allowHuge: false, _callSites.Intern(caller, callerFile, callerLine));
        if (fresh == 0) return 0;
        VirtualAddressSpace.Memcpy(_kernel, fresh, _kernel, address, (long)old);
        Vfree(address);
        return fresh;
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Kasan;
using Allocators.Physical;

namespace Allocators.Slab;

public sealed unsafe partial class SlabAllocator
{
    /// <summary>The arena's KASAN shadow when the checked mode is on; otherwise null.</summary>
    private readonly KasanShadow? _kasan;

    /// <summary>The arena's KASAN shadow when the checked mode is on, for the views other layers hand out; otherwise null.</summary>
    internal KasanShadow? Kasan => _kasan;

    /// <summary>The slab layer's part of KASAN: describing slab addresses, naming call sites, and taking blocks back from the quarantine.</summary>
    private void KasanAttach(KasanShadow kasan)
    {
        kasan.AddDescriber(KasanDescribe);
        kasan.Caller ??= () => CallerName.Of(new StackTrace(0, fNeedFileInfo: false));
        kasan.Quarantine.Release = KasanRelease;
    }

    private string? KasanDescribe(nuint address)
    {
        PageFrame* page = KmemCache.SlabOf(_memory, (void*)address);
        if (page == null || !page->Has(PageFlags.Slab)) return null;
        return KmemCache.FromData(SlabPage.Cache(page)).KasanDescribe(page, address);
    }

    private void KasanRelease(nint owner, nint obj)
    {
        if (owner != 0)
        {
            // A cache that is gone (its handle released) has no one to give the object to: it stays with its slab.
            nint handle = ((KmemCacheData*)owner)->Handle;
            if (handle != 0 && GCHandle.FromIntPtr(handle).Target is KmemCache cache) cache.KasanRelease((void*)obj);
            return;
        }
        FreeLargeKmalloc((void*)obj, KmemCache.SlabOf(_memory, (void*)obj), null);
    }

    /// <summary>A large kmalloc is accessible up to <paramref name="size"/>; the rest of its pages is red zone (kasan_kmalloc_large).</summary>
    private void KasanLargeResize(void* p, nuint size)
    {
        PageFrame* head = KmemCache.SlabOf(_memory, p);
        _kasan!.Poison(p, (nuint)PageFrame.PageSize << head->Order, KasanShadowCode.PageRedZone);
        _kasan.Unpoison(p, size);
    }

    /// <summary>kfree of a large kmalloc with KASAN on: a freed block is a double free; otherwise poisoned and quarantined.</summary>
    private void KasanQuarantineLarge(void* p, PageFrame* head)
    {
        try
        {
            _pages.CheckFreeable(head, head->Order);
        }
        catch (BadPageException e)
        {
            throw new BadPageException($"kfree: 0x{(nuint)p:x}: {e.Message}", e.Pfn, e.PageState, (nuint)p);
        }
        if (!_kasan!.TryClaimFree(p, KasanShadowCode.PageFree))
        {
            _kasan.ReportFree("double-free", p, CallerName.Of(new StackTrace(0, fNeedFileInfo: false)));
            throw _pages.ReportMisuse(new BadPageException($"kfree: 0x{(nuint)p:x} was already freed (in KASAN's quarantine).", head->Pfn, head->Describe(), (nuint)p));
        }
        nuint bytes = (nuint)PageFrame.PageSize << head->Order;
        _kasan.Poison(p, bytes, KasanShadowCode.PageFree);
        _kasan.Quarantine.Put((QuarantineLink*)p, 0, p, (long)bytes);
    }
}

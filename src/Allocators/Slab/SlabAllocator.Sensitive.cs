using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Slab;

public sealed unsafe partial class SlabAllocator
{
    /// <summary>
    /// Zeroes a kmalloc allocation's whole usable size (<see cref="Ksize"/>) and frees it (kfree_sensitive), whatever
    /// the checked modes: for keys and passwords, whose bytes must not outlive them in free memory. Null and
    /// <see cref="ZeroSizePointer"/> are ignored; a pointer that is not a live kmalloc allocation throws (as
    /// <see cref="Kfree(void*)"/> does) and nothing is zeroed.
    /// </summary>
    public void KfreeSensitive(void* p)
    {
        if ((nuint)p <= 16) return;
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        KmemCache.Enter(ctx);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            PageFrame* page = KmemCache.SlabOf(_memory, p);
            nuint size;
            if (page != null && page->Has(PageFlags.Slab))
            {
                KmemCache cache = KmemCache.FromData(SlabPage.Cache(page));
                cache.CheckLiveObject(page, p, "kfree_sensitive");
                size = (nuint)cache.ObjectSize;
                // The bytes past a debug kmalloc's requested size are its red zone: like ksize, declare the whole
                // object in use (skip_orig_size_check) so that the free does not report the zeroes written there.
                cache.ResizeInPlace(p, cache.OriginalSize(p), cache.ObjectSize, zero: false);
            }
            else
            {
                if (!IsLargeKmallocStart(p, page)) ThrowBadKfree(p, page);
                size = (nuint)PageFrame.PageSize << page->Order;
            }
            NativeMemory.Clear(p, size);
        }
        finally
        {
            KmemCache.Exit(ctx);
        }
        Kfree(p);
    }
}

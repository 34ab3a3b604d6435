using System.Diagnostics;
using System.Globalization;
using System.Text;
using Allocators.Common;
using Allocators.Kasan;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    // KASAN: with the shadow on, every cache is served by the locked debug path (KmemCacheData.FastPath = 0), keeps
    // both tracks, a red zone of at least KasanRedZone bytes after each object and a quarantine link in each slot.
    // A new slab is all red zone; an allocation unpoisons exactly the requested size; a free poisons the object and
    // parks it in the quarantine, which gives it back to the slab later (KasanRelease).

    /// <summary>The arena's KASAN shadow when the checked mode is on; otherwise null.</summary>
    private readonly KasanShadow? _kasan;

    /// <summary>Allocation and free sites are captured for the tracks: StoreUser, or KASAN with its stack traces on (set once, with the sizes).</summary>
    private bool _recordsSites;

    /// <summary>A new slab is one red zone until its objects are allocated (kasan_poison_slab).</summary>
    private void KasanNewSlab(byte* bytes)
    {
        bool debug = (_d->Flags & (int)SlabFlags.Debug) != 0;
        for (int i = 0; i < _d->Objects; i++)
        {
            byte* obj = bytes + (long)i * _d->Size + _d->RedLeftPad;
            // No quarantine link from the pages' earlier life: an inspector takes a slot whose link names itself as quarantined.
            NativeMemoryClear(obj + _d->KasanOffset, sizeof(QuarantineLink));
            if (debug) continue;
            NativeMemoryClear(obj + _d->TrackOffset, 2 * sizeof(Track));
            if (_d->OrigSizeOffset >= 0) *(uint*)(obj + _d->OrigSizeOffset) = (uint)_d->ObjectSize;
        }
        _kasan!.Poison(bytes, (nuint)PageFrame.PageSize << _d->Order, KasanShadowCode.SlabRedZone);
    }

    private static void NativeMemoryClear(byte* p, int bytes) => System.Runtime.InteropServices.NativeMemory.Clear(p, (nuint)bytes);

    /// <summary>krealloc in place: the object is accessible up to <paramref name="newSize"/> and red zone after it.</summary>
    private void KasanResize(byte* p, int newSize)
    {
        _kasan!.Poison(p, (nuint)AlignUp(_d->ObjectSize, WordSize), KasanShadowCode.SlabRedZone);
        _kasan.Unpoison(p, (nuint)newSize);
    }

    /// <summary>ksize of a live object makes the whole object accessible (kernel semantics); a freed one is a use after free.</summary>
    internal void KasanKsize(void* obj, string function)
    {
        _kasan!.Check(obj, 1, write: false, function);
        _kasan.Unpoison(obj, (nuint)_d->ObjectSize);
    }

    /// <summary>
    /// The KASAN half of a free (kasan_slab_free): a freed or never-allocated object is a double free (reported, and the
    /// slab layer's exception thrown); otherwise the object is poisoned, its free track recorded and it waits in the
    /// quarantine. True when it went there (always, unless reported).
    /// </summary>
    private bool KasanQuarantine(PageFrame* slab, void* obj)
    {
        int site = _recordsSites ? _owner.CallSites.Capture() : 0;
        KmemCacheNode* n = NodeOf(slab);
        bool claimed;
        // Under the node lock, as FreeDebug: Validate, which holds it, sees a quarantined object either still live or
        // with its free patterns, never half way.
        NativeSpinLock.Acquire(&n->ListLock);
        try
        {
            claimed = _kasan!.TryClaimFree(obj, KasanShadowCode.SlabFreeTrack);
            if (claimed)
            {
                _kasan.Poison(obj, (nuint)AlignUp(_d->ObjectSize, WordSize), KasanShadowCode.SlabFreeTrack);
                // free_debug_processing runs now, as without the quarantine: checks, free track, free patterns. Only
                // giving the object back to its slab waits (KasanRelease).
                if ((_d->Flags & (int)SlabFlags.Debug) != 0) CheckObject(slab, obj, active: true);
                InitOnFree(obj);
                SetTrack(obj, 1, site);
                InitObject(obj, active: false);
            }
        }
        finally
        {
            NativeSpinLock.Release(&n->ListLock);
        }
        if (!claimed)
            ThrowDoubleFree(slab, obj, _kasan.ShadowOf(obj) == KasanShadowCode.SlabRedZone ? "it was never allocated" : "it is already free (in KASAN's quarantine)");
        Interlocked.Increment(ref _d->FreeSlowPath);
        _kasan.Quarantine.Put((QuarantineLink*)((byte*)obj + _d->KasanOffset), (nint)_d, obj, _d->Size);
        return true;
    }

    /// <summary>True when an object the slab counts as allocated waits in KASAN's quarantine (it carries the free patterns already).</summary>
    private bool KasanQuarantined(void* obj) => _kasan != null && _kasan.ShadowOf(obj) == KasanShadowCode.SlabFreeTrack;

    /// <summary>Gives an object leaving the quarantine back to its slab (qlink_free); it stays poisoned until reallocated.</summary>
    internal void KasanRelease(void* obj)
    {
        PageFrame* slab = SlabOf(_memory, obj);
        int index = ObjectIndex(slab, obj);
        Debug.Assert(index >= 0, "only object starts enter the quarantine");
        FreeDebug(slab, obj, index, quarantined: true);
    }

    /// <summary>Records a KASAN <c>double-free</c> or <c>invalid-free</c> report beside the slab layer's exception, which it returns.</summary>
    private MemoryCorruptionException KasanReportFree(string type, void* obj, MemoryCorruptionException e)
    {
        _kasan?.ReportFree(type, obj, CallerName.Of(new StackTrace(0, fNeedFileInfo: false)));
        return e;
    }

    /// <summary>KASAN's description of an address in one of this cache's slabs: the nearest object, its tracks and where the address is relative to it.</summary>
    internal string KasanDescribe(PageFrame* slab, nuint address)
    {
        byte* start = SlabBase(slab) + _d->RedLeftPad;
        long offset = (long)address - (long)start;
        int index = (int)Math.Clamp(offset < 0 ? 0 : offset / _d->Size, 0, _d->Objects - 1);
        byte* obj = start + (long)index * _d->Size;
        byte? code = _kasan!.ShadowOf(obj);
        bool freed = code is KasanShadowCode.SlabFree or KasanShadowCode.SlabFreeTrack;
        int region = !freed && _d->OrigSizeOffset >= 0 ? OriginalSize(obj) : _d->ObjectSize;
        var text = new StringBuilder();
        if (_d->TrackOffset >= 0)
        {
            var tracks = (Track*)(obj + _d->TrackOffset);
            AppendKasanTrack(text, "Allocated", tracks);
            if (freed) AppendKasanTrack(text, "Freed", tracks + 1);
        }
        text.Append(CultureInfo.InvariantCulture, $"The buggy address belongs to the object at {(nuint)obj:x16}\n which belongs to the cache {Name} of size {_d->ObjectSize}\n");
        long rel = (long)address - (long)obj;
        string where = rel < 0 ? $"{-rel} bytes to the left of"
            : rel >= region ? $"{rel - region} bytes to the right of"
            : $"{rel} bytes inside of";
        text.Append(CultureInfo.InvariantCulture,
            $"The buggy address is located {where}\n {(freed ? "freed" : "allocated")} {region}-byte region [{(nuint)obj:x16}, {(nuint)obj + (nuint)region:x16})\n");
        return text.ToString();
    }

    private void AppendKasanTrack(StringBuilder text, string what, Track* track)
    {
        if (track->CallSite == 0) return;
        text.Append(CultureInfo.InvariantCulture,
            $"{what} by task {track->ThreadId} on cpu {track->Cpu} at {Environment.TickCount64 - track->Timestamp} ms ago:\n {_owner.CallSites.Name(track->CallSite)}\n\n");
    }
}

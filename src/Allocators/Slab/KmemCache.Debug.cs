using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    private readonly List<SlabReport> _reports = new();

    /// <summary>Every problem this cache has found and reported so far (oldest first).</summary>
    public IReadOnlyList<SlabReport> Reports { get { lock (_reports) return _reports.ToArray(); } }

    /// <summary>Problems found so far.</summary>
    public long CorruptionsFound => Interlocked.Read(ref _d->CorruptionsFound);

    private bool PoisonsBody => _d->Has(SlabFlags.Poison) && _ctor == null;

    /// <summary>Writes the free (0xbb, 0x6b..0xa5) or allocated (0xcc) pattern around and into an object (init_object).</summary>
    private void InitObject(void* obj, bool active)
    {
        byte* p = (byte*)obj;
        byte red = active ? SlabPoison.RedActive : SlabPoison.RedInactive;
        if (_d->Has(SlabFlags.RedZone))
        {
            NativeMemory.Fill(p - _d->RedLeftPad, (nuint)_d->RedLeftPad, red);
            NativeMemory.Fill(p + _d->ObjectSize, (nuint)(_d->InUse - _d->ObjectSize), red);
        }
        if (!active && PoisonsBody)
        {
            NativeMemory.Fill(p, (nuint)(_d->ObjectSize - 1), SlabPoison.Free);
            p[_d->ObjectSize - 1] = SlabPoison.End;
        }
    }

    /// <summary>Debug work on an object leaving its slab; the node lock is held (alloc_debug_processing).</summary>
    private void AllocDebug(PageFrame* slab, void* obj, int requestedSize, int site)
    {
        CheckObject(slab, obj, active: false);
        InitObject(obj, active: true);
        byte* p = (byte*)obj;
        if (PoisonsBody) NativeMemory.Fill(p, (nuint)_d->ObjectSize, SlabPoison.InUse);
        if (_d->OrigSizeOffset >= 0)
        {
            *(uint*)(p + _d->OrigSizeOffset) = (uint)requestedSize;
            if (_d->Has(SlabFlags.RedZone) && requestedSize < _d->ObjectSize)
                NativeMemory.Fill(p + requestedSize, (nuint)(_d->ObjectSize - requestedSize), SlabPoison.RedActive);
        }
        if (_d->TrackOffset >= 0) SetTrack(obj, 0, site);
        _kasan?.Unpoison(obj, (nuint)requestedSize);
    }

    /// <summary>Frees object <paramref name="index"/> of a debug cache with full checks (free_debug_processing), under the node lock.</summary>
    /// <remarks><paramref name="quarantined"/>: the object leaves KASAN's quarantine, and was checked, tracked and poisoned when it entered it.</remarks>
    private void FreeDebug(PageFrame* slab, void* obj, int index, bool quarantined = false)
    {
        int site = !quarantined && _recordsSites ? _owner.CallSites.Capture() : 0;
        KmemCacheNode* n = NodeOf(slab);
        PageFrame* gone = null;
        ulong* local = LocalOf(slab) + (index >> 6);
        ulong mask = 1UL << index;
        NativeSpinLock.Acquire(&n->ListLock);
        try
        {
            if ((*local & mask) != 0) ThrowDoubleFree(slab, obj, "it is already free in its slab");
            if (!quarantined)
            {
                CheckObject(slab, obj, active: true);
                InitOnFree(obj);
                if (_d->TrackOffset >= 0) SetTrack(obj, 1, site);
                InitObject(obj, active: false);
            }
            int free = SlabPage.FreeCount(slab) + 1; // read before the bit is set: in-frame bitmaps count themselves
            bool wasFull = free == 1;
            *local |= mask;
            SlabPage.SetFreeCount(slab, free);
            n->FreeObjects++;
            if (wasFull)
            {
                SlabPage.Remove(&n->Full, slab);
                n->NrFull--;
                SlabPage.Push(&n->Partial, slab);
                n->NrPartial++;
            }
            if (free == _d->Objects && NodeHasEnoughPartial(n) && n->NrPartial > 1)
            {
                UnlinkPartial(n, slab);
                UncountSlab(n, slab, _d->Objects);
                gone = slab;
            }
        }
        finally
        {
            NativeSpinLock.Release(&n->ListLock);
        }
        if (gone != null) DiscardSlab(gone);
    }

    /// <summary>The usable size of a kmalloc object: what was asked for when debugging records it, else the object size.</summary>
    internal int OriginalSize(void* obj)
        => _d->OrigSizeOffset >= 0 ? (int)*(uint*)((byte*)obj + _d->OrigSizeOffset) : _d->ObjectSize;

    /// <summary>krealloc in place: records the new size and red-zones or zeroes the tail like SLUB.</summary>
    internal void ResizeInPlace(void* obj, int oldSize, int newSize, bool zero)
    {
        byte* p = (byte*)obj;
        if (zero && newSize > oldSize) NativeMemory.Clear(p + oldSize, (nuint)(newSize - oldSize));
        if (_d->OrigSizeOffset < 0) return;
        *(uint*)(p + _d->OrigSizeOffset) = (uint)newSize;
        if (_d->Has(SlabFlags.RedZone) && newSize < _d->ObjectSize)
            NativeMemory.Fill(p + newSize, (nuint)(_d->ObjectSize - newSize), SlabPoison.RedActive);
        if (_kasan != null) KasanResize(p, newSize);
    }

    /// <summary>Checks the red zones (and the poison of a free object) and reports and restores what is wrong (check_object).</summary>
    private void CheckObject(PageFrame* slab, void* obj, bool active)
    {
        byte* p = (byte*)obj;
        byte red = active ? SlabPoison.RedActive : SlabPoison.RedInactive;
        if (_d->Has(SlabFlags.RedZone))
        {
            CheckBytes(slab, obj, p - _d->RedLeftPad, _d->RedLeftPad, red, "Left Redzone");
            if (active && _d->OrigSizeOffset >= 0)
            {
                int orig = OriginalSize(obj);
                if (orig < _d->ObjectSize) CheckBytes(slab, obj, p + orig, _d->ObjectSize - orig, SlabPoison.RedActive, "kmalloc Redzone");
            }
            CheckBytes(slab, obj, p + _d->ObjectSize, _d->InUse - _d->ObjectSize, red, "Right Redzone");
        }
        if (!active && PoisonsBody)
        {
            if (!CheckBytes(slab, obj, p, _d->ObjectSize - 1, SlabPoison.Free, "Poison"))
                return;
            CheckBytes(slab, obj, p + _d->ObjectSize - 1, 1, SlabPoison.End, "Poison");
        }
    }

    /// <summary>check_bytes_and_report: on a mismatch, reports the first bad byte and restores the range.</summary>
    private bool CheckBytes(PageFrame* slab, void* obj, byte* start, int length, byte expected, string what)
    {
        int first = -1;
        for (int i = 0; i < length; i++)
        {
            if (start[i] != expected) { first = i; break; }
        }
        if (first < 0) return true;
        int last = length - 1;
        while (last > first && start[last] == expected) last--;
        byte* fault = start + first;
        byte* end = start + last;
        var text = new StringBuilder();
        AppendHeader(text, $"{what} overwritten");
        text.Append(CultureInfo.InvariantCulture,
            $"0x{(nuint)fault:x}-0x{(nuint)end:x} @offset={(nuint)fault - (nuint)SlabBase(slab)}. First byte 0x{*fault:x2} instead of 0x{expected:x2}\n");
        AppendObjectInfo(text, slab, obj);
        text.Append(CultureInfo.InvariantCulture, $"FIX {Name}: Restoring {what} 0x{(nuint)fault:x}-0x{(nuint)end:x}=0x{expected:x2}\n");
        NativeMemory.Fill(fault, (nuint)(last - first + 1), expected);
        Record(new SlabReport(Name, $"{what} overwritten", (nuint)obj, text.ToString()));
        return false;
    }

    private void AppendHeader(StringBuilder text, string problem)
    {
        text.Append("=============================================================================\n");
        text.Append(CultureInfo.InvariantCulture, $"BUG {Name}: {problem}\n");
        text.Append("-----------------------------------------------------------------------------\n\n");
    }

    private void AppendObjectInfo(StringBuilder text, PageFrame* slab, void* obj)
    {
        if (_d->TrackOffset >= 0)
        {
            AppendTrack(text, "Allocated", (Track*)((byte*)obj + _d->TrackOffset));
            AppendTrack(text, "Freed", (Track*)((byte*)obj + _d->TrackOffset) + 1);
        }
        text.Append(CultureInfo.InvariantCulture,
            $"Slab 0x{(nuint)slab:x} pfn=0x{slab->Pfn:x} objects={_d->Objects} free={SlabPage.FreeCount(slab)} {SlabPage.Describe(SlabPage.ReadState(slab))} flags=[{slab->Flags}]\n");
        text.Append(CultureInfo.InvariantCulture, $"Object 0x{(nuint)obj:x}:");
        int dump = Math.Min(16, _d->ObjectSize);
        for (int i = 0; i < dump; i++) text.Append(CultureInfo.InvariantCulture, $" {((byte*)obj)[i]:x2}");
        text.Append('\n');
    }

    private void AppendTrack(StringBuilder text, string what, Track* track)
    {
        if (track->CallSite == 0) return;
        long age = Environment.TickCount64 - track->Timestamp;
        text.Append(CultureInfo.InvariantCulture,
            $"{what} in {_owner.CallSites.Name(track->CallSite)} age={age} cpu={track->Cpu} tid={track->ThreadId}\n");
    }

    private void SetTrack(void* obj, int which, int site)
    {
        Track* track = (Track*)((byte*)obj + _d->TrackOffset) + which;
        track->CallSite = site;
        track->ThreadId = Environment.CurrentManagedThreadId;
        track->Cpu = Thread.GetCurrentProcessorId();
        track->Timestamp = Environment.TickCount64;
    }

    /// <summary>The recorded allocation site of a live object of a StoreUser cache, or null.</summary>
    public string? AllocationSite(void* obj)
    {
        if (_d->TrackOffset < 0) return null;
        Track* track = (Track*)((byte*)obj + _d->TrackOffset);
        return track->CallSite == 0 ? null : _owner.CallSites.Name(track->CallSite);
    }

    private void Record(SlabReport report)
    {
        Interlocked.Increment(ref _d->CorruptionsFound);
        lock (_reports) _reports.Add(report);
        _owner.OnReport(report);
    }
}

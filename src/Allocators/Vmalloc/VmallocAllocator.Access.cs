using System.Buffers;
using System.Globalization;
using System.Text;
using Allocators.Common;
using Allocators.Physical;

namespace Allocators.Vmalloc;

public sealed unsafe partial class VmallocAllocator
{
    /// <summary>
    /// The real contiguous host pointer of the live area at <paramref name="address"/> (memfd arena), or null when the
    /// area has no host mapping. Valid until the area is freed.
    /// </summary>
    public byte* HostPointer(ulong address)
    {
        lock (_lock)
        {
            VmapArea* area = _busy.Find(address);
            if (area == null || (area->Flags & (VmAreaFlags.HostMapped | VmAreaFlags.Unpurged)) != VmAreaFlags.HostMapped) return null;
            return (byte*)area->HostAddress + (address - area->Start);
        }
    }

    /// <summary>The whole live area at <paramref name="address"/> as one contiguous span over its scattered frames (memfd arena only).</summary>
    /// <exception cref="InvalidOperationException">The arena is not memfd-backed, or the area lies beyond the host window.</exception>
    public Span<byte> AsSpan(ulong address)
    {
        ulong size = AreaSize(address);
        byte* p = HostPointer(address);
        if (size == 0 || p == null)
            throw new InvalidOperationException($"vmalloc: no host mapping for 0x{address:x} (needs ArenaBacking.MemFd and a live area).");
        return new Span<byte>(p, checked((int)size));
    }

    /// <summary>
    /// The area at <paramref name="address"/> as a <see cref="ReadOnlySequence{T}"/> of page-sized segments over the
    /// direct map, physically adjacent pages merged into one segment (for SequenceReader, pipelines, streams).
    /// Each page is found through the kernel page tables.
    /// </summary>
    public ReadOnlySequence<byte> AsSequence(ulong address, ulong length)
    {
        if (length == 0) return ReadOnlySequence<byte>.Empty;
        ulong size = AreaSize(address);
        if (size == 0 || length > size) throw new ArgumentOutOfRangeException(nameof(length), $"0x{address:x} holds {size} bytes.");
        DirectMapSegment? first = null, last = null;
        ulong done = 0;
        while (done < length)
        {
            PageFrame* page = _kernel.TranslateToPage(address + done);
            if (page == null) throw new InvalidOperationException($"vmalloc: 0x{address + done:x} is not mapped.");
            byte* start = _memory.AddressOf(page);
            ulong run = Math.Min(PageSize, length - done);
            // Merge pages that are physically contiguous.
            while (done + run < length)
            {
                PageFrame* next = _kernel.TranslateToPage(address + done + run);
                if (next == null || next->Pfn != page->Pfn + (uint)((run + PageSize - 1) / PageSize)) break;
                run += Math.Min(PageSize, length - done - run);
            }
            var segment = new DirectMapSegment(start, checked((int)run), (long)done);
            if (first == null) first = segment; else last!.Link(segment);
            last = segment;
            done += run;
        }
        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    /// <summary>Busy areas exactly as /proc/vmallocinfo prints them.</summary>
    public string VmallocInfo()
    {
        var sb = new StringBuilder();
        var perNode = new int[_pages.NodeCount];
        lock (_lock)
        {
            _busy.InOrder(p =>
            {
                var a = (VmapArea*)p;
                Array.Clear(perNode);
                bool counts = (a->Flags & (VmAreaFlags.Alloc | VmAreaFlags.Unpurged)) == VmAreaFlags.Alloc;
                for (int i = 0; counts && i < a->NrPages; i++) perNode[a->Pages[i]->ZoneId / PageAlloc.PageAllocator.ZonesPerNode]++;
                VmallocInfoFormat.AppendArea(sb, *a, a->CallSite != 0 ? _callSites.Name(a->CallSite) : null, counts ? perNode : []);
            });
        }
        return sb.ToString();
    }

    /// <summary>The vmalloc lines of /proc/meminfo: VmallocTotal, VmallocUsed, VmallocChunk.</summary>
    public string MeminfoLines() => MeminfoText.Format([.. MeminfoItems(VmallocPages), ("VmallocChunk", 0)]);

    /// <summary>VmallocTotal (the whole range, as the kernel prints it) and VmallocUsed for <paramref name="vmallocPages"/> pages.</summary>
    internal static (string Name, long Kb)[] MeminfoItems(long vmallocPages)
        => [("VmallocTotal", (long)((VmallocSize - 1) >> 10)), ("VmallocUsed", vmallocPages * (PageFrame.PageSize / 1024))];

    /// <summary>A sequence segment over direct-map bytes.</summary>
    private sealed class DirectMapSegment : ReadOnlySequenceSegment<byte>
    {
        public DirectMapSegment(byte* start, int length, long runningIndex)
        {
            Memory = new DirectMapMemory(start, length).Memory;
            RunningIndex = runningIndex;
        }

        public void Link(DirectMapSegment next) => Next = next;
    }

    private sealed class DirectMapMemory(byte* start, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(start, length);
        public override MemoryHandle Pin(int elementIndex = 0) => new(start + elementIndex);
        public override void Unpin() { }
        protected override void Dispose(bool disposing) { }
    }
}

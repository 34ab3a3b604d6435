using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Physical;

namespace Allocators.Vmalloc;

/// <summary>
/// A host address range reserved as a mirror of the start of the vmalloc space: an area at vmalloc address
/// <c>VmallocStart + x</c> is mapped for real at <c>Base + x</c> with mmap(MAP_SHARED | MAP_FIXED) of its frames'
/// memfd pages, merging physically contiguous runs into one mapping. Writes through either view are one write.
/// </summary>
internal sealed unsafe class HostWindow : IDisposable
{
    private readonly PhysicalMemory _memory;
    private readonly byte* _base;
    private readonly ulong _size;

    public HostWindow(PhysicalMemory memory, ulong size)
    {
        _memory = memory;
        _size = size;
        _base = (byte*)HostMemory.Reserve((nuint)size, (nuint)PageFrame.PageSize);
    }

    /// <summary>Maps an area's pages at its mirror address; areas beyond the window stay MMU-only.</summary>
    public void Map(VmapArea* area)
    {
        ulong offset = area->Start - VmallocAllocator.VmallocStart;
        ulong length = (ulong)area->NrPages * PageFrame.PageSize;
        if (offset + length + PageFrame.PageSize > _size) return;
        byte* host = _base + offset;
        int i = 0;
        while (i < area->NrPages)
        {
            int run = 1;
            while (i + run < area->NrPages && area->Pages[i + run]->Pfn == area->Pages[i]->Pfn + (uint)run) run++;
            HostMemory.MapSharedFixed(host + (long)i * PageFrame.PageSize, (nuint)run * PageFrame.PageSize, _memory.MemFd,
                (long)area->Pages[i]->Pfn << PageFrame.PageShift);
            i += run;
        }
        area->HostAddress = (ulong)host;
        area->Flags |= VmAreaFlags.HostMapped;
    }

    /// <summary>Replaces an area's mirror with an inaccessible reservation again.</summary>
    public void Unmap(VmapArea* area)
    {
        if ((area->Flags & VmAreaFlags.HostMapped) == 0) return;
        ulong length = (ulong)area->NrPages * PageFrame.PageSize;
        void* r = Libc.Mmap((void*)area->HostAddress, (nuint)length, Libc.ProtNone,
            Libc.MapPrivate | Libc.MapAnonymous | Libc.MapFixed | Libc.MapNoReserve, -1, 0);
        if (r == Libc.MapFailed)
            throw new HostMemoryException("mmap", Marshal.GetLastPInvokeError(), $"0x{area->HostAddress:x}, {length}, PROT_NONE, MAP_FIXED");
        area->HostAddress = 0;
        area->Flags &= ~VmAreaFlags.HostMapped;
    }

    public void Dispose() => HostMemory.Release(_base, (nuint)_size);
}

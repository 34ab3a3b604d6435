using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Percpu;

/// <summary>
/// One chunk of per-CPU units (the kernel's <c>struct pcpu_chunk</c>): one unit per possible CPU at a fixed stride,
/// an allocation bitmap of 8-byte granules and the size of each allocation by its first granule.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct PercpuChunk
{
    public byte* Base;
    public PageFrame* Page;
    public int Order;
    public int FreeBytes;
    public int ContigHint;       // upper bound of the longest free run, in granules (pcpu_block_md.contig_hint)
    public ulong* AllocMap;      // bit per granule: in use
    public ushort* Sizes;        // granules of the allocation starting at each granule; 0 elsewhere
}

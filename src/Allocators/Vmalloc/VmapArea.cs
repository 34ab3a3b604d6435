using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Vmalloc;

/// <summary>What a vmap area holds (the words /proc/vmallocinfo prints).</summary>
[Flags]
public enum VmAreaFlags
{
    /// <summary>Nothing yet.</summary>
    None = 0,
    /// <summary>Pages owned by the area, from vmalloc (VM_ALLOC).</summary>
    Alloc = 1 << 0,
    /// <summary>Caller-owned pages mapped with vmap (VM_MAP).</summary>
    Map = 1 << 1,
    /// <summary>Mapped with vm_map_ram (no vm_struct in the kernel).</summary>
    MapRam = 1 << 2,
    /// <summary>Freed, unmapped, waiting for the lazy purge (its address range is not reusable yet).</summary>
    Unpurged = 1 << 3,
    /// <summary>Mapped with 2 MiB pages (VM_ALLOW_HUGE_VMAP).</summary>
    Huge = 1 << 4,
    /// <summary>Also mapped for real into the host's address space (memfd arena).</summary>
    HostMapped = 1 << 5,
    /// <summary>The same pages mapped twice back to back (a ring).</summary>
    Ring = 1 << 6,
}

/// <summary>
/// One busy or free range of the vmalloc space (the kernel's <c>struct vmap_area</c> with its <c>vm_struct</c>),
/// a node of an augmented AVL tree in native memory. <see cref="SubtreeMaxSize"/> is the largest free block in
/// the node's subtree (the kernel's rb_subtree_max_size), so a first fit is found in O(log n).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct VmapArea
{
    public ulong Start;
    public ulong End;              // exclusive; includes the guard page for busy areas
    public VmapArea* Left;
    public VmapArea* Right;
    public int Height;
    public VmAreaFlags Flags;
    public ulong SubtreeMaxSize;
    public PageFrame** Pages;      // vmalloc/vmap: one frame per mapped page (NrPages entries)
    public int NrPages;
    public int Node;
    public int CallSite;           // index into the vmalloc call-site table
    public int Order;              // order of the blocks the pages came in (9: huge mapping); Pages holds their split order-0 pages
    public ulong HostAddress;      // real contiguous mapping (memfd arena), 0 when none
    public VmapArea* NextLazy;     // purge list link

    public readonly ulong Size => End - Start;
}

using Allocators.Filemap;

namespace Allocators.Mmu;

/// <summary>
/// One virtual memory area (vm_area_struct): [<see cref="Start"/>, <see cref="End"/>) with its flags and backing.
/// Linked into its address space's <see cref="VmaTree"/> (ordered, O(log n) lookup) and a doubly linked list in
/// address order. One managed object per area, never per page. Guarded by the address space's mmap_lock.
/// </summary>
internal sealed class VmArea
{
    public ulong Start;
    public ulong End;
    public VmFlags Flags;

    /// <summary>The shared memory object behind a shared anonymous mapping (shmem), or null for private anonymous memory.</summary>
    public ShmemObject? Shared;

    /// <summary>The file a file mapping maps (vm_file), or null for anonymous memory.</summary>
    public FileMapping? File;

    /// <summary>Page offset of <see cref="Start"/> in <see cref="Shared"/> or <see cref="File"/> (vm_pgoff).</summary>
    public ulong PgOff;

    /// <summary>"[heap]", "[stack]" or empty, for /proc/pid/maps.</summary>
    public string Name = "";

    // Tree links (AVL) and list links.
    public VmArea? Left;
    public VmArea? Right;
    public int Height = 1;
    public VmArea? Prev;
    public VmArea? Next;

    public VmArea(ulong start, ulong end, VmFlags flags)
    {
        Start = start;
        End = end;
        Flags = flags;
    }

    public ulong Length => End - Start;

    public bool IsShared => (Flags & VmFlags.Shared) != 0;

    /// <summary>Page offset in the backing object of <paramref name="va"/>.</summary>
    public ulong PageIndex(ulong va) => PgOff + ((va - Start) >> VirtualAddress.PageShift);

    /// <summary>
    /// A copy of the area's description (links not copied) for <paramref name="owner"/>'s address space: it holds its
    /// own reference to the shmem object and is linked into the object's or file's i_mmap, so <see cref="Release"/> it unless it is
    /// inserted.
    /// </summary>
    public VmArea CloneDescriptor(AddressSpace owner)
    {
        var copy = new VmArea(Start, End, Flags) { PgOff = PgOff, Name = Name, Shared = Shared, File = File };
        copy.Shared?.AddRef();
        copy.Shared?.Mappers.Link(owner);
        copy.File?.LinkMapper(owner);
        return copy;
    }

    /// <summary>Drops what an area that is gone held: its shmem reference and its place in the object's or file's i_mmap.</summary>
    public void Release(AddressSpace owner)
    {
        Shared?.Mappers.Unlink(owner);
        Shared?.Release();
        File?.UnlinkMapper(owner);
    }

    /// <summary>Page index one past the last page of the area in its backing object.</summary>
    public ulong EndIndex => PageIndex(End);

    public VmaInfo ToInfo() => new(Start, End, Flags, Name);

    public override string ToString() => $"{Start:x}-{End:x} {Flags}";
}

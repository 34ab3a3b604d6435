namespace Allocators.Mmu;

/// <summary>Flags of a virtual memory area (the kernel's <c>VM_*</c> values).</summary>
[Flags]
public enum VmFlags : uint
{
    /// <summary>No access (PROT_NONE).</summary>
    None = 0,
    /// <summary>Readable (VM_READ).</summary>
    Read = 0x1,
    /// <summary>Writable (VM_WRITE).</summary>
    Write = 0x2,
    /// <summary>Executable (VM_EXEC).</summary>
    Exec = 0x4,
    /// <summary>Shared: writes are seen by every mapping of the same memory, never copied (VM_SHARED).</summary>
    Shared = 0x8,
    /// <summary>A stack that grows down when touched just below its start (VM_GROWSDOWN).</summary>
    GrowsDown = 0x100,
    /// <summary>Backed by transparent huge pages where a whole 2 MiB block fits (VM_HUGEPAGE).</summary>
    HugePage = 0x2000_0000,
}

/// <summary>Protection of an mmap or mprotect (<c>PROT_*</c>).</summary>
[Flags]
public enum MemoryProtection
{
    /// <summary>No access (PROT_NONE).</summary>
    None = 0,
    /// <summary>PROT_READ.</summary>
    Read = 0x1,
    /// <summary>PROT_WRITE.</summary>
    Write = 0x2,
    /// <summary>PROT_EXEC.</summary>
    Exec = 0x4,
    /// <summary>PROT_READ | PROT_WRITE.</summary>
    ReadWrite = Read | Write,
}

/// <summary>mmap flags (<c>MAP_*</c>, Linux values).</summary>
[Flags]
public enum MapFlags
{
    /// <summary>No flag (invalid alone: one of <see cref="Shared"/> or <see cref="Private"/> is required).</summary>
    None = 0,
    /// <summary>Share the memory with every mapping of it, including a forked child's (MAP_SHARED).</summary>
    Shared = 0x01,
    /// <summary>Private copy-on-write memory (MAP_PRIVATE).</summary>
    Private = 0x02,
    /// <summary>Map exactly at the address, replacing what is there (MAP_FIXED).</summary>
    Fixed = 0x10,
    /// <summary>Not backed by a file: zero-filled on demand (MAP_ANONYMOUS).</summary>
    Anonymous = 0x20,
    /// <summary>A stack that grows down (MAP_GROWSDOWN).</summary>
    GrowsDown = 0x100,
    /// <summary>Fault every page in now (MAP_POPULATE); when that runs out of memory, mmap fails and maps nothing.</summary>
    Populate = 0x8000,
    /// <summary>Back with 2 MiB transparent huge pages where possible (here: MAP_HUGETLB's value, THP semantics).</summary>
    HugePage = 0x40000,
    /// <summary>Like <see cref="Fixed"/> but fail instead of replacing an existing mapping (MAP_FIXED_NOREPLACE).</summary>
    FixedNoReplace = 0x100000,
}

/// <summary>msync flags (<c>MS_*</c>, Linux values).</summary>
[Flags]
public enum MsyncFlags
{
    /// <summary>No flag (as MS_ASYNC since Linux 2.6.19: dirty pages are tracked already).</summary>
    None = 0,
    /// <summary>Schedule the write-back and return (MS_ASYNC).</summary>
    Async = 1,
    /// <summary>Invalidate other mappings of the file (MS_INVALIDATE; nothing to do: every mapping is the page cache).</summary>
    Invalidate = 2,
    /// <summary>Write back and wait (MS_SYNC).</summary>
    Sync = 4,
}

/// <summary>mremap flags (<c>MREMAP_*</c>).</summary>
[Flags]
public enum MremapFlags
{
    /// <summary>Grow or shrink in place only.</summary>
    None = 0,
    /// <summary>May move the mapping when it cannot grow in place (MREMAP_MAYMOVE).</summary>
    MayMove = 1,
    /// <summary>Move to exactly the new address (MREMAP_FIXED; requires <see cref="MayMove"/>).</summary>
    Fixed = 2,
}

/// <summary>A snapshot of one virtual memory area.</summary>
/// <param name="Start">First address.</param>
/// <param name="End">One past the last address.</param>
/// <param name="Flags">The area's flags.</param>
/// <param name="Name">"[heap]", "[stack]" or empty.</param>
public readonly record struct VmaInfo(ulong Start, ulong End, VmFlags Flags, string Name)
{
    /// <summary>Length in bytes.</summary>
    public ulong Length => End - Start;
}

namespace Allocators.Mmu;

/// <summary>
/// The bits of an x86-64 page-table entry at any level (the kernel's <c>_PAGE_*</c> values), plus the composite
/// protections the kernel uses (<c>_PAGE_TABLE</c>, <c>PAGE_SHARED</c>, <c>__PAGE_KERNEL</c>, ...).
/// </summary>
[Flags]
public enum PteFlags : ulong
{
    /// <summary>No bit.</summary>
    None = 0,
    /// <summary>The entry maps something (_PAGE_PRESENT, bit 0).</summary>
    Present = 1UL << 0,
    /// <summary>Writes allowed (_PAGE_RW, bit 1).</summary>
    ReadWrite = 1UL << 1,
    /// <summary>User-mode access allowed (_PAGE_USER, bit 2).</summary>
    User = 1UL << 2,
    /// <summary>Write-through caching (_PAGE_PWT, bit 3).</summary>
    WriteThrough = 1UL << 3,
    /// <summary>Caching disabled (_PAGE_PCD, bit 4).</summary>
    CacheDisabled = 1UL << 4,
    /// <summary>Set by the walker on any access (_PAGE_ACCESSED, bit 5).</summary>
    Accessed = 1UL << 5,
    /// <summary>Set by the walker on a write, leaf entries only (_PAGE_DIRTY, bit 6).</summary>
    Dirty = 1UL << 6,
    /// <summary>Large page: the PMD (2 MiB) or PUD (1 GiB) entry is a leaf (_PAGE_PSE, bit 7; PAT in a 4 KiB PTE).</summary>
    Huge = 1UL << 7,
    /// <summary>Not flushed on address-space switches (_PAGE_GLOBAL, bit 8; PROTNONE when Present is clear).</summary>
    Global = 1UL << 8,
    /// <summary>Software bit 9: a special mapping with no struct page to count, e.g. the zero page (_PAGE_SPECIAL).</summary>
    Special = 1UL << 9,
    /// <summary>Software bit 10 (_PAGE_SOFTW2); unused here.</summary>
    Software2 = 1UL << 10,
    /// <summary>Software bit 11: soft-dirty tracking (_PAGE_SOFT_DIRTY); kept by mprotect.</summary>
    SoftDirty = 1UL << 11,
    /// <summary>No instruction fetch (_PAGE_NX, bit 63).</summary>
    NoExecute = 1UL << 63,

    /// <summary>Bits 12..51: the page frame number shifted left by 12 (PTE_PFN_MASK).</summary>
    PfnMask = 0x000F_FFFF_FFFF_F000UL,

    /// <summary>A user page-table entry pointing at a lower table (_PAGE_TABLE = P|RW|USER|A|D = 0x67).</summary>
    PageTable = Present | ReadWrite | User | Accessed | Dirty,
    /// <summary>A kernel page-table entry pointing at a lower table (_KERNPG_TABLE = 0x63).</summary>
    KernelPageTable = Present | ReadWrite | Accessed | Dirty,
    /// <summary>An inaccessible user page (PAGE_NONE = PROTNONE|ACCESSED = 0x120; not present to the walker).</summary>
    PageNone = Global | Accessed,
    /// <summary>A writable shared user page (PAGE_SHARED = P|RW|USER|A|NX).</summary>
    PageShared = Present | ReadWrite | User | Accessed | NoExecute,
    /// <summary>A private writable user page before its first write: no RW, so the write faults (PAGE_COPY).</summary>
    PageCopy = Present | User | Accessed | NoExecute,
    /// <summary>A read-only user page (PAGE_READONLY = P|USER|A|NX).</summary>
    PageReadOnly = Present | User | Accessed | NoExecute,
    /// <summary>Kernel data (__PAGE_KERNEL = P|RW|A|D|GLOBAL|NX = 0x8000000000000163).</summary>
    PageKernel = Present | ReadWrite | Accessed | Dirty | Global | NoExecute,
    /// <summary>Read-only kernel data (PAGE_KERNEL_RO).</summary>
    PageKernelReadOnly = Present | Accessed | Dirty | Global | NoExecute,
    /// <summary>Kernel code (PAGE_KERNEL_EXEC).</summary>
    PageKernelExec = Present | ReadWrite | Accessed | Dirty | Global,
    /// <summary>Uncached kernel data (PAGE_KERNEL_NOCACHE).</summary>
    PageKernelNoCache = PageKernel | CacheDisabled | WriteThrough,

    /// <summary>The bits mprotect keeps when it changes a protection (_PAGE_CHG_MASK without the PAT bit).</summary>
    ChangeMask = PfnMask | CacheDisabled | WriteThrough | Accessed | Dirty | Special | SoftDirty | Huge,
}

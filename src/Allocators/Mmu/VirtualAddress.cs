using System.Runtime.CompilerServices;

namespace Allocators.Mmu;

/// <summary>
/// x86-64 4-level virtual addresses: 48 bits split 9/9/9/9/12 (PGD 47..39, PUD 38..30, PMD 29..21, PTE 20..12,
/// offset 11..0), canonical when bits 63..48 copy bit 47, and the layout constants of the kernel.
/// </summary>
public static class VirtualAddress
{
    /// <summary>Bytes per page (the one page size: <see cref="Physical.PageFrame.PageSize"/>).</summary>
    public const int PageSize = Physical.PageFrame.PageSize;
    /// <summary>log2 of <see cref="PageSize"/>.</summary>
    public const int PageShift = Physical.PageFrame.PageShift;
    /// <summary>Pages a PMD entry maps (the index mask of a PTE table + 1).</summary>
    private const int PteIndexMask = 511;
    /// <summary>Entries in every table.</summary>
    public const int EntriesPerTable = 512;
    /// <summary>Bytes mapped by one PMD entry (2 MiB).</summary>
    public const ulong PmdSize = 1UL << 21;
    /// <summary>Bytes mapped by one PUD entry (1 GiB).</summary>
    public const ulong PudSize = 1UL << 30;
    /// <summary>Bytes mapped by one PGD entry (512 GiB).</summary>
    public const ulong PgdSize = 1UL << 39;
    /// <summary>Pages in a PMD-sized huge page (HPAGE_PMD_NR).</summary>
    public const int HugePagePages = 512;
    /// <summary>Page-allocator order of a PMD-sized huge page (HPAGE_PMD_ORDER).</summary>
    public const int HugePageOrder = 9;

    /// <summary>First address above user space: 0x00007ffffffff000 (TASK_SIZE_MAX; the last page is never mapped).</summary>
    public const ulong TaskSize = 0x0000_7FFF_FFFF_F000UL;
    /// <summary>Start of the kernel half (the lowest canonical upper-half address).</summary>
    public const ulong KernelStart = 0xFFFF_8000_0000_0000UL;
    /// <summary>The direct map of all physical memory (PAGE_OFFSET without KASLR).</summary>
    public const ulong PageOffset = 0xFFFF_8880_0000_0000UL;
    /// <summary>Start of the vmalloc area (VMALLOC_START, 4-level paging, no KASLR).</summary>
    public const ulong VmallocStart = 0xFFFF_C900_0000_0000UL;
    /// <summary>Last byte of the 32 TiB vmalloc area (VMALLOC_END).</summary>
    public const ulong VmallocEnd = 0xFFFF_E8FF_FFFF_FFFFUL;
    /// <summary>Lowest address a user mapping may use (vm.mmap_min_addr, 64 KiB).</summary>
    public const ulong MmapMinAddr = 0x10000;

    /// <summary>First PGD index of the kernel half (256).</summary>
    public const int KernelPgdIndex = 256;

    /// <summary>Index into the PGD (bits 47..39).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PgdIndex(ulong va) => (int)((va >> 39) & 511);

    /// <summary>Index into the PUD (bits 38..30).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PudIndex(ulong va) => (int)((va >> 30) & 511);

    /// <summary>Index into the PMD (bits 29..21).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PmdIndex(ulong va) => (int)((va >> 21) & 511);

    /// <summary>Index into the PTE table (bits 20..12).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PteIndex(ulong va) => (int)((va >> PageShift) & PteIndexMask);

    /// <summary>Byte offset within the page (bits 11..0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PageOffsetOf(ulong va) => (int)(va & (PageSize - 1));

    /// <summary>All five parts of <paramref name="va"/>.</summary>
    public static (int Pgd, int Pud, int Pmd, int Pte, int Offset) Split(ulong va)
        => (PgdIndex(va), PudIndex(va), PmdIndex(va), PteIndex(va), PageOffsetOf(va));

    /// <summary>Builds the canonical address of the given indices (bit 47 sign-extended).</summary>
    public static ulong Compose(int pgd, int pud, int pmd, int pte, int offset = 0)
    {
        if ((uint)pgd > 511 || (uint)pud > 511 || (uint)pmd > 511 || (uint)pte > 511 || (uint)offset >= PageSize)
            throw new ArgumentOutOfRangeException(nameof(pgd), "Indices must be 0..511 and the offset 0..4095.");
        ulong va = ((ulong)pgd << 39) | ((ulong)pud << 30) | ((ulong)pmd << 21) | ((ulong)pte << 12) | (uint)offset;
        return Canonicalize(va);
    }

    /// <summary>True when bits 63..48 equal bit 47.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsCanonical(ulong va) => (ulong)(((long)va << 16) >> 16) == va;

    /// <summary>Sign-extends bit 47 into bits 63..48.</summary>
    public static ulong Canonicalize(ulong va) => (ulong)(((long)va << 16) >> 16);

    /// <summary>True for addresses in the kernel half.</summary>
    public static bool IsKernel(ulong va) => va >= KernelStart;

    /// <summary>Rounds down to a page boundary.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong PageAlignDown(ulong va) => va & ~(ulong)(PageSize - 1);

    /// <summary>Rounds up to a page boundary.</summary>
    public static ulong PageAlignUp(ulong va) => (va + PageSize - 1) & ~(ulong)(PageSize - 1);

    /// <summary>True when page aligned.</summary>
    public static bool IsPageAligned(ulong va) => (va & (PageSize - 1)) == 0;
}

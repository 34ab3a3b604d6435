namespace Allocators.Swap;

/// <summary>
/// The software bits a swap PTE keeps besides the entry (x86-64, arch/x86/include/asm/pgtable_types.h and
/// pgtable_64_types.h). Bits 1-4 take no part in the swap entry's encoding, so they are borrowed while the page is out.
/// </summary>
[Flags]
public enum SwapPteFlags : ulong
{
    /// <summary>No flag.</summary>
    None = 0,

    /// <summary><c>_PAGE_SWP_SOFT_DIRTY</c> (= <c>_PAGE_RW</c>, bit 1): the page was soft-dirty when it was swapped out.</summary>
    SoftDirty = 1ul << 1,

    /// <summary><c>_PAGE_SWP_UFFD_WP</c> (= <c>_PAGE_USER</c>, bit 2): userfaultfd write-protected.</summary>
    UffdWp = 1ul << 2,

    /// <summary><c>_PAGE_SWP_EXCLUSIVE</c> (= <c>_PAGE_PWT</c>, bit 3): the anonymous page was exclusive to this mm (PG_anon_exclusive).</summary>
    Exclusive = 1ul << 3,
}

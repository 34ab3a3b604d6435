using Allocators.Physical;

namespace Allocators.Filemap;

/// <summary>
/// One address space that maps a file: the page cache's way up to the page tables (the kernel's i_mmap tree gives it
/// the VMAs). The MMU implements it and registers with <see cref="FileMapping.LinkMapper"/> for each area that maps
/// the file; truncation and writeback call back through it.
/// </summary>
internal unsafe interface IFileMapper
{
    /// <summary>
    /// unmap_mapping_range: removes every PTE that maps page index <paramref name="firstIndex"/> or later of
    /// <paramref name="mapping"/>, private copies included (truncation), with the TLB flushed before it returns.
    /// </summary>
    void UnmapMappingRange(FileMapping mapping, ulong firstIndex);

    /// <summary>
    /// page_mkclean: write-protects and cleans every PTE that maps <paramref name="page"/> (index
    /// <paramref name="index"/> of <paramref name="mapping"/>), flushing the TLB, so the next write faults and dirties
    /// the page again. True when one of them was dirty.
    /// </summary>
    bool MkClean(FileMapping mapping, ulong index, PageFrame* page);

    /// <summary>
    /// page_referenced_one for a page of <paramref name="mapping"/> at <paramref name="index"/>: clears the accessed
    /// bits of the entries that map it and returns how many were set. Reclaim calls it inside allocations, so it takes
    /// its locks with trylock and counts a busy address space as one reference.
    /// </summary>
    int ReferencedTry(FileMapping mapping, ulong index, PageFrame* page);

    /// <summary>
    /// try_to_unmap_one for a page of <paramref name="mapping"/>: removes every entry that maps it (a dirty entry makes
    /// the page dirty), with trylocks; leaves the entries when the address space is busy.
    /// </summary>
    void TryUnmap(FileMapping mapping, ulong index, PageFrame* page);
}

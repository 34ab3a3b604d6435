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
}

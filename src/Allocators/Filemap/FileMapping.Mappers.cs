using Allocators.Collections;
using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    // i_mmap: every address space area that maps this file.
    private readonly MapperList<IFileMapper> _mappers = new();

    /// <summary>True while some address space maps the file.</summary>
    internal bool HasMappers => _mappers.Any;

    /// <summary>Address space areas mapping the file (i_mmap's size).</summary>
    public int MapperCount => _mappers.Areas;

    /// <summary>Records one more area of <paramref name="mapper"/> mapping the file (vma_link into i_mmap).</summary>
    internal void LinkMapper(IFileMapper mapper)
    {
        ThrowIfDisposed();
        _mappers.Link(mapper);
    }

    /// <summary>Forgets one area of <paramref name="mapper"/> (the area was unmapped).</summary>
    internal void UnlinkMapper(IFileMapper mapper)
    {
        if (!_mappers.Unlink(mapper)) throw new InvalidOperationException($"page cache: {Path} is not mapped by that address space.");
    }

    /// <summary>unmap_mapping_range over every mapper from page <paramref name="firstIndex"/> on.</summary>
    private void UnmapMappingRange(ulong firstIndex)
    {
        foreach (var (mapper, _) in _mappers.Snapshot) mapper.UnmapMappingRange(this, firstIndex);
    }

    /// <summary>page_mkclean: cleans and write-protects every PTE of a mapped page; true when one was dirty.</summary>
    private bool MkClean(PageFrame* page, ulong index)
    {
        if (Volatile.Read(ref page->_mapcount) == 0) return false;
        bool dirty = false;
        foreach (var (mapper, _) in _mappers.Snapshot) dirty |= mapper.MkClean(this, index, page);
        return dirty;
    }
}

using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    // i_mmap: every address space area that maps this file, as (mapper, areas) pairs. Copy-on-write array so that
    // writeback and truncation walk a snapshot without holding the lock while they call into the page tables.
    private readonly Lock _mappersLock = new();
    private (IFileMapper Mapper, int Areas)[] _mappers = [];

    /// <summary>True while some address space maps the file.</summary>
    internal bool HasMappers => Volatile.Read(ref _mappers).Length != 0;

    /// <summary>Address space areas mapping the file (i_mmap's size).</summary>
    public int MapperCount
    {
        get
        {
            int n = 0;
            foreach (var (_, areas) in Volatile.Read(ref _mappers)) n += areas;
            return n;
        }
    }

    /// <summary>Records one more area of <paramref name="mapper"/> mapping the file (vma_link into i_mmap).</summary>
    internal void LinkMapper(IFileMapper mapper)
    {
        ThrowIfDisposed();
        lock (_mappersLock)
        {
            var list = _mappers;
            for (int i = 0; i < list.Length; i++)
            {
                if (!ReferenceEquals(list[i].Mapper, mapper)) continue;
                var copy = (((IFileMapper, int)[])list.Clone());
                copy[i].Item2++;
                Volatile.Write(ref _mappers, copy);
                return;
            }
            Volatile.Write(ref _mappers, [.. list, (mapper, 1)]);
        }
    }

    /// <summary>Forgets one area of <paramref name="mapper"/> (the area was unmapped).</summary>
    internal void UnlinkMapper(IFileMapper mapper)
    {
        lock (_mappersLock)
        {
            var list = _mappers;
            for (int i = 0; i < list.Length; i++)
            {
                if (!ReferenceEquals(list[i].Mapper, mapper)) continue;
                if (list[i].Areas > 1)
                {
                    var copy = (((IFileMapper, int)[])list.Clone());
                    copy[i].Item2--;
                    Volatile.Write(ref _mappers, copy);
                }
                else
                {
                    Volatile.Write(ref _mappers, [.. list[..i], .. list[(i + 1)..]]);
                }
                return;
            }
        }
        throw new InvalidOperationException($"page cache: {Path} is not mapped by that address space.");
    }

    /// <summary>unmap_mapping_range over every mapper from page <paramref name="firstIndex"/> on.</summary>
    private void UnmapMappingRange(ulong firstIndex)
    {
        foreach (var (mapper, _) in Volatile.Read(ref _mappers)) mapper.UnmapMappingRange(this, firstIndex);
    }

    /// <summary>page_mkclean: cleans and write-protects every PTE of a mapped page; true when one was dirty.</summary>
    private bool MkClean(PageFrame* page, ulong index)
    {
        if (Volatile.Read(ref page->_mapcount) == 0) return false;
        bool dirty = false;
        foreach (var (mapper, _) in Volatile.Read(ref _mappers)) dirty |= mapper.MkClean(this, index, page);
        return dirty;
    }
}

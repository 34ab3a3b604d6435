using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Highmem;

/// <summary>
/// The page cache on a split arena: its pages come from high memory, and read, write, the zeroing of a page past the
/// end of the file and truncation's partial page go through a local kmap once the kernel address space exists (the
/// kernel's memcpy_from_page / memcpy_to_page / memzero_page); before that, at the page's host address.
/// </summary>
public sealed unsafe class HighmemPageCacheTests : IDisposable
{
    private const long MiB = 1L << 20;
    private const int Page = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-hmpc-").FullName;
    private readonly MemorySystem _sys = new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = 32 * MiB },
        PageCache = new PageCacheOptions { DirtyWritebackInterval = TimeSpan.Zero },
    });

    public void Dispose()
    {
        _sys.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void ReadsAndWritesOfHighPagesGoThroughKmapAndEveryByteComesBack()
    {
        // Each copy through a local kmap ends with the unmap's local invalidation of the slot (invlpg): the kernel's
        // TLB counters count the kmaps.
        var kernel = _sys.Kernel;
        using FileMapping file = _sys.PageCache.Open(Path.Combine(_dir, "a.bin"));
        byte[] data = new byte[5 * Page + 321];
        new Random(1).NextBytes(data);
        long before = kernel.TlbStatistics.LocalInvalidations;
        file.Write(100, data); // 6 pages, the first and last partly: each of those two is zeroed first (past the end)
        long written = kernel.TlbStatistics.LocalInvalidations - before;
        Assert.Equal(6 + 2, written);
        for (ulong i = 0; i < 6; i++)
        {
            PageFrame* page = file.FindGetPage(i);
            Assert.True(page != null);
            Assert.True(_sys.Kernel.IsHighMem(page), $"page {i} is low");
            file.PutPage(page);
        }

        var back = new byte[data.Length];
        Assert.Equal(data.Length, file.Read(100, back));
        Assert.Equal(data, back);
        Assert.Equal(6, kernel.TlbStatistics.LocalInvalidations - before - written);

        // Truncation zeroes the rest of its last page, and a write past the end zeroes the new page's head: both
        // through the kmap, and a read shows zeros there.
        file.Truncate(2 * Page + 10);
        file.Write(4 * Page + 50, new byte[] { 7 });
        var tail = new byte[3 * Page];
        Assert.Equal(2 * Page + 41, file.Read(2 * Page + 10, tail));
        Assert.All(tail[..(2 * Page + 40)], b => Assert.Equal(0, b));
        Assert.Equal(7, tail[2 * Page + 40]);
        _sys.PageCache.CheckConsistency();
    }

    [Fact]
    public void WithoutAKernelAddressSpaceHighPagesAreCopiedAtTheirHostAddress()
    {
        using FileMapping file = _sys.PageCache.Open(Path.Combine(_dir, "b.bin"));
        byte[] data = new byte[3 * Page];
        new Random(2).NextBytes(data);
        file.Write(0, data);
        var back = new byte[data.Length];
        Assert.Equal(data.Length, file.Read(0, back));
        Assert.Equal(data, back);
        Assert.False(_sys.HasKernel); // so no kmap: no kernel address space has registered its kmap path
    }
}

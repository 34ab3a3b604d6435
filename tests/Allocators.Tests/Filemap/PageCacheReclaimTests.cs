using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>The page cache gives clean pages back when the page allocator runs short, and never waits doing it.</summary>
public sealed unsafe class PageCacheReclaimTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-pcr-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(Gfp.NoFs)]
    [InlineData(Gfp.Kernel)]
    public void ReclaimDropsCleanPagesWithoutWaitingOnALockedOne(Gfp gfp)
    {
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 16L << 20 } });
        using FileMapping file = system.PageCache.Open(Path.Combine(_dir, "r.bin"));
        const int FilePages = 3000; // most of the arena
        var data = new byte[FilePages * 4096];
        new Random(1).NextBytes(data);
        file.Write(0, data);
        file.Fsync();
        Assert.Equal(FilePages, file.CachedPages);

        // A page locked by someone else (an I/O in flight, a writer): reclaim must pass it by, not sleep on it.
        PageFrame* locked = file.FindGetPage(7);
        PageWait.Lock(locked);
        var pages = new List<nint>();
        var allocator = new Thread(() =>
        {
            while (true)
            {
                PageFrame* p = system.Pages.AllocPages(gfp | Gfp.NoWarn, 0);
                if (p == null) break;
                pages.Add((nint)p);
            }
        });
        allocator.Start();
        Assert.True(allocator.Join(TimeSpan.FromSeconds(60)), "the allocation slow path waited on a locked page-cache page");
        Assert.True(pages.Count > FilePages / 2, $"only {pages.Count} pages could be allocated: the cache gave too little back");
        Assert.True(system.PageCache.Statistics.DroppedPages > 0);
        Assert.True(file.FindGetPage(7) == locked); // the locked page stayed
        file.PutPage(locked);
        PageWait.Unlock(locked);
        file.PutPage(locked);
        foreach (nint p in pages) system.Pages.FreePages((PageFrame*)p, 0);

        // Everything not dropped still reads back what was written.
        var back = new byte[data.Length];
        Assert.Equal(data.Length, file.Read(0, back));
        Assert.True(back.AsSpan().SequenceEqual(data));
        system.PageCache.CheckConsistency();
    }
}

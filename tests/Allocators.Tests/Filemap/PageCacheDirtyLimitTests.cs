using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>
/// balance_dirty_pages and the flusher's background threshold: a writer that dirties far more than vm.dirty_ratio
/// allows writes back itself, so dirty memory stays near the limit however much it writes (more than the arena
/// holds, here); dirty data over vm.dirty_background_ratio wakes the flusher without waiting for it to expire.
/// </summary>
public sealed class PageCacheDirtyLimitTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-pcd-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void AWriterFarOverTheDirtyRatioIsThrottledAndDirtyMemoryStaysBounded()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16L << 20 },
            PageCache = new PageCacheOptions
            {
                // Equal ratios: the write that crosses the background threshold is also over the limit, so the
                // writer is throttled whether or not the woken flusher would have kept up (it does on a slow build).
                DirtyBackgroundRatio = 2,
                DirtyRatio = 2,
                DirtyExpire = TimeSpan.FromHours(1),
                DirtyWritebackInterval = TimeSpan.Zero,
            },
        });
        PageCache cache = system.PageCache;
        string path = Path.Combine(_dir, "big.bin");
        const int Chunk = 64 << 10;
        const int Total = 24 << 20; // more than the arena: clean pages must make room too
        var chunk = new byte[Chunk];
        long worst = 0;
        using (FileMapping file = cache.Open(path))
        {
            for (int offset = 0; offset < Total; offset += Chunk)
            {
                chunk.AsSpan().Fill((byte)(offset / Chunk));
                file.Write(offset, chunk);
                long dirty = cache.Statistics.DirtyPages + cache.Statistics.WritebackPages;
                long limit = (system.Pages.NrFreePages + cache.Statistics.FilePages) * 2 / 100;
                // One write's pages plus a flusher batch still in flight may sit over the limit, never more.
                Assert.True(dirty <= limit + Chunk / 4096 + 64, $"{dirty} pages dirty or under writeback, limit {limit}");
                worst = Math.Max(worst, dirty);
            }
            Assert.True(cache.Statistics.WritersThrottled > 0);
            Assert.True(file.CachedPages < Total / 4096, "every page stayed cached in an arena smaller than the file");
            file.Fsync();
        }
        using var disk = File.OpenRead(path);
        Assert.Equal(Total, disk.Length);
        for (int offset = 0; offset < Total; offset += Chunk)
        {
            disk.ReadExactly(chunk);
            Assert.True(chunk.AsSpan().IndexOfAnyExcept((byte)(offset / Chunk)) < 0, $"chunk at {offset} differs on disk");
        }
        Assert.True(worst > 0);
    }

    [Fact]
    public void DirtyDataOverTheBackgroundRatioWakesTheFlusherBeforeItExpires()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16L << 20 },
            PageCache = new PageCacheOptions
            {
                DirtyBackgroundRatio = 5,
                DirtyRatio = 50,
                DirtyExpire = TimeSpan.FromHours(1),
                DirtyWritebackInterval = TimeSpan.Zero,
            },
        });
        PageCache cache = system.PageCache;
        string path = Path.Combine(_dir, "bg.bin");
        using FileMapping file = cache.Open(path);
        var data = new byte[420 * 4096];
        new Random(5).NextBytes(data);

        file.Write(0, data.AsSpan(0, 20 * 4096));
        Thread.Sleep(200);
        Assert.Equal(20, cache.Statistics.DirtyPages); // under the threshold and not expired: nothing wakes the flusher

        file.Write(20 * 4096, data.AsSpan(20 * 4096));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (cache.Statistics.DirtyPages + cache.Statistics.WritebackPages != 0 && DateTime.UtcNow < deadline) Thread.Sleep(5);
        Assert.Equal(0, cache.Statistics.DirtyPages + cache.Statistics.WritebackPages);
        Assert.Equal(0, cache.Statistics.WritersThrottled);
        Assert.Equal(data, File.ReadAllBytes(path));
    }
}

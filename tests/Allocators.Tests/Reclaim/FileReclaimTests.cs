using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// File pages under memory pressure: reclaim takes them from the file LRU in order, writes dirty ones back first (only
/// with __GFP_FS) and drops clean ones with no I/O; the data always comes back from the file.
/// </summary>
public sealed unsafe class FileReclaimTests : IDisposable
{
    private const int PageSize = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-filereclaim-").FullName;
    private readonly MemorySystem _system = new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 16L << 20 },
        PageAllocator = new PageAllocatorOptions { AutoGrow = false, ReleaseFreeMemory = false },
        // Only reclaim writes: the flusher and the dirty throttle stay out of the way.
        PageCache = new PageCacheOptions { DirtyBackgroundRatio = 100, DirtyRatio = 100, DirtyExpire = TimeSpan.FromHours(1), DirtyWritebackInterval = TimeSpan.FromHours(1) },
    });

    public void Dispose()
    {
        _system.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static byte[] Data(int pages, int seed)
    {
        var data = new byte[pages * PageSize];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>Allocates pages until the arena is nearly gone (reclaim runs on the way) and gives them back.</summary>
    /// <summary>
    /// Allocates up to <paramref name="pages"/> pages with <paramref name="gfp"/> | __GFP_HIGHMEM (so that its reclaim
    /// may take cached pages of every zone: a lowmem one skips the high ones when ALLOCATORS_HIGHMEM splits the
    /// arena), then frees them.
    /// </summary>
    private void Pressure(Gfp gfp, int pages)
    {
        var taken = new List<nint>();
        for (int i = 0; i < pages; i++)
        {
            PageFrame* p = _system.Pages.AllocPages(gfp | Gfp.HighMem | Gfp.NoWarn, 0);
            if (p == null) break;
            taken.Add((nint)p);
        }
        foreach (nint p in taken) _system.Pages.FreePages((PageFrame*)p, 0);
    }

    [Fact]
    public void DirtyPagesAreWrittenBackBeforeTheyAreDropped()
    {
        using FileMapping file = _system.PageCache.Open(Path.Combine(_dir, "dirty.bin"));
        byte[] data = Data(2048, 1);
        file.Write(0, data);
        Assert.Equal(2048, _system.PageCache.Statistics.DirtyPages);

        Pressure(Gfp.Kernel, 3500);
        PageCacheStatistics stats = _system.PageCache.Statistics;
        Assert.True(stats.ReclaimWrittenPages > 0);
        Assert.True(stats.FilePages < 2048);
        Assert.True(_system.Pages.ReclaimCounters.StolenDirect + _system.Pages.ReclaimCounters.StolenByKswapd > 0);
        // What reclaim dropped comes back from the file: it was written first.
        var back = new byte[data.Length];
        Assert.Equal(data.Length, file.Read(0, back));
        Assert.Equal(data, back);
        file.Fsync();
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(_dir, "dirty.bin")));
        _system.PageCache.CheckConsistency();
        _system.Pages.Lru.CheckConsistency();
    }

    [Fact]
    public void CleanPagesAreDroppedWithoutIo()
    {
        using FileMapping file = _system.PageCache.Open(Path.Combine(_dir, "clean.bin"));
        byte[] data = Data(2048, 2);
        file.Write(0, data);
        file.Fsync();
        long pagedOut = _system.PageCache.Statistics.PagedOutKb;

        Pressure(Gfp.Kernel, 3500);
        Assert.True(_system.PageCache.Statistics.FilePages < 2048);
        Assert.Equal(pagedOut, _system.PageCache.Statistics.PagedOutKb);
        Assert.Equal(0, _system.PageCache.Statistics.ReclaimWrittenPages);
        var back = new byte[data.Length];
        Assert.Equal(data.Length, file.Read(0, back));
        Assert.Equal(data, back);
        // The dropped pages left shadows: reading them again is a refault (mm/workingset.c).
        Assert.True(_system.Pages.ReclaimCounters.RefaultsFile > 0);
        _system.PageCache.CheckConsistency();
    }

    /// <summary>
    /// Clean pages leave the cache in batches: one RCU grace period per batch of deleted pages (SWAP_CLUSTER_MAX), not
    /// one per page, and a lockless reader inside its read section still sees its page's data until it leaves.
    /// </summary>
    [Fact]
    public void DroppedPagesWaitForOneGracePeriodPerBatch()
    {
        using FileMapping file = _system.PageCache.Open(Path.Combine(_dir, "batch.bin"));
        byte[] data = Data(2048, 4);
        file.Write(0, data);
        file.Fsync();
        long dropped = _system.PageCache.Statistics.DroppedPages;
        long gracePeriods = _system.Pages.Rcu.GracePeriods;

        Pressure(Gfp.Kernel, 3500);
        long droppedNow = _system.PageCache.Statistics.DroppedPages - dropped;
        long waited = _system.Pages.Rcu.GracePeriods - gracePeriods;
        Assert.True(droppedNow >= 256, $"{droppedNow} pages dropped");
        Assert.True(waited * 8 <= droppedNow, $"{waited} grace periods for {droppedNow} dropped pages");
        var back = new byte[data.Length];
        Assert.Equal(data.Length, file.Read(0, back));
        Assert.Equal(data, back);
        _system.PageCache.CheckConsistency();
        _system.Pages.Lru.CheckConsistency();
    }

    [Fact]
    public void NoFsReclaimLeavesDirtyPagesAlone()
    {
        using FileMapping file = _system.PageCache.Open(Path.Combine(_dir, "nofs.bin"));
        file.Write(0, Data(2048, 3));
        long skipped = _system.Pages.ReclaimCounters.SkippedForGfp.NoFs;
        long writes = FileMapping.t_reclaimWrites;

        Pressure(Gfp.NoFs, 3500);
        Assert.True(_system.Pages.ReclaimCounters.SkippedForGfp.NoFs > skipped);
        Assert.Equal(writes, FileMapping.t_reclaimWrites); // kswapd (GFP_KERNEL) may write; this thread did not

        // Reclaim with __GFP_FS on this thread does write dirty pages: the check above can fail.
        file.Write(0, Data(2048, 4));
        Assert.True(_system.Reclaim(512) > 0);
        Assert.True(FileMapping.t_reclaimWrites > writes);
    }

    [Fact]
    public void ReadPagesStayWhileAStreamPassesThrough()
    {
        // A small hot file read again and again, then a big file read once: the hot pages are active and survive.
        using FileMapping hot = _system.PageCache.Open(Path.Combine(_dir, "hot.bin"));
        using FileMapping stream = _system.PageCache.Open(Path.Combine(_dir, "stream.bin"));
        hot.Write(0, Data(256, 4));
        stream.Write(0, Data(6000, 5));
        hot.Fsync();
        stream.Fsync();
        _system.PageCache.DropCaches();
        var buffer = new byte[PageSize];
        for (int round = 0; round < 3; round++)
            for (int i = 0; i < 256; i++) hot.Read((long)i * PageSize, buffer);
        for (int i = 0; i < 6000; i++) stream.Read((long)i * PageSize, buffer);
        Assert.True(hot.CachedPages >= 250, $"hot file kept {hot.CachedPages} of 256 pages");
        Assert.True(_system.Pages.Lru.Total(LruList.ActiveFile) >= 250);
    }
}

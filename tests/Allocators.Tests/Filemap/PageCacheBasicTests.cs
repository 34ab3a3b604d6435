using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

public sealed unsafe class PageCacheBasicTests() : PageCacheTestBase(64L << 20)
{
    [Fact]
    public void ReadsAcrossPagesInAndOutOfArenaOrderReturnEveryByte()
    {
        // Written forwards, the pages lie back to back in the arena (one copy per run); written backwards, each page
        // lies below the one before it. Reads at odd offsets and lengths must see the same bytes either way.
        const int Pages = 150; // more than two runs of MaxRunPages (64) in one read
        byte[] data = Pattern(Pages * 4096, 9);
        using FileMapping forward = _system.PageCache.Open(Path.Combine(_dir, "fwd.bin"));
        using FileMapping backward = _system.PageCache.Open(Path.Combine(_dir, "bwd.bin"));
        forward.Write(0, data);
        for (int p = Pages - 1; p >= 0; p--) backward.Write(p * 4096L, data.AsSpan(p * 4096, 4096));
        Assert.True(AddressOf(forward, 1) == AddressOf(forward, 0) + 4096, "forward pages are not back to back");
        Assert.True(AddressOf(backward, 1) != AddressOf(backward, 0) + 4096, "backward pages are back to back");
        var rng = new Random(3);
        foreach (FileMapping file in new[] { forward, backward })
        {
            for (int i = 0; i < 200; i++)
            {
                int offset = rng.Next(data.Length);
                var buffer = new byte[rng.Next(1, data.Length - offset + 1)];
                Assert.Equal(buffer.Length, file.Read(offset, buffer));
                Assert.True(data.AsSpan(offset, buffer.Length).SequenceEqual(buffer), $"read at {offset} of {buffer.Length} bytes");
            }
        }
    }

    private byte* AddressOf(FileMapping file, ulong index)
    {
        Allocators.Physical.PageFrame* page = file.FindGetPage(index);
        byte* address = (byte*)_system.Pages.AddressOf(page);
        file.PutPage(page);
        return address;
    }

    [Fact]
    public void WrittenBytesReachTheFileAfterFsyncAndReadBackAfterADrop()
    {
        string path = Path.Combine(_dir, "a.bin");
        using FileMapping file = _system.PageCache.Open(path);
        byte[] data = Pattern(3 * 4096 + 123, 1);
        file.Write(100, data);
        Assert.Equal(100 + data.Length, file.Length);
        Assert.True(_system.PageCache.Statistics.DirtyPages > 0);
        file.Fsync();
        Assert.Equal(0, _system.PageCache.Statistics.DirtyPages);
        byte[] disk = File.ReadAllBytes(path);
        Assert.Equal(100 + data.Length, disk.Length);
        Assert.Equal(new byte[100], disk[..100]);
        Assert.Equal(data, disk[100..]);

        Assert.Equal(file.CachedPages, _system.PageCache.DropCaches());
        Assert.Equal(0, file.CachedPages);
        var back = new byte[data.Length + 500];
        int read = file.Read(100, back);
        Assert.Equal(data.Length, read); // short at end of file
        Assert.Equal(data, back[..read]);
        _system.PageCache.CheckConsistency();
    }

    [Fact]
    public void TruncateDropsPagesPastTheEndAndToZeroFreesEveryPage()
    {
        long free0 = _system.Pages.NrFreePages;
        string path = Path.Combine(_dir, "t.bin");
        using FileMapping file = _system.PageCache.Open(path);
        file.Write(0, Pattern(64 * 4096, 2));
        file.Truncate(10 * 4096 + 7);
        Assert.Equal(11, file.CachedPages);
        Assert.Equal(10 * 4096 + 7, new FileInfo(path).Length);
        var tail = new byte[4096];
        Assert.Equal(7, file.Read(10 * 4096, tail));
        file.Truncate(0);
        Assert.Equal(0, file.CachedPages);
        Assert.Equal(0, _system.PageCache.Statistics.FilePages);
        Assert.Equal(0, _system.PageCache.Statistics.DirtyPages);
        _system.PageCache.CheckConsistency();
        _system.Pages.DrainAllPages();
        long now = _system.Pages.NrFreePages;
        Assert.True(free0 == now, $"free before {free0}, after {now}");
    }

    [Fact]
    public void FlusherWritesExpiredDirtyDataWithoutFsync()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32L << 20 },
            PageCache = new PageCacheOptions { DirtyExpire = TimeSpan.FromMilliseconds(50), DirtyWritebackInterval = TimeSpan.FromMilliseconds(20) },
        });
        string path = Path.Combine(_dir, "f.bin");
        using FileMapping file = system.PageCache.Open(path);
        byte[] data = Pattern(5000, 3);
        file.Write(0, data);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        // Clean and no longer under writeback: the write to the file has returned.
        PageCacheStatistics stats = system.PageCache.Statistics;
        while (stats.DirtyPages + stats.WritebackPages != 0 && DateTime.UtcNow < deadline) Thread.Sleep(10);
        Assert.Equal(0, stats.DirtyPages + stats.WritebackPages);
        Assert.Equal(data, File.ReadAllBytes(path));
    }
}

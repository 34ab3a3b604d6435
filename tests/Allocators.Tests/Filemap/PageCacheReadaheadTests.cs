using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>
/// Readahead as mm/readahead.c does it: a sequential reader's window starts at 4x a one-page request and doubles up
/// to ra_pages as the reader reaches each window's marker page, so almost every page is read before it is asked for;
/// a random read reads just what it asks for and leaves the window alone; ra_pages 0 turns it off.
/// </summary>
public sealed class PageCacheReadaheadTests : IDisposable
{
    private const int FilePages = 256;

    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-pcr-").FullName;
    private readonly byte[] _data = new byte[FilePages * 4096];
    private readonly string _path;

    public PageCacheReadaheadTests()
    {
        new Random(7).NextBytes(_data);
        _path = Path.Combine(_dir, "ra.bin");
        File.WriteAllBytes(_path, _data);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static MemorySystem NewSystem(int readaheadPages) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 16L << 20 },
        PageCache = new PageCacheOptions { ReadaheadPages = readaheadPages },
    });

    private void ReadPage(FileMapping file, int page)
    {
        var buffer = new byte[4096];
        Assert.Equal(4096, file.Read(page * 4096L, buffer));
        Assert.True(buffer.AsSpan().SequenceEqual(_data.AsSpan(page * 4096, 4096)), $"page {page} differs");
    }

    [Theory]
    [InlineData(1, 32, 4)]
    [InlineData(2, 32, 4)]
    [InlineData(8, 32, 16)]
    [InlineData(9, 32, 32)]
    [InlineData(1, 128, 4)]
    [InlineData(4, 128, 16)]
    [InlineData(100, 32, 32)]
    public void InitialWindowFollowsGetInitRaSize(int requested, int max, int expected)
        => Assert.Equal(expected, FileMapping.InitialWindow(requested, max));

    [Theory]
    [InlineData(4, 32, 8)]
    [InlineData(8, 32, 16)]
    [InlineData(16, 32, 32)]
    [InlineData(32, 32, 32)]
    [InlineData(4, 128, 16)]
    [InlineData(64, 128, 128)]
    public void NextWindowFollowsGetNextRaSize(int current, int max, int expected)
        => Assert.Equal(expected, FileMapping.NextWindow(current, max));

    [Fact]
    public void SequentialReadsRampTheWindowUpAndReadEveryPageAhead()
    {
        using MemorySystem system = NewSystem(32);
        PageCacheStatistics stats = system.PageCache.Statistics;
        using FileMapping file = system.PageCache.Open(_path, FileMode.Open, FileAccess.Read);
        var windows = new List<(ulong Start, int Size)>();
        for (int page = 0; page < FilePages; page++)
        {
            ReadPage(file, page);
            if (page == 0)
            {
                // One page asked for, four read: the request and three ahead.
                Assert.Equal(4 * 4, stats.PagedInKb);
                Assert.Equal(4, file.CachedPages);
            }
            var (start, size, _) = file.ReadaheadWindow;
            if (windows.Count == 0 || windows[^1] != (start, size)) windows.Add((start, size));
        }
        Assert.Equal([(0UL, 4), (4UL, 8), (12UL, 16), (28UL, 32), (60UL, 32), (92UL, 32)], windows.Take(6));
        // Every page but the first was read before the reader asked for it, and each exactly once.
        Assert.Equal(FilePages - 1, stats.ReadaheadPagesRead);
        WaitFor(() => stats.PagedInKb == FilePages * 4L, () => $"pgpgin {stats.PagedInKb} kB");
        Assert.Equal(FilePages, file.CachedPages);
        system.PageCache.CheckConsistency();
    }

    [Fact]
    public void ARandomReadReadsOnlyItsRequestAndKeepsTheWindow()
    {
        using MemorySystem system = NewSystem(32);
        PageCacheStatistics stats = system.PageCache.Statistics;
        using FileMapping file = system.PageCache.Open(_path, FileMode.Open, FileAccess.Read);
        for (int page = 0; page <= 40; page++) ReadPage(file, page);
        var before = file.ReadaheadWindow;
        Assert.Equal((60UL, 32, 32), before);
        WaitFor(() => file.CachedPages == 92, () => $"{file.CachedPages} pages cached");
        long ahead = stats.ReadaheadPagesRead;

        ReadPage(file, 200);
        var buffer = new byte[8 * 4096];
        Assert.Equal(buffer.Length, file.Read(150 * 4096L, buffer));
        Assert.True(buffer.AsSpan().SequenceEqual(_data.AsSpan(150 * 4096, buffer.Length)));
        Assert.Equal(before, file.ReadaheadWindow);
        Assert.Equal(92 + 1 + 8, file.CachedPages);
        Assert.Equal(ahead, stats.ReadaheadPagesRead);

        // The sequential reader goes on where it was, and its window keeps growing from where it was.
        for (int page = 41; page <= 70; page++) ReadPage(file, page);
        Assert.Equal((92UL, 32, 32), file.ReadaheadWindow);
    }

    [Fact]
    public void ALargeRequestIsReadInMaximumWindowsOneAhead()
    {
        using MemorySystem system = NewSystem(32);
        PageCacheStatistics stats = system.PageCache.Statistics;
        using FileMapping file = system.PageCache.Open(_path, FileMode.Open, FileAccess.Read);
        var buffer = new byte[128 * 4096];
        Assert.Equal(buffer.Length, file.Read(0, buffer));
        Assert.True(buffer.AsSpan().SequenceEqual(_data.AsSpan(0, buffer.Length)));
        // A request larger than ra_pages gets windows of its own size (up to the device's largest I/O, as
        // ondemand_readahead allows with bdi->io_pages): the request is read now as one window and the next one of
        // the same size is started behind it at once.
        Assert.Equal((128UL, 128, 128), file.ReadaheadWindow);
        WaitFor(() => stats.PagedInKb == 256 * 4L, () => $"pgpgin {stats.PagedInKb} kB");
        Assert.Equal(256, file.CachedPages);
    }

    [Fact]
    public void ZeroReadaheadPagesReadsOnlyWhatIsAsked()
    {
        using MemorySystem system = NewSystem(0);
        PageCacheStatistics stats = system.PageCache.Statistics;
        using FileMapping file = system.PageCache.Open(_path, FileMode.Open, FileAccess.Read);
        for (int page = 0; page < 64; page++)
        {
            ReadPage(file, page);
            Assert.Equal(page + 1, file.CachedPages);
            Assert.Equal((page + 1) * 4L, stats.PagedInKb);
        }
        Assert.Equal(0, stats.ReadaheadPagesRead);
        Assert.Equal((0UL, 0, 0), file.ReadaheadWindow);
    }

    private static void WaitFor(Func<bool> condition, Func<string> describe)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, describe());
            Thread.Sleep(1);
        }
    }
}

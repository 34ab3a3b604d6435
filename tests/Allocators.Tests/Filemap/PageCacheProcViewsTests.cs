using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>The page cache in /proc/meminfo (Buffers, Cached, Dirty, Writeback, Mapped, Shmem) and /proc/vmstat.</summary>
public sealed class PageCacheProcViewsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-pcv-").FullName;
    private readonly MemorySystem _system = new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 32L << 20 },
        PageCache = new PageCacheOptions { DirtyWritebackInterval = TimeSpan.Zero },
    });

    public void Dispose()
    {
        _system.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private Dictionary<string, long> Meminfo() => _system.MeminfoItems().ToDictionary(i => i.Name, i => i.Kb);

    private Dictionary<string, long> Vmstat() => _system.VmStatItems().ToDictionary(i => i.Name, i => i.Value);

    [Fact]
    public void TheFileLinesAppearOnlyOnceThereIsAPageCache()
    {
        Assert.DoesNotContain("Cached", Meminfo().Keys);
        Assert.DoesNotContain("nr_file_pages", Vmstat().Keys);
        _ = _system.PageCache;
        string[] highLow = _system.Pages.HasHighMem ? ["HighTotal", "HighFree", "LowTotal", "LowFree"] : [];
        Assert.Equal(["MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Active", "Inactive",
            "Active(anon)", "Inactive(anon)", "Active(file)", "Inactive(file)", .. highLow, "SwapTotal", "SwapFree", "Dirty", "Writeback", "Mapped", "Shmem"],
            _system.MeminfoItems().Select(i => i.Name).Take(18 + highLow.Length));
        Assert.Contains("Cached:                0 kB\n", _system.Meminfo());
    }

    [Fact]
    public void CachedAndDirtyFollowWritesFsyncAndDrops()
    {
        const int N = 37;
        using FileMapping file = _system.PageCache.Open(Path.Combine(_dir, "m.bin"));
        _system.Pages.DrainAllPages();
        long free0 = Meminfo()["MemFree"];
        long available0 = Meminfo()["MemAvailable"];

        file.Write(0, new byte[N * 4096]);
        var m = Meminfo();
        Assert.Equal(N * 4, m["Cached"]);
        Assert.Equal(N * 4, m["Dirty"]);
        Assert.Equal(0, m["Writeback"]);
        Assert.Equal(0, m["Buffers"]);
        Assert.Equal(0, m["Mapped"]);
        Assert.Equal(0, m["Shmem"]);
        // Cached pages are not free, but most of them could be had back: MemAvailable barely moves.
        Assert.Equal(_system.Pages.NrFreePages * 4, m["MemFree"]);
        Assert.True(free0 - m["MemFree"] >= N * 4, $"MemFree fell by {free0 - m["MemFree"]} kB for {N * 4} kB cached");
        Assert.True(available0 - m["MemAvailable"] < N * 4, $"MemAvailable fell by {available0 - m["MemAvailable"]} kB");

        file.Fsync();
        m = Meminfo();
        Assert.Equal(N * 4, m["Cached"]);
        Assert.Equal(0, m["Dirty"]);
        Assert.Equal(0, m["Writeback"]);

        _system.PageCache.DropCaches();
        Assert.Equal(0, Meminfo()["Cached"]);
    }

    [Fact]
    public void VmstatCountersMatchTheStatistics()
    {
        PageCacheStatistics stats = _system.PageCache.Statistics;
        string path = Path.Combine(_dir, "v.bin");
        File.WriteAllBytes(path, new byte[64 * 4096]);
        using FileMapping file = _system.PageCache.Open(path);
        Assert.Equal(64 * 4096, file.Read(0, new byte[64 * 4096]));
        // The last readahead batch counts its pages just after the reader may already copy them.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (stats.PagedInKb < 64 * 4) Assert.True(DateTime.UtcNow < deadline, $"pgpgin {stats.PagedInKb}");
        file.Write(0, new byte[5 * 4096 + 1]);
        var v = Vmstat();
        Assert.Equal(stats.FilePages, v["nr_file_pages"]);
        Assert.Equal(6, v["nr_dirty"]);
        Assert.Equal(0, v["nr_writeback"]);
        Assert.Equal(0, v["nr_mapped"]);
        Assert.Equal(64 * 4, v["pgpgin"]);
        Assert.Equal(stats.PagedInKb, v["pgpgin"]);
        Assert.Equal(0, v["pgpgout"]);

        file.Fsync();
        v = Vmstat();
        Assert.Equal(0, v["nr_dirty"]);
        Assert.Equal(6 * 4, v["pgpgout"]);
        Assert.Equal(stats.PagedOutKb, v["pgpgout"]);
        Assert.Equal(_system.Pages.NrFreePages, v["nr_free_pages"]);

        // One line per counter, whichever layers report it.
        _ = _system.Kernel;
        var names = _system.VmStatItems().Select(i => i.Name).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        Assert.Contains("pgmajfault", names);
        Assert.Contains($"nr_file_pages {stats.FilePages}\n", _system.VmStat());
    }
}

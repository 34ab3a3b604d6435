using System.Collections.Concurrent;
using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>
/// Files closed while drop_caches, sync and the flusher walk the open files: none of them may touch a closed file's
/// tree, lookup gate or locks, and every page must come back to the allocator.
/// </summary>
public sealed class PageCacheCloseRaceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-pcc-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ClosingFilesWhileDropsSyncsAndTheFlusherRunLeaksNothing()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32L << 20 },
            PageCache = new PageCacheOptions { DirtyExpire = TimeSpan.Zero, DirtyWritebackInterval = TimeSpan.FromMilliseconds(1) },
        });
        PageCache cache = system.PageCache;
        system.Pages.DrainAllPages();
        long free0 = system.Pages.NrFreePages;
        var errors = new ConcurrentQueue<Exception>();
        var stop = new ManualResetEventSlim();
        long closes = 0;
        var threads = new List<Thread>();
        for (int t = 0; t < 3; t++)
        {
            int me = t;
            threads.Add(new Thread(() =>
            {
                try
                {
                    var data = new byte[8 * 4096];
                    var back = new byte[data.Length];
                    string path = Path.Combine(_dir, $"c{me}.bin");
                    for (int round = 0; !stop.IsSet; round++)
                    {
                        data.AsSpan().Fill((byte)round);
                        using (FileMapping file = cache.Open(path))
                        {
                            file.Write(0, data);
                            Assert.Equal(data.Length, file.Read(0, back));
                            Assert.Equal(data, back);
                        }
                        Interlocked.Increment(ref closes);
                        Assert.Equal(data, File.ReadAllBytes(path));
                    }
                }
                catch (Exception e) { errors.Enqueue(e); }
            }));
        }
        threads.Add(new Thread(() =>
        {
            try
            {
                while (!stop.IsSet)
                {
                    cache.DropCaches();
                    cache.Sync();
                }
            }
            catch (Exception e) { errors.Enqueue(e); }
        }));
        foreach (Thread thread in threads) thread.Start();
        stop.Wait(TimeSpan.FromSeconds(2));
        stop.Set();
        foreach (Thread thread in threads) thread.Join();
        Assert.True(errors.IsEmpty, string.Join("\n", errors));
        Assert.True(Interlocked.Read(ref closes) > 10, $"only {closes} files were closed");
        Assert.Equal(0, cache.Statistics.FilePages);
        Assert.Equal(0, cache.Statistics.DirtyPages);
        Assert.Equal(0, cache.Statistics.WritebackPages);
        system.Pages.DrainAllPages();
        Assert.Equal(free0, system.Pages.NrFreePages);
    }
}

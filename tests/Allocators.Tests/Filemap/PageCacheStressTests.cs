using System.Buffers.Binary;
using System.Collections.Concurrent;
using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>
/// Threads that read and write the same pages while drop_caches, fsync, sync and the flusher run beside them. Each
/// writer owns every Nth 8-byte slot, so every slot's last value is known: a lost update, a stale page brought back
/// after a drop, or a page cached twice shows as a wrong value, in the cache or on disk.
/// </summary>
public sealed class PageCacheStressTests : IDisposable
{
    private const int Pages = 16;
    private const int Slots = Pages * 4096 / 8;
    private const int Writers = 4;

    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-pcs-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // The owner's number in the top byte: a slot holds its owner's tag whatever value it has, so a reader that sees
    // another tag read bytes from somewhere else.
    private static long Tag(int slot) => (long)(slot % Writers + 1) << 56;

    [Fact]
    public void ConcurrentWritersReadersDropsAndFsyncsLoseNothing()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32L << 20 },
            PageCache = new PageCacheOptions { DirtyExpire = TimeSpan.Zero, DirtyWritebackInterval = TimeSpan.FromMilliseconds(5) },
        });
        PageCache cache = system.PageCache;
        system.Pages.DrainAllPages();
        long free0 = system.Pages.NrFreePages;

        string path = Path.Combine(_dir, "slots.bin");
        var initial = new byte[Pages * 4096];
        for (int s = 0; s < Slots; s++) BinaryPrimitives.WriteInt64LittleEndian(initial.AsSpan(s * 8), Tag(s));
        File.WriteAllBytes(path, initial);

        var last = new long[Slots];
        for (int s = 0; s < Slots; s++) last[s] = Tag(s);
        var errors = new ConcurrentQueue<Exception>();
        var stop = new ManualResetEventSlim();
        long writes = 0, drops = 0;
        FileMapping file = cache.Open(path);
        try
        {
            var threads = new List<Thread>();
            for (int t = 0; t < Writers; t++)
            {
                int me = t;
                threads.Add(new Thread(() => Guard(errors, () =>
                {
                    var rng = new Random(me);
                    Span<byte> slot = stackalloc byte[8];
                    var whole = new byte[Pages * 4096];
                    long counter = 0;
                    while (!stop.IsSet)
                    {
                        int s = me + Writers * rng.Next(Slots / Writers);
                        long value = Tag(s) | ++counter;
                        BinaryPrimitives.WriteInt64LittleEndian(slot, value);
                        file.Write(s * 8L, slot);
                        last[s] = value;
                        Interlocked.Increment(ref writes);
                        // A thread reads its own writes back, whatever was dropped or written back meanwhile.
                        Assert.Equal(8, file.Read(s * 8L, slot));
                        Assert.Equal(value, BinaryPrimitives.ReadInt64LittleEndian(slot));
                        int other = rng.Next(Slots);
                        Assert.Equal(8, file.Read(other * 8L, slot));
                        Assert.Equal(Tag(other), BinaryPrimitives.ReadInt64LittleEndian(slot) & (0xFFL << 56));
                        if ((counter & 63) == 0)
                        {
                            Assert.Equal(whole.Length, file.Read(0, whole));
                            for (int i = 0; i < Slots; i++)
                                Assert.Equal(Tag(i), BinaryPrimitives.ReadInt64LittleEndian(whole.AsSpan(i * 8)) & (0xFFL << 56));
                        }
                    }
                })));
            }
            threads.Add(new Thread(() => Guard(errors, () =>
            {
                var rng = new Random(99);
                while (!stop.IsSet)
                {
                    switch (rng.Next(3))
                    {
                        case 0: cache.DropCaches(); Interlocked.Increment(ref drops); break;
                        case 1: file.Fsync(); break;
                        default: cache.Sync(); break;
                    }
                }
            })));
            foreach (Thread thread in threads) thread.Start();
            // Two seconds, or longer on a loaded machine until enough of each operation ran (at most 30 s).
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (!stop.Wait(50) && sw.Elapsed < TimeSpan.FromSeconds(30)
                   && (sw.Elapsed < TimeSpan.FromSeconds(2) || Interlocked.Read(ref writes) <= 200 || Interlocked.Read(ref drops) <= 2)) { }
            stop.Set();
            foreach (Thread thread in threads) thread.Join();
            Assert.True(errors.IsEmpty, string.Join("\n", errors));
            Assert.True(Interlocked.Read(ref writes) > 200, $"only {writes} writes ran");
            Assert.True(Interlocked.Read(ref drops) > 2, $"only {drops} drops ran");

            var back = new byte[Pages * 4096];
            Assert.Equal(back.Length, file.Read(0, back));
            for (int s = 0; s < Slots; s++) Assert.Equal(last[s], BinaryPrimitives.ReadInt64LittleEndian(back.AsSpan(s * 8)));
            file.Fsync();
            byte[] disk = File.ReadAllBytes(path);
            for (int s = 0; s < Slots; s++) Assert.Equal(last[s], BinaryPrimitives.ReadInt64LittleEndian(disk.AsSpan(s * 8)));
            cache.CheckConsistency();
            Assert.True(file.CachedPages <= Pages, $"{file.CachedPages} pages cached for a {Pages}-page file");
            Assert.Equal(file.CachedPages, cache.Statistics.FilePages);

            // A readahead still in flight keeps its pages locked, and drop_caches skips locked pages: drop again.
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (cache.DropCaches() >= 0 && file.CachedPages != 0) Assert.True(DateTime.UtcNow < deadline, $"{file.CachedPages} pages stay cached");
            Assert.Equal(0, cache.Statistics.FilePages);
            Assert.Equal(0, cache.Statistics.DirtyPages);
            Assert.Equal(0, cache.Statistics.WritebackPages);
        }
        finally
        {
            stop.Set();
            file.Dispose();
        }
        system.Pages.DrainAllPages();
        Assert.Equal(free0, system.Pages.NrFreePages);
    }

    private static void Guard(ConcurrentQueue<Exception> errors, Action body)
    {
        try { body(); }
        catch (Exception e) { errors.Enqueue(e); }
    }
}

using Allocators.Physical;
using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public unsafe class ConcurrencyTests
{
    [Fact]
    public void ThreadsDemandFaultDisjointAndOverlappingPages()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            const int threads = 4, pagesPerThread = 256;
            ulong a = mm.Mmap(0, (ulong)(threads * pagesPerThread) * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            ulong shared = mm.Mmap(0, 64 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            using var start = new Barrier(threads);
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                start.SignalAndWait();
                for (int round = 0; round < 3; round++)
                {
                    for (int i = 0; i < pagesPerThread; i++)
                    {
                        ulong va = a + (ulong)(t * pagesPerThread + i) * 4096;
                        if (round == 0) mm.Write<long>(va, t * 100000 + i);
                        else Assert.Equal(t * 100000 + i, mm.Read<long>(va));
                    }
                    // Overlapping pages: every thread writes its own slot in each page.
                    for (int p = 0; p < 64; p++)
                    {
                        ulong va = shared + (ulong)p * 4096 + (ulong)t * 8;
                        Interlocked.Increment(ref *(long*)mm.Translate(va, MemoryAccess.Write));
                        mm.Write<long>(va + 64, mm.Read<long>(va + 64) + 1);
                    }
                }
            })).ToArray();
            foreach (var w in workers) w.Start();
            foreach (var w in workers) w.Join();
            for (int t = 0; t < threads; t++)
                for (int p = 0; p < 64; p++)
                {
                    Assert.Equal(3, mm.Read<long>(shared + (ulong)p * 4096 + (ulong)t * 8));
                    Assert.Equal(3, mm.Read<long>(shared + (ulong)p * 4096 + (ulong)t * 8 + 64));
                }
            var s = mm.Statistics;
            Assert.Equal(threads * pagesPerThread + 64, s.RssAnon);
            Assert.True(s.MinorFaults >= threads * pagesPerThread + 64);
            Assert.True(mm.TlbStatistics.Threads >= 1);
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void ReadersRaceWithMunmapMprotectAndFork()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            const int pages = 64;
            ulong a = mm.Mmap(0x1000_0000, pages * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
            for (int i = 0; i < pages; i++) mm.Write<long>(a + (ulong)i * 4096, 7);
            using var stop = new CancellationTokenSource();
            long reads = 0, faults = 0;
            var readers = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
            {
                var rng = new Random();
                while (!stop.IsCancellationRequested)
                {
                    ulong va = a + (ulong)rng.Next(pages) * 4096;
                    try
                    {
                        long v = mm.Read<long>(va);
                        Assert.True(v == 7 || v == 0, $"read {v} at 0x{va:x}");
                        Interlocked.Increment(ref reads);
                    }
                    catch (SegmentationFaultException) { Interlocked.Increment(ref faults); }
                }
            })).ToArray();
            foreach (var r in readers) r.Start();
            var deadline = DateTime.UtcNow.AddSeconds(1.5);
            int iteration = 0;
            while (DateTime.UtcNow < deadline || iteration < 20)
            {
                ulong va = a + (ulong)(iteration % pages) * 4096;
                mm.Mprotect(va, 4096, MemoryProtection.None);
                mm.Mprotect(va, 4096, MemoryProtection.ReadWrite);
                mm.Munmap(va, 4096);
                mm.Mmap(va, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
                mm.Write<long>(va, 7);
                using (var child = mm.Fork()) child.Write<long>(va, 8);
                iteration++;
            }
            stop.Cancel();
            foreach (var r in readers) r.Join();
            Assert.True(reads > 0);
            Assert.True(mm.TlbStatistics.Shootdowns > 0);
            for (int i = 0; i < pages; i++) Assert.Equal(7, mm.Read<long>(a + (ulong)i * 4096));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void WritesRacingMunmapNeverReachTheReusedFrame()
    {
        // The frame must be reused at once, which KASAN's quarantine prevents on purpose.
        using var f = new MmuFixture(checks: CheckedModeOptions.Parse(""));
        using (var mm = f.NewProcess())
        {
            const ulong r = 0x2000_0000, other = 0x3000_0000;
            const MapFlags fixedAnon = MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed | MapFlags.Populate;
            mm.Mmap(r, 4096, MemoryProtection.ReadWrite, fixedAnon);
            using var stop = new CancellationTokenSource();
            long writes = 0, attempts = 0;
            var writer = new Thread(() =>
            {
                while (!stop.IsCancellationRequested)
                {
                    try { mm.Write<long>(r + 8, unchecked((long)0xBADBADBADBADBADL)); Interlocked.Increment(ref writes); }
                    catch (SegmentationFaultException) { }
                    Interlocked.Increment(ref attempts);
                }
            });
            writer.Start();
            var pattern = new byte[4096];
            var back = new byte[4096];
            Array.Fill(pattern, (byte)0x11);
            int reused = 0;
            try
            {
                for (int i = 0; i < 80; i++)
                {
                    var before = mm.FollowPage(r);
                    mm.Munmap(r, 4096);
                    // The freed frame is the next one the page allocator hands out on this thread.
                    mm.Mmap(other, 4096, MemoryProtection.ReadWrite, fixedAnon);
                    if (mm.FollowPage(other) == before) reused++;
                    mm.WriteBytes(other, pattern);
                    // Let the writer run a few attempts while the frame belongs to the other mapping.
                    long seen = Volatile.Read(ref attempts);
                    var waited = System.Diagnostics.Stopwatch.StartNew();
                    while (Volatile.Read(ref attempts) < seen + 3 && waited.ElapsedMilliseconds < 20) Thread.Sleep(0);
                    mm.ReadBytes(other, back);
                    Assert.Equal(pattern, back);
                    mm.Munmap(other, 4096);
                    mm.Mmap(r, 4096, MemoryProtection.ReadWrite, fixedAnon);
                }
            }
            finally
            {
                stop.Cancel();
                writer.Join();
            }
            Assert.True(writes > 0);
            Assert.True(reused > 0, "the test never reused a frame");
        }
        f.AssertAllFreed();
    }
}

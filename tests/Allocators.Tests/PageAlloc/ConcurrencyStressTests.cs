using System.Collections.Concurrent;
using System.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Xunit.Abstractions;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// Several threads allocating and freeing at once, half of the frees on a thread other than the allocating one,
/// while another thread drains the per-thread lists and reads the statistics. Bounded to about two seconds.
/// </summary>
public sealed unsafe class ConcurrencyStressTests(ITestOutputHelper output)
{
    private readonly record struct Block(nint Page, int Order, int Owner, int Seq);

    private static ulong StampOf(Block b) => ((ulong)(uint)b.Owner << 32) | (uint)b.Seq;

    private static void Write(PageAllocator pa, Block b)
    {
        byte* bytes = pa.PageAddress((PageFrame*)b.Page);
        *(ulong*)bytes = StampOf(b);
        *(ulong*)(bytes + ((long)PageFrame.PageSize << b.Order) - 8) = ~StampOf(b);
    }

    private static void CheckAndFree(PageAllocator pa, Block b)
    {
        var page = (PageFrame*)b.Page;
        byte* bytes = pa.PageAddress(page);
        ulong head = *(ulong*)bytes, tail = *(ulong*)(bytes + ((long)PageFrame.PageSize << b.Order) - 8);
        if (head != StampOf(b) || tail != ~StampOf(b))
            throw new InvalidOperationException(
                $"Block pfn 0x{page->Pfn:x} order {b.Order} of thread {b.Owner} #{b.Seq} was overwritten: 0x{head:x}/0x{tail:x}.");
        if (!page->Has(PageFlags.Allocated) || page->Order != b.Order || page->RefCount != 1)
            throw new InvalidOperationException($"Block pfn 0x{page->Pfn:x} lost its allocation state: {page->Describe()}");
        pa.FreePages(page, b.Order);
    }

    private static readonly Gfp[] Flags =
        [Gfp.Kernel | Gfp.NoWarn, Gfp.Atomic | Gfp.NoWarn, Gfp.Kernel | Gfp.Zero | Gfp.NoWarn, Gfp.Kernel | Gfp.Comp | Gfp.NoWarn];

    private static int PickOrder(Random r) => r.Next(100) switch
    {
        < 55 => 0,
        < 75 => r.Next(1, 4),
        < 98 => r.Next(4, 7),
        _ => r.Next(7, 11),
    };

    [Fact]
    public void ThreadsAllocateAndFreeAcrossThreadsWithoutLosingOrSharingPages()
    {
        const int Workers = 4;
        using var sys = NewSystem(32);
        PageAllocator pa = sys.Pages;
        string initial = pa.BuddyInfo();
        long alloc0 = pa.PagesAllocated, freed0 = pa.PagesFreed;

        // Worker i hands blocks to worker i+1, so every handed-over block is freed by a thread that did not allocate it.
        var handoff = Enumerable.Range(0, Workers).Select(_ => new ConcurrentQueue<Block>()).ToArray();
        var errors = new ConcurrentQueue<Exception>();
        long allocatedPages = 0, freedPages = 0, allocations = 0, remoteFrees = 0, failures = 0, drains = 0;
        var clock = Stopwatch.StartNew();
        var duration = TimeSpan.FromSeconds(2);
        using var start = new Barrier(Workers + 1);

        void Worker(int id)
        {
            var random = new Random(1000 + id);
            var mine = new List<Block>();
            long myAllocated = 0, myFreed = 0, myAllocs = 0, myRemote = 0, myFailures = 0;
            int seq = 0;
            try
            {
                start.SignalAndWait();
                while (clock.Elapsed < duration)
                {
                    for (int step = 0; step < 64; step++)
                    {
                        if (random.Next(2) == 0 && mine.Count < 48)
                        {
                            int order = PickOrder(random);
                            Gfp gfp = Flags[random.Next(Flags.Length)];
                            var page = pa.AllocPages(gfp, order);
                            if (page == null) { myFailures++; continue; }
                            if ((gfp & Gfp.Zero) != 0 && !IsZero(pa, page, Math.Min(order, 2)))
                                throw new InvalidOperationException($"__GFP_ZERO block pfn 0x{page->Pfn:x} is not zero");
                            if ((page->Pfn & ((1UL << order) - 1)) != 0)
                                throw new InvalidOperationException($"pfn 0x{page->Pfn:x} not aligned to order {order}");
                            var b = new Block((nint)page, order, id, seq++);
                            Write(pa, b);
                            mine.Add(b);
                            myAllocated += 1L << order;
                            myAllocs++;
                        }
                        else if (mine.Count > 0)
                        {
                            int i = random.Next(mine.Count);
                            Block b = mine[i];
                            mine[i] = mine[^1];
                            mine.RemoveAt(mine.Count - 1);
                            var next = handoff[(id + 1) % Workers];
                            bool local = random.Next(2) == 0;
                            if (!local && next.Count > 64) Thread.Yield();   // give the receiving thread a chance to run
                            if (local || next.Count > 256)
                            {
                                CheckAndFree(pa, b);
                                myFreed += 1L << b.Order;
                            }
                            else
                            {
                                next.Enqueue(b);
                            }
                        }
                        // Free some blocks that other threads allocated.
                        for (int k = 0; k < 4 && handoff[id].TryDequeue(out Block other); k++)
                        {
                            CheckAndFree(pa, other);
                            myFreed += 1L << other.Order;
                            if (other.Owner != id) myRemote++;
                        }
                    }
                }
                foreach (Block b in mine)
                {
                    CheckAndFree(pa, b);
                    myFreed += 1L << b.Order;
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
            finally
            {
                Interlocked.Add(ref allocatedPages, myAllocated);
                Interlocked.Add(ref freedPages, myFreed);
                Interlocked.Add(ref allocations, myAllocs);
                Interlocked.Add(ref remoteFrees, myRemote);
                Interlocked.Add(ref failures, myFailures);
            }
        }

        void Observer()
        {
            try
            {
                start.SignalAndWait();
                while (clock.Elapsed < duration)
                {
                    pa.DrainAllPages();
                    drains++;
                    long pcp = pa.PcpPages;
                    if (pcp < 0 || pa.NrFreePages + pcp > pa.ManagedPages)
                        throw new InvalidOperationException($"free accounting out of range: {pa.NrFreePages} + {pcp}");
                    if (pa.BuddyInfo().Length == 0) throw new InvalidOperationException("empty buddyinfo");
                    Thread.Sleep(1);
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
        }

        var threads = Enumerable.Range(0, Workers).Select(id => new Thread(() => Worker(id)) { IsBackground = true })
            .Append(new Thread(Observer) { IsBackground = true }).ToList();
        threads.ForEach(t => t.Start());
        foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(30)), "a stress thread hung");

        foreach (Block left in handoff.SelectMany(q => q))
        {
            CheckAndFree(pa, left);
            freedPages += 1L << left.Order;
        }
        Assert.Empty(errors);
        output.WriteLine($"{allocations} allocations ({allocatedPages} pages), {remoteFrees} remote frees, {failures} failures, {drains} drains");
        Assert.True(allocations > 1000, "the stress loop should have run");
        Assert.True(remoteFrees * 5 > allocations, "a good share of the blocks should have been freed by another thread");

        pa.DrainAllPages();
        Assert.Equal(0, pa.PcpPages);
        Assert.Equal(allocatedPages, freedPages);
        Assert.Equal(allocatedPages, pa.PagesAllocated - alloc0);
        Assert.Equal(freedPages, pa.PagesFreed - freed0);
        Assert.Equal(pa.ManagedPages, pa.NrFreePages);
        pa.CheckConsistency();
        Assert.Equal(initial, pa.BuddyInfo());
    }

    [Fact]
    public void CountersStayExactWhileExitedThreadsAreRetired()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        long alloc0 = pa.PagesAllocated, freed0 = pa.PagesFreed;
        long expected = 0;
        long badReads = 0, reads = 0;
        string? firstBad = null;
        var clock = Stopwatch.StartNew();

        for (int round = 0; round < 40 && clock.Elapsed < TimeSpan.FromSeconds(2); round++)
        {
            // Short-lived threads each leave a per-thread cache with counters behind; their exit retires it later.
            var threads = Enumerable.Range(0, 32).Select(_ => new Thread(() =>
            {
                for (int i = 0; i < 3; i++)
                {
                    var page = pa.AllocPages(Gfp.Kernel, i);
                    pa.FreePages(page, i);
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            expected += 32 * (1 + 2 + 4);
            long want = expected;

            using var stop = new ManualResetEventSlim();
            var reader = new Thread(() =>
            {
                while (!stop.IsSet)
                {
                    long a = pa.PagesAllocated - alloc0, f = pa.PagesFreed - freed0;
                    Interlocked.Increment(ref reads);
                    if (a != want || f != want)
                    {
                        Interlocked.Increment(ref badReads);
                        Interlocked.CompareExchange(ref firstBad, $"allocated {a}, freed {f}, expected {want}", null);
                    }
                }
            });
            reader.Start();
            GC.Collect();
            GC.WaitForPendingFinalizers();   // the exited threads' caches are flushed and retired here
            GC.Collect();
            GC.WaitForPendingFinalizers();
            stop.Set();
            reader.Join();
        }

        output.WriteLine($"{reads} counter reads, {badReads} inexact, threads with caches now {pa.PcpThreadCount}");
        Assert.True(badReads == 0, firstBad);
        Assert.Equal(expected, pa.PagesAllocated - alloc0);
        pa.DrainAllPages();
        Assert.Equal(pa.ManagedPages, pa.NrFreePages);
    }

    [Fact]
    public void ConcurrentGetPageAndPutPageFreeTheBlockExactlyOnce()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        long freed0 = pa.PagesFreed;
        for (int round = 0; round < 20; round++)
        {
            PageFrame* head = pa.AllocPages(Gfp.Kernel | Gfp.Comp, 3);
            var headAddress = (nint)head;
            var threads = Enumerable.Range(0, 4).Select(id => new Thread(() =>
            {
                var h = (PageFrame*)headAddress;
                for (int i = 0; i < 5000; i++)
                {
                    PageFrame* tail = h + 1 + (i + id) % 7;
                    pa.GetPage(tail);
                    pa.PutPage(tail);
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Assert.Equal(1, head->RefCount);
            Assert.True(head->Has(PageFlags.Allocated));
            Assert.Equal(freed0 + round * 8, pa.PagesFreed);

            // Everyone takes a reference at once; the last put, wherever it happens, frees the block.
            for (int i = 0; i < 4; i++) pa.GetPage(head + 1 + i);
            threads = Enumerable.Range(0, 4).Select(id => new Thread(() => pa.PutPage((PageFrame*)headAddress + 1 + id))).ToList();
            threads.ForEach(t => t.Start());
            pa.PutPage(head);
            threads.ForEach(t => t.Join());
            Assert.Equal(freed0 + (round + 1) * 8, pa.PagesFreed);
            Assert.False(head->Has(PageFlags.Allocated));
        }
        pa.DrainAllPages();
        pa.CheckConsistency();
        Assert.Equal(boot, pa.BuddyInfo());
    }

    [Fact]
    public void HotAddAndRemoveWhileOtherThreadsAllocate()
    {
        // Sparse 16 MiB of 8 MiB sections, room for 32 MiB. Two threads allocate and free (stamped blocks, no growth)
        // while this thread keeps adding a section and removing whichever section is free.
        using var sys = NewSparseSystem(16, 8, 32, autoGrow: false);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        var errors = new ConcurrentQueue<Exception>();
        var clock = Stopwatch.StartNew();
        var duration = TimeSpan.FromSeconds(1.5);
        long allocated = 0, freed = 0;

        void Worker(int id)
        {
            var random = new Random(id);
            var mine = new List<Block>();
            int seq = 0;
            try
            {
                while (clock.Elapsed < duration)
                {
                    if (mine.Count < 160 && random.Next(2) == 0)
                    {
                        int order = random.Next(0, 7);
                        PageFrame* page = pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, order);
                        if (page == null) continue;
                        if (!sys.Memory.IsSectionOnline(sys.Memory.PfnToSection(page->Pfn)))
                            throw new InvalidOperationException($"pfn 0x{page->Pfn:x} handed out from an offline section");
                        var b = new Block((nint)page, order, id, seq++);
                        Write(pa, b);
                        mine.Add(b);
                        Interlocked.Add(ref allocated, 1L << order);
                    }
                    else if (mine.Count > 0)
                    {
                        int i = random.Next(mine.Count);
                        Block b = mine[i];
                        mine[i] = mine[^1];
                        mine.RemoveAt(mine.Count - 1);
                        CheckAndFree(pa, b);
                        Interlocked.Add(ref freed, 1L << b.Order);
                    }
                }
                foreach (Block b in mine)
                {
                    CheckAndFree(pa, b);
                    Interlocked.Add(ref freed, 1L << b.Order);
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
        }

        var workers = Enumerable.Range(1, 2).Select(id => new Thread(() => Worker(id)) { IsBackground = true }).ToList();
        workers.ForEach(t => t.Start());
        int removed = 0, refused = 0, bootSectionsRemoved = 0;
        while (clock.Elapsed < duration)
        {
            pa.AddMemory();
            Thread.Sleep(1);   // let the workers spread over the new section
            for (int s = 0; s < sys.Memory.MaxSections; s++)
            {
                if (!sys.Memory.IsSectionOnline(s) || sys.Memory.PresentPages <= 2 * 2048) continue;
                try
                {
                    pa.RemoveMemory(s);
                    removed++;
                    if (s < 2) bootSectionsRemoved++;
                }
                catch (InvalidOperationException)
                {
                    refused++;   // a page of it was in use: nothing changed
                }
            }
        }
        foreach (var t in workers) Assert.True(t.Join(TimeSpan.FromSeconds(30)));
        Assert.Empty(errors);
        output.WriteLine($"{removed} sections removed ({bootSectionsRemoved} boot sections), {refused} removals refused, {pa.SectionsAdded} added");
        Assert.True(removed > 0);

        pa.DrainAllPages();
        Assert.Equal(allocated, freed);
        Assert.Equal(sys.Memory.PresentPages, pa.ManagedPages);
        Assert.Equal(pa.ManagedPages, pa.NrFreePages);
        Assert.Equal(pa.Zones.Sum(z => z.PresentPages), sys.Memory.PresentPages);
        // Bring the arena back to its two boot sections and compare with boot.
        for (int s = 0; s < sys.Memory.MaxSections; s++)
            if (sys.Memory.IsSectionOnline(s) && sys.Memory.PresentPages > 2 * 2048) pa.RemoveMemory(s);
        Assert.Equal(boot, pa.BuddyInfo());
    }
}

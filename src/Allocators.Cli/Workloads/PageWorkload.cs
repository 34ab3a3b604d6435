using System.Collections.Concurrent;
using System.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Cli.Workloads;

/// <summary>
/// A mixed multi-threaded page workload: every thread allocates and frees blocks of random order, hands half of
/// its blocks to the next thread to free (cross-thread frees), stamps every block and checks the stamp at free.
/// </summary>
internal sealed unsafe class PageWorkload(PageAllocator pages, int threads, TimeSpan duration)
{
    private long _operations;
    private long _stampErrors;
    private long _failures;

    public long Operations => Interlocked.Read(ref _operations);
    public long StampErrors => Interlocked.Read(ref _stampErrors);
    public long Failures => Interlocked.Read(ref _failures);
    public TimeSpan Duration => duration;

    public void Run()
    {
        var handoff = new ConcurrentQueue<(nint Page, int Order, long Stamp)>[threads];
        for (int i = 0; i < threads; i++) handoff[i] = new();
        var deadline = Stopwatch.StartNew();
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() => Worker(id, handoff, deadline)) { IsBackground = true, Name = $"pages-{id}" };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        foreach (var queue in handoff)
        {
            while (queue.TryDequeue(out var item)) Free(item);
        }
    }

    private void Worker(int id, ConcurrentQueue<(nint, int, long)>[] handoff, Stopwatch clock)
    {
        var random = new Random(id * 7919 + 1);
        var live = new List<(nint Page, int Order, long Stamp)>();
        long sequence = 0;
        long ops = 0;
        while (clock.Elapsed < duration)
        {
            for (int i = 0; i < 256; i++)
            {
                while (handoff[id].TryDequeue(out var given)) { Free(given); ops++; }
                if (live.Count < 64 && (live.Count == 0 || random.Next(2) == 0))
                {
                    int order = random.Next(100) switch { < 70 => 0, < 85 => 1, < 93 => 2, < 97 => 3, < 99 => 5, _ => 9 };
                    PageFrame* page = pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, order);
                    if (page == null) { Interlocked.Increment(ref _failures); continue; }
                    long stamp = ((long)id << 48) | ++sequence;
                    *(long*)pages.PageAddress(page) = stamp;
                    live.Add(((nint)page, order, stamp));
                }
                else
                {
                    int index = random.Next(live.Count);
                    var item = live[index];
                    live[index] = live[^1];
                    live.RemoveAt(live.Count - 1);
                    if (random.Next(2) == 0) handoff[(id + 1) % handoff.Length].Enqueue(item);
                    else Free(item);
                }
                ops++;
            }
            Interlocked.Add(ref _operations, ops);
            ops = 0;
        }
        foreach (var item in live) Free(item);
    }

    private void Free((nint Page, int Order, long Stamp) item)
    {
        var page = (PageFrame*)item.Page;
        if (*(long*)pages.PageAddress(page) != item.Stamp) Interlocked.Increment(ref _stampErrors);
        pages.FreePages(page, item.Order);
    }
}

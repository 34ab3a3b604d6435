using Allocators.Native;
using Microsoft.Win32.SafeHandles;

namespace Allocators.Workloads;

/// <summary>One measured run: a workload on an allocator at a thread count.</summary>
internal sealed record BenchResult(
    string Workload,
    string Allocator,
    int Threads,
    long Operations,
    TimeSpan Elapsed,
    long PeakRssBytes,
    long BaselineRssBytes,
    long PeakLiveBytes,
    long? PeakFootprintBytes,
    bool Verified,
    string? Detail)
{
    /// <summary>Operations per second.</summary>
    public double OpsPerSecond => Elapsed.TotalSeconds > 0 ? Operations / Elapsed.TotalSeconds : 0;

    /// <summary>How much the process's resident set grew during the run (peak minus the level just before it).</summary>
    public long RssGrowthBytes => Math.Max(0, PeakRssBytes - BaselineRssBytes);

    /// <summary>Peak footprint over peak live bytes (Allocators, and native allocators in isolated runs).</summary>
    public double? Fragmentation => PeakFootprintBytes is { } f && PeakLiveBytes > 0 ? (double)f / PeakLiveBytes : null;
}

/// <summary>What the suite runs: workloads, allocators, thread counts, scale.</summary>
internal sealed record BenchPlan(IReadOnlyList<Workload> Workloads, IReadOnlyList<AllocatorUnderTest> Allocators, IReadOnlyList<int> ThreadCounts, BenchScale Scale, bool Isolated = false)
{
    /// <summary>Runs one measurement in a fresh process when <see cref="Isolated"/> (the CLI starts itself again).</summary>
    public Func<Workload, AllocatorUnderTest, int, BenchScale, BenchResult>? RunIsolated { get; init; }

    /// <summary>Every runnable (workload, allocator) pair, in order.</summary>
    public IEnumerable<(Workload Workload, AllocatorUnderTest Allocator)> Pairs()
    {
        foreach (var w in Workloads)
            foreach (var a in Allocators)
                if (a.IsAvailable && a.Supports(w)) yield return (w, a);
    }

    /// <summary>Number of measured runs per round.</summary>
    public int RunCount => Pairs().Count() * ThreadCounts.Count;

    /// <summary>Measured rounds of <paramref name="workload"/>.</summary>
    public int RoundsOf(Workload workload) => Math.Max(1, Math.Min(Scale.Rounds, workload.MaxRounds));

    /// <summary>Number of measured runs in all rounds.</summary>
    public int TotalRuns => Pairs().Sum(p => RoundsOf(p.Workload)) * ThreadCounts.Count;

    /// <summary>1, 2, 4, ... up to the core count, then twice the core count (oversubscribed).</summary>
    public static IReadOnlyList<int> DefaultThreadCounts(int cores)
    {
        var list = new List<int>();
        for (int t = 1; t < cores; t *= 2) list.Add(t);
        list.Add(cores);
        list.Add(cores * 2);
        return list.Distinct().ToList();
    }
}

/// <summary>Runs a plan: per pair a short warm-up, then one measured run per thread count, each with its own sampling.</summary>
internal sealed class BenchRunner(BenchPlan plan)
{
    /// <summary>Raised before each measured run: (index, total, workload, allocator, threads).</summary>
    public event Action<int, int, string, string, int>? RunStarting;

    /// <summary>Raised after each measured run.</summary>
    public event Action<BenchResult>? RunFinished;

    /// <summary>
    /// Runs everything and returns one result per (workload, allocator, thread count). Per workload: a short warm-up
    /// on every allocator (not in isolated runs, which run cold in their own processes), then for each thread count
    /// every allocator in turn, so runs that are compared with each other are close in time (the machine may be
    /// shared). With more than one round the best run is kept.
    /// </summary>
    public List<BenchResult> Run(CancellationToken cancel = default)
    {
        var best = new Dictionary<(string, string, int), BenchResult>();
        var order = new List<(string, string, int)>();
        int total = plan.TotalRuns, index = 0;
        foreach (var workload in plan.Workloads)
        {
            var allocators = plan.Allocators.Where(a => a.IsAvailable && a.Supports(workload)).ToList();
            // Isolated runs start cold, each in its own process (the plan's RunIsolated).
            foreach (var allocator in plan.Isolated ? [] : allocators)
            {
                cancel.ThrowIfCancellationRequested();
                // Warm-up: JIT the specialised loops and let the allocator set up its arenas and thread caches.
                RunOnce(workload, allocator, 1, BenchScale.Tiny);
            }
            for (int round = 0; round < plan.RoundsOf(workload); round++)
            {
                foreach (int threads in plan.ThreadCounts)
                {
                    foreach (var allocator in allocators)
                    {
                        cancel.ThrowIfCancellationRequested();
                        RunStarting?.Invoke(index++, total, workload.Name, allocator.Name, threads);
                        var result = plan.Isolated
                            ? (plan.RunIsolated ?? throw new InvalidOperationException("an isolated plan needs RunIsolated"))(workload, allocator, threads, plan.Scale)
                            : RunOnce(workload, allocator, threads, plan.Scale);
                        var key = (workload.Name, allocator.Name, threads);
                        if (!best.TryGetValue(key, out var previous))
                        {
                            order.Add(key);
                            best[key] = result;
                        }
                        else if (!result.Verified || (previous.Verified && result.OpsPerSecond > previous.OpsPerSecond))
                        {
                            // A failure sticks; otherwise the fastest round counts.
                            best[key] = result;
                        }
                        RunFinished?.Invoke(result);
                    }
                }
            }
        }
        return order.Select(k => best[k]).ToList();
    }

    /// <summary>One run with RSS, live-byte and footprint sampling; failures become an unverified result.</summary>
    public BenchResult RunOnce(Workload workload, AllocatorUnderTest allocator, int threads, BenchScale scale)
    {
        Settle();
        var context = new RunContext(threads, scale);
        AllocatorSession? session = null;
        WorkloadOutcome outcome;
        long baseline = 0;
        bool peakReset = false;
        using var sampler = new Sampler(context);
        try
        {
            session = allocator.Open();
            baseline = Rss.Current();
            peakReset = Rss.ResetPeak();
            sampler.Start(session);
            outcome = session.Run(workload, context);
            sampler.Stop();
            session.Verify(outcome);
        }
        catch (Exception ex)
        {
            sampler.Stop();
            outcome = new WorkloadOutcome { Verified = false, Detail = $"{ex.GetType().Name}: {ex.Message}" };
        }
        finally
        {
            session?.Dispose();
        }
        // VmHWM catches spikes between samples, but only means "this run" when the reset worked.
        long peakRss = peakReset ? Math.Max(sampler.PeakRss, Rss.PeakSinceReset()) : sampler.PeakRss;
        return new BenchResult(workload.Name, allocator.Name, threads, outcome.Operations, outcome.Elapsed, peakRss, baseline,
            sampler.PeakLive, sampler.PeakFootprint, outcome.Verified, outcome.Verified ? outcome.Detail : outcome.Detail ?? "failed");
    }

    /// <summary>Gives every allocator's cached memory back and collects garbage, so runs start alike.</summary>
    private void Settle()
    {
        // Aggressive: the heap a GC contender grew (up to a gigabyte in binary-trees) is decommitted now, not by the
        // GC's background work during the next contender's run on this 2-core machine.
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        foreach (var a in plan.Allocators) a.Trim();
    }

    /// <summary>Samples live bytes, the allocator's footprint and RSS every 2 ms on its own thread.</summary>
    private sealed class Sampler(RunContext context) : IDisposable
    {
        private Thread? _thread;
        private volatile bool _stop;
        private AllocatorSession? _session;

        public long PeakLive { get; private set; }

        public long? PeakFootprint { get; private set; }

        public long PeakRss { get; private set; }

        public void Start(AllocatorSession session)
        {
            _session = session;
            _thread = new Thread(Loop) { IsBackground = true, Name = "bench-sampler", Priority = ThreadPriority.AboveNormal };
            _thread.Start();
        }

        public void Stop()
        {
            _stop = true;
            _thread?.Join();
            _thread = null;
        }

        private void Loop()
        {
            while (!_stop)
            {
                Sample();
                Thread.Sleep(2);
            }
            Sample();
        }

        private void Sample()
        {
            long live = context.Live.Sum();
            if (live > PeakLive) PeakLive = live;
            if (_session?.Footprint() is { } f && (PeakFootprint is null || f > PeakFootprint)) PeakFootprint = f;
            long rss = Rss.Current();
            if (rss > PeakRss) PeakRss = rss;
        }

        public void Dispose() => Stop();
    }
}

/// <summary>The process's resident set: current (from a kept-open /proc/self/statm, no allocation) and the kernel's peak.</summary>
internal static class Rss
{
    private static readonly SafeFileHandle? s_statm = Open();
    private static readonly long s_pageSize = Environment.SystemPageSize;

    private static SafeFileHandle? Open()
    {
        try
        {
            return File.OpenHandle("/proc/self/statm");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Resident bytes now, or 0.</summary>
    public static long Current()
    {
        if (s_statm is null) return 0;
        Span<byte> buffer = stackalloc byte[128];
        int n = RandomAccess.Read(s_statm, buffer, 0);
        // "size resident shared ...": parse the second field.
        int i = 0;
        while (i < n && buffer[i] != ' ') i++;
        i++;
        long pages = 0;
        while (i < n && buffer[i] >= '0' && buffer[i] <= '9') pages = pages * 10 + (buffer[i++] - '0');
        return pages * s_pageSize;
    }

    /// <summary>Resets the kernel's peak RSS (VmHWM) to the current RSS (writes 5 to /proc/self/clear_refs); false when not allowed.</summary>
    public static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>VmHWM (valid as a per-run peak when <see cref="ResetPeak"/> succeeded), or 0.</summary>
    public static long PeakSinceReset() => Math.Max(0, HostMemory.PeakResidentSetBytes());
}

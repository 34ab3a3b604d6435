using System.Diagnostics.Metrics;
using Allocators.Buffers;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Buffers;

public unsafe class MetricsAndTrimTests
{
    [Fact]
    public void MeterReportsPagesSlabAndPool()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64L << 20 } });
        using var pool = new NativeMemoryPool(sys.Slab);
        var values = new Dictionary<string, long>();
        var tags = new Dictionary<string, HashSet<string>>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == AllocatorsMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        int systemId = sys.Pages.Id;
        listener.SetMeasurementEventCallback<long>((instrument, value, tagList, _) =>
        {
            bool mine = false;
            foreach (var t in tagList) if (t.Key == "allocators.system" && (int)t.Value! == systemId) mine = true;
            if (!mine) return;
            lock (values)
            {
                values[instrument.Name] = values.GetValueOrDefault(instrument.Name) + value;
                var set = tags.TryGetValue(instrument.Name, out var s) ? s : tags[instrument.Name] = new();
                foreach (var t in tagList) set.Add(t.Key);
                Assert.Contains(instrument.Unit, new[] { "By", "{object}", "{failure}", "{stall}", "{buffer}" });
            }
        });
        listener.Start();

        var owner = pool.Rent(4096);
        var obj = sys.Slab.Kmalloc(100);
        listener.RecordObservableInstruments();
        Assert.True(values["allocators.memory_pool.active"] >= 4096);
        Assert.True(values["allocators.memory_pool.rented"] >= 4096);
        Assert.True(values["allocators.pages.used"] > 0);
        Assert.True(values["allocators.pages.free"] > 0);
        Assert.True(values["allocators.slab.active_objects"] >= 2);
        Assert.Contains("allocators.zone", tags["allocators.pages.free"]);
        Assert.Contains("allocators.node", tags["allocators.pages.free"]);
        Assert.Contains("allocators.cache", tags["allocators.slab.active_bytes"]);
        long usedBefore = values["allocators.pages.used"];

        owner.Dispose();
        sys.Slab.Kfree(obj);
        var big = sys.Pages.AllocPages(Gfp.Kernel, 8);
        values.Clear();
        listener.RecordObservableInstruments();
        Assert.True(values["allocators.pages.used"] >= usedBefore + (256 * 4096) - (64 * 4096));
        Assert.Equal(0, values["allocators.memory_pool.active"]);
        Assert.True(values["allocators.memory_pool.pooled"] >= 4096);
        sys.Pages.FreePages(big, 8);
    }

    [Fact]
    public void IdleMemoryGoesBackAfterTheConfiguredTime()
    {
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 64L << 20 },
            IdleTrimAfter = TimeSpan.FromMilliseconds(200),
        });
        // Touch 16 MiB through kmalloc and pages, then free it all: it stays cached/resident until trimmed.
        var ptrs = new List<nint>();
        for (int i = 0; i < 2000; i++) ptrs.Add((nint)sys.Slab.Kmalloc(4096));
        for (int i = 0; i < 2; i++) { var p = sys.Pages.GetFreePages(Gfp.Kernel, 10); new Span<byte>(p, 4 << 20).Fill(1); ptrs.Add(-(nint)p); }
        foreach (var p in ptrs) { if (p > 0) sys.Slab.Kfree((void*)p); else sys.Pages.FreePages((void*)-p, 10); }
        long reportedBefore = sys.Pages.ReportedPages;
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (sys.Trimmer!.Trims == 0 && DateTime.UtcNow < deadline) Thread.Sleep(50);
        Assert.True(sys.Trimmer.Trims >= 1, "trimmer never ran");
        Assert.True(sys.Trimmer.PagesReleased > 0, "nothing went back to the OS");
        Assert.True(sys.Pages.ReportedPages > reportedBefore);
        Assert.Equal(0, sys.Pages.PcpPages);
        Assert.All(sys.Slab.KmallocCaches, c => Assert.Equal(0, c.ActiveObjects));
    }
}

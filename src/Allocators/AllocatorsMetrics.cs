using System.Diagnostics.Metrics;
using Allocators.Buffers;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators;

/// <summary>
/// The <c>Allocators</c> meter (System.Diagnostics.Metrics), named like .NET's own aspnetcore.memory_pool.*
/// instruments: unit <c>By</c> for bytes, attributes <c>allocators.node</c>, <c>allocators.zone</c>,
/// <c>allocators.cache</c>. Observed on demand from every live <see cref="MemorySystem"/>; nothing is counted on the
/// hot paths. <c>dotnet-counters monitor --counters Allocators -p &lt;pid&gt;</c> shows them.
/// </summary>
public static class AllocatorsMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Allocators";

    private static Meter? s_meter;
    private static readonly Lock s_lock = new();

    /// <summary>The meter (created with the first memory system).</summary>
    public static Meter Meter { get { EnsureCreated(); return s_meter!; } }

    internal static void EnsureCreated()
    {
        if (s_meter != null) return;
        lock (s_lock)
        {
            if (s_meter != null) return;
            var meter = new Meter(MeterName, "1.0");
            meter.CreateObservableUpDownCounter("allocators.pages.free", () => ZoneMeasurements(z => z.FreePages), "By",
                "Bytes free in the buddy lists, per node and zone.");
            meter.CreateObservableUpDownCounter("allocators.pages.used", () => ZoneMeasurements(z => z.ManagedPages - z.FreePages), "By",
                "Bytes of managed memory not in the buddy lists (allocated or cached on per-thread lists), per node and zone.");
            meter.CreateObservableCounter("allocators.pages.alloc_failures", () => Sum(s => s.Pages.AllocFailures), "{failure}",
                "Page allocations that failed.");
            meter.CreateObservableCounter("allocators.pages.alloc_stalls", () => Sum(s => s.Pages.AllocStalls), "{stall}",
                "Stall reports of page allocations (Gfp.NoFail) still waiting for memory after the stall interval.");
            meter.CreateObservableCounter("allocators.pages.released", () => Sum(s => s.Pages.PagesReleasedToHost * PageFrame.PageSize), "By",
                "Bytes of free memory given back to the OS.");
            meter.CreateObservableUpDownCounter("allocators.slab.active_objects", () => CacheMeasurements(c => c.ActiveObjects), "{object}",
                "Objects allocated from each slab cache (those in threads' slabs included).");
            meter.CreateObservableUpDownCounter("allocators.slab.active_bytes", () => CacheMeasurements(c => c.ActiveObjects * c.ObjectSize), "By",
                "Bytes of objects allocated from each slab cache.");
            meter.CreateObservableUpDownCounter("allocators.pages.pcp", () => Sum(s => s.Pages.PcpPages * PageFrame.PageSize), "By",
                "Bytes of free pages cached on per-thread lists, ready for reuse.");
            meter.CreateObservableCounter("allocators.pages.trimmed", () => Sum(s => s.Trimmer?.PagesReleased * PageFrame.PageSize ?? 0), "By",
                "Bytes given back to the OS by idle trimming.");
            // The pool's instruments mean what Kestrel's aspnetcore.memory_pool.* ones do, one series per pool
            // (allocators.memory_pool.owner, unique per live pool), plus the kernel's active bytes and the failures.
            meter.CreateObservableCounter("allocators.memory_pool.rented", () => PoolMeasurements(s => s.TotalRentedBytes), "By",
                "Bytes rented from each NativeMemoryPool since it was created.");
            meter.CreateObservableUpDownCounter("allocators.memory_pool.pooled", () => PoolMeasurements(s => s.PooledBytes), "By",
                "Bytes of returned buffers each NativeMemoryPool keeps for reuse (threads' caches and shared stacks).");
            meter.CreateObservableCounter("allocators.memory_pool.allocated", () => PoolMeasurements(s => s.TotalAllocatedBytes), "By",
                "Bytes of buffers each NativeMemoryPool allocated since it was created.");
            meter.CreateObservableCounter("allocators.memory_pool.evicted", () => PoolMeasurements(s => s.TotalEvictedBytes), "By",
                "Bytes of pooled buffers each NativeMemoryPool gave back (reaper, trim, shrinker, budget).");
            meter.CreateObservableUpDownCounter("allocators.memory_pool.active", () => PoolMeasurements(s => s.RentedBytes), "By",
                "Bytes rented out of each NativeMemoryPool now.");
            meter.CreateObservableCounter("allocators.memory_pool.rent_failures", () => PoolMeasurements(s => s.Failures), "{failure}",
                "Rents from each NativeMemoryPool that found no memory (each threw MemoryPoolExhaustedException).");
            foreach (var extra in s_extra) extra(meter);
            s_meter = meter;
        }
    }

    private static readonly List<Action<Meter>> s_extra = new();

    /// <summary>Lets other layers add their instruments (called before the meter is created).</summary>
    internal static void AddInstruments(Action<Meter> register)
    {
        lock (s_lock)
        {
            if (s_meter != null) register(s_meter);
            else s_extra.Add(register);
        }
    }

    private static IEnumerable<Measurement<long>> ZoneMeasurements(Func<Zone, long> pages)
    {
        foreach (var system in MemorySystemRegistry.Systems)
        {
            foreach (var zone in system.Pages.Zones)
            {
                if (!zone.Populated) continue;
                yield return new Measurement<long>(pages(zone) * PageFrame.PageSize,
                    new KeyValuePair<string, object?>("allocators.system", system.Pages.Id),
                    new KeyValuePair<string, object?>("allocators.node", zone.Node),
                    new KeyValuePair<string, object?>("allocators.zone", zone.Name));
            }
        }
    }

    private static IEnumerable<Measurement<long>> CacheMeasurements(Func<Slab.KmemCache, long> value)
    {
        foreach (var system in MemorySystemRegistry.Systems)
        {
            foreach (var cache in system.Slab.Caches)
                yield return new Measurement<long>(value(cache),
                    new KeyValuePair<string, object?>("allocators.system", system.Pages.Id),
                    new KeyValuePair<string, object?>("allocators.cache", cache.Name));
        }
    }

    private static IEnumerable<Measurement<long>> Sum(Func<MemorySystem, long> value)
    {
        foreach (var system in MemorySystemRegistry.Systems)
            yield return new Measurement<long>(value(system), new KeyValuePair<string, object?>("allocators.system", system.Pages.Id));
    }

    private static IEnumerable<Measurement<long>> PoolMeasurements(Func<MemoryPoolStatistics, long> value)
    {
        foreach (var pool in NativeMemoryPoolRegistry.Snapshot())
            yield return new Measurement<long>(value(pool.Statistics()),
                new KeyValuePair<string, object?>("allocators.system", pool.Pages.Id),
                new KeyValuePair<string, object?>("allocators.memory_pool.owner", pool.Name));
    }
}

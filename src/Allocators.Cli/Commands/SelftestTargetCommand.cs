using System.ComponentModel;
using System.Runtime.CompilerServices;
using Allocators.Cli.Output;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>What the self-test target reports about itself, computed in-process.</summary>
internal sealed record SelftestReport(int Pid, int SystemId, string BuddyInfo, string SlabInfo, string Meminfo, string VmallocInfo, IReadOnlyList<SelftestLeak> Leaks);

/// <summary>Live objects of one StoreUser cache allocated at one site, by the target's own bookkeeping.</summary>
internal sealed record SelftestLeak(string Cache, string Site, long Count);

/// <summary>
/// Hidden: a process for the inspector's tests. Builds a memory system with a known set of pages, kmalloc objects and
/// StoreUser objects, vmalloc/vmap/vm_map_ram areas and per-CPU variables, prints its own view of them (one JSON line, then READY) and waits for a line or end of input.
/// </summary>
internal sealed unsafe class SelftestTargetCommand : Command<SelftestTargetCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--arena-mib <MIB>")]
        [Description("Arena size in MiB (default 64).")]
        public int ArenaMiB { get; init; } = 64;

        [CommandOption("--no-system")]
        [Description("Load the library but build no memory system.")]
        public bool NoSystem { get; init; }
    }

    private readonly List<nint> _keep = new();

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.NoSystem)
        {
            Console.Out.Write($"library {typeof(MemorySystem).Assembly.GetName().Version} loaded, no system\nREADY\n");
            Console.Out.Flush();
            Console.In.ReadLine();
            return ExitCodes.Ok;
        }
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = (long)settings.ArenaMiB << 20 },
        });
        var pages = new List<(nint Page, int Order)>();
        foreach (int order in new[] { 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 5, 9 })
            pages.Add(((nint)system.Pages.AllocPages(Gfp.Kernel, order), order));
        system.Pages.FreePages((PageFrame*)pages[1].Page, 0);
        system.Pages.FreePages((PageFrame*)pages[6].Page, 1);

        var kmalloc = new List<nint>();
        for (int i = 0; i < 300; i++) kmalloc.Add((nint)system.Slab.Kmalloc((nuint)(8 + i * 37 % 3000)));
        kmalloc.Add((nint)system.Slab.Kmalloc(16 << 10));
        kmalloc.Add((nint)system.Slab.Kmalloc(100 << 10));
        for (int i = 0; i < kmalloc.Count; i += 3) system.Slab.Kfree((void*)kmalloc[i]);

        var tracked = system.Slab.CreateCache("selftest-tracked", 72, flags: SlabFlags.StoreUser);
        var debug = system.Slab.CreateCache("selftest-debug", 200, flags: SlabFlags.Debug);
        var plain = system.Slab.CreateCache("selftest-plain", 40);
        var sessions = AllocateSessions(tracked, 37);
        var buffers = AllocateBuffers(tracked, 120);
        var requests = AllocateRequests(debug, 50);
        AllocateSessions(debug, 5);
        for (int i = 0; i < 100; i++) _keep.Add((nint)plain.Alloc());
        FreeSome(tracked, buffers, every: 4);
        FreeSome(debug, requests, every: 2);
        FreeSome(tracked, sessions, every: 9);

        BuildVmallocAreas(system);
        if (system.Percpu.AllocPercpu(200) == 0) throw new OutOfMemoryException("selftest-target: alloc_percpu failed");

        var leaks = new List<SelftestLeak>();
        foreach (var cache in new[] { tracked, debug })
        {
            var counts = new Dictionary<string, long>();
            foreach (nint p in _keep)
            {
                if (!cache.Owns((void*)p)) continue;
                string site = cache.AllocationSite((void*)p) ?? "<none>";
                counts[site] = counts.GetValueOrDefault(site) + 1;
            }
            foreach (var (site, count) in counts.OrderBy(kv => kv.Key, StringComparer.Ordinal)) leaks.Add(new SelftestLeak(cache.Name, site, count));
        }

        var report = new SelftestReport(Environment.ProcessId, system.Pages.Id, system.Pages.BuddyInfo(), system.Slab.SlabInfo(), system.Meminfo(),
            system.Vmalloc.VmallocInfo(), leaks);
        Console.Out.Write(JsonOutput.Compact(report, CliJsonContext.Default.SelftestReport));
        Console.Out.Write("\nREADY\n");
        Console.Out.Flush();
        Console.In.ReadLine();
        GC.KeepAlive(pages);
        return ExitCodes.Ok;
    }

    /// <summary>Live vmalloc and vzalloc areas, a vmap and a vm_map_ram mapping, and one freed area still waiting for the purge.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void BuildVmallocAreas(MemorySystem system)
    {
        var vmalloc = system.Vmalloc;
        var frames = new nint[6];
        for (int i = 0; i < frames.Length; i++) frames[i] = (nint)system.Pages.AllocPages(Gfp.Kernel, 0);
        ulong[] areas =
        [
            vmalloc.Vmalloc(3 * 4096 + 100),
            vmalloc.Vzalloc(64 << 10),
            vmalloc.Vmalloc(5 * 4096),
            vmalloc.Vmap(frames.AsSpan(0, 4)),
            vmalloc.VmMapRam(frames.AsSpan(4, 2)),
        ];
        if (areas.Contains(0UL)) throw new OutOfMemoryException("selftest-target: vmalloc failed");
        vmalloc.Vfree(areas[2]);
    }

    // Each site allocates by itself: the call site recorded is the first frame outside the library.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private List<nint> AllocateSessions(KmemCache cache, int count)
    {
        var list = new List<nint>();
        for (int i = 0; i < count; i++) list.Add(Keep(cache.Alloc()));
        return list;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private List<nint> AllocateBuffers(KmemCache cache, int count)
    {
        var list = new List<nint>();
        for (int i = 0; i < count; i++) list.Add(Keep(cache.Alloc()));
        return list;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private List<nint> AllocateRequests(KmemCache cache, int count)
    {
        var list = new List<nint>();
        for (int i = 0; i < count; i++) list.Add(Keep(cache.Alloc()));
        return list;
    }

    private nint Keep(void* p)
    {
        if (p == null) throw new OutOfMemoryException("selftest-target: allocation failed");
        _keep.Add((nint)p);
        return (nint)p;
    }

    private void FreeSome(KmemCache cache, List<nint> objects, int every)
    {
        for (int i = 0; i < objects.Count; i += every)
        {
            cache.Free((void*)objects[i]);
            _keep.Remove(objects[i]);
        }
    }
}

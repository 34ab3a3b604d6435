using System.Globalization;
using Allocators.Mmu;

namespace Allocators.Cli.Commands;

/// <summary>
/// The MMU demo the CLI runs: maps a large sparse region, touches part of it, forks, writes on both sides, and prints
/// the fault counters, RSS and TLB statistics along the way.
/// </summary>
internal static class MmuDemo
{
    /// <summary>Runs the demo on <paramref name="system"/>'s page allocator and writes a report to <paramref name="output"/>.</summary>
    public static void Run(MemorySystem system, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(system);
        ArgumentNullException.ThrowIfNull(output);
        var inv = CultureInfo.InvariantCulture;
        using var kernel = new KernelAddressSpace(system.Pages);
        const ulong regionSize = 1UL << 30;
        // Touch a page every 256 KiB (4096 pages of the 1 GiB), fewer when the arena is small.
        long budget = Math.Max(64, system.Pages.NrFreePages / 8);
        int touched = (int)Math.Min(4096, budget);
        ulong stride = regionSize / (ulong)touched & ~0xFFFUL;

        using var parent = new AddressSpace(kernel, "demo");
        ulong region = parent.Mmap(0, regionSize, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        output.WriteLine(string.Create(inv, $"mmap: 1 GiB private anonymous at 0x{region:x} (nothing resident yet)"));
        Report(output, parent);

        for (int i = 0; i < touched; i++) parent.Write<long>(region + (ulong)i * stride, i);
        for (int i = 0; i < touched; i++) parent.Read<long>(region + (ulong)i * stride + stride / 2); // zero page
        output.WriteLine(string.Create(inv, $"touched {touched} pages for writing and {touched} for reading, {stride / 1024} KiB apart"));
        Report(output, parent);

        using var child = parent.Fork("demo-child");
        output.WriteLine(string.Create(inv, $"fork: child pid {child.Pid} shares every page copy-on-write"));
        Report(output, child);

        int childWrites = touched / 4, parentWrites = touched / 8;
        for (int i = 0; i < childWrites; i++) child.Write<long>(region + (ulong)i * stride, -i);
        for (int i = 0; i < parentWrites; i++) parent.Write<long>(region + (ulong)(touched - 1 - i) * stride, i * 10);
        int mismatches = 0;
        for (int i = 0; i < touched; i++)
        {
            ulong va = region + (ulong)i * stride;
            long p = parent.Read<long>(va), c = child.Read<long>(va);
            long expectParent = i >= touched - parentWrites ? (touched - 1 - i) * 10L : i;
            long expectChild = i < childWrites ? -i : i;
            if (p != expectParent || c != expectChild) mismatches++;
        }
        output.WriteLine(string.Create(inv,
            $"child wrote {childWrites} pages, parent wrote {parentWrites}: each sees its own data ({mismatches} mismatches)"));
        Report(output, parent);
        Report(output, child);

        var tlb = parent.TlbStatistics;
        output.WriteLine(string.Create(inv,
            $"parent TLB: {tlb.Hits} hits, {tlb.Misses} misses, {tlb.PageFlushes} page / {tlb.RangeFlushes} range / {tlb.FullFlushes} full flushes"));
        output.WriteLine("parent /proc/pid/maps:");
        output.Write(parent.Maps());
        output.WriteLine("vmstat (MMU):");
        output.Write(kernel.Statistics.VmStat());
    }

    private static void Report(TextWriter output, AddressSpace mm)
    {
        var s = mm.Statistics;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  [{mm.Name} {mm.Pid}] minflt={s.MinorFaults} majflt={s.MajorFaults} cow={s.CowFaults} reuse={s.CowReuses} "
            + $"VmSize={s.VmSizePages * 4} kB RSS={s.Rss * 4} kB (anon {s.RssAnon * 4} kB) VmPTE={s.PageTablePages * 4} kB"));
    }
}

using System.Globalization;
using System.Text;
using Allocators.Mmu;
using Allocators.Slab;
using Allocators.Vmalloc;

namespace Allocators.Tests.Failure;

/// <summary>
/// Everything a failed call must leave as it found it: free blocks per zone and order, page tables, live slab objects
/// per cache, per-CPU chunks, the MMU's page counts and live processes, vmalloc areas and free blocks, and per process
/// its areas, RSS and page tables. Event counters (faults, failures, pgalloc) are left out: a failure is an event.
/// </summary>
/// <param name="Buddy">/proc/buddyinfo once every cache of free memory has been given back.</param>
/// <param name="FreePages">Free pages of the page allocator.</param>
/// <param name="PageTables">Page-table pages of every address space.</param>
/// <param name="KernelTables">Page-table pages of the kernel address space.</param>
/// <param name="Rest">Everything else, one line per item.</param>
internal sealed unsafe record SystemState(string Buddy, long FreePages, long PageTables, long KernelTables, string Rest)
{
    /// <summary>How much of the vmalloc range is checked for mapped pages (every test area lies in it).</summary>
    private const ulong ScannedVmalloc = 32UL << 20;

    /// <summary>
    /// Gives back what only caches hold (lazily freed vmalloc ranges, empty slabs, per-thread page lists), so that the
    /// same live allocations always read the same, then reads the state of <paramref name="sys"/> and of
    /// <paramref name="processes"/>. A leaked object keeps its slab and a leaked page stays allocated: both still show.
    /// </summary>
    public static SystemState Capture(MemorySystem sys, params AddressSpace[] processes)
    {
        KernelAddressSpace kernel = sys.Kernel; // built on first use: before the caches are emptied, not after
        if (sys.HasVmalloc) sys.Vmalloc.PurgeVmapAreas();
        sys.Slab.ShrinkAll();
        sys.Pages.DrainAllPages();
        var sb = new StringBuilder();
        foreach (KmemCache cache in sys.Slab.Caches) Line(sb, $"slab {cache.Name}: {cache.ActiveObjects} active");
        Line(sb, $"percpu pages {sys.Percpu.NrPages}");
        MmuStatistics mmu = kernel.Statistics;
        Line(sb, $"anon pages {mmu.AnonPages}, shmem pages {mmu.ShmemPages}, live processes {kernel.LiveProcesses}");
        if (sys.HasVmalloc)
        {
            var v = sys.Vmalloc;
            Line(sb, $"vmalloc busy {v.BusyAreas}, free blocks {v.FreeBlocks}, lazy {v.LazyPages}, pages {v.VmallocPages}");
            sb.Append(v.VmallocInfo());
            // Entries left behind by a failed mapping show in no counter: count what is mapped where the tests map.
            long mapped = 0;
            for (ulong va = VmallocAllocator.VmallocStart; va < VmallocAllocator.VmallocStart + ScannedVmalloc; va += VirtualAddress.PageSize)
            {
                if (kernel.TranslateToPage(va) != null) mapped++;
            }
            Line(sb, $"pages mapped in the first {ScannedVmalloc >> 20} MiB of vmalloc space: {mapped}");
        }
        foreach (AddressSpace mm in processes)
        {
            AddressSpaceStatistics s = mm.Statistics;
            Line(sb, $"pid {mm.Pid}: rss anon {s.RssAnon}, shmem {s.RssShmem}, tables {s.PageTablePages}, vm {s.VmSizePages}, brk 0x{mm.CurrentBrk:x}");
            foreach (VmaInfo vma in mm.Vmas) Line(sb, $"  0x{vma.Start:x}-0x{vma.End:x} {vma.Flags} {vma.Name}");
        }
        return new SystemState(sys.Pages.BuddyInfo(), sys.Pages.NrFreePages, sys.Pages.NrPageTablePages, kernel.PageTablePages, sb.ToString());
    }

    /// <summary>
    /// Fails unless <paramref name="after"/> equals this state. With <paramref name="kernelTablesMayChange"/> the kernel
    /// may have kept or freed page tables (vmalloc leaves its tables for the next area, as the kernel's does): then
    /// free pages must differ by exactly the kernel tables' change, and the buddy lists are not compared.
    /// </summary>
    public void AssertSame(SystemState after, string when, bool kernelTablesMayChange = false)
    {
        if (Rest != after.Rest)
        {
            string[] was = Rest.Split('\n'), now = after.Rest.Split('\n');
            Assert.Fail($"{when}: the state changed.\nbefore, not after:\n{string.Join('\n', was.Except(now))}\nafter, not before:\n{string.Join('\n', now.Except(was))}");
        }
        long tables = after.KernelTables - KernelTables;
        if (!kernelTablesMayChange)
        {
            if (Buddy != after.Buddy) Assert.Fail($"{when}: the free lists changed.\nbefore:\n{Buddy}after:\n{after.Buddy}");
            tables = 0;
        }
        Assert.True(FreePages - tables == after.FreePages, $"{when}: {FreePages} free pages before, {after.FreePages} after (kernel tables {tables:+#;-#;0}).");
        Assert.True(PageTables + tables == after.PageTables, $"{when}: {PageTables} page-table pages before, {after.PageTables} after (kernel tables {tables:+#;-#;0}).");
    }

    private static void Line(StringBuilder sb, string text) => sb.Append(text).Append('\n');
}

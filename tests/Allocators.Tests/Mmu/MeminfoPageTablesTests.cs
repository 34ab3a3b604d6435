using Allocators.Mmu;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Mmu;

/// <summary>/proc/meminfo's PageTables line counts the page-table pages vmstat's nr_page_table_pages counts.</summary>
public sealed class MeminfoPageTablesTests
{
    private static long Kb(MemorySystem sys, string name) => sys.MeminfoItems().Single(i => i.Name == name).Kb;

    [Fact]
    public void PageTablesIsNrPageTablePagesInKilobytes()
    {
        using var sys = NewSystem();
        using var mm = sys.CreateAddressSpace();
        ulong a = mm.Mmap(0, 64UL << 20, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        for (ulong off = 0; off < 64UL << 20; off += 2UL << 20) mm.Write(a + off, 1L); // one PTE table per 2 MiB
        long tables = sys.Pages.NrPageTablePages;
        Assert.True(tables >= 32, $"{tables} page-table pages after faulting 32 PTE ranges");
        Assert.Equal(tables * 4, Kb(sys, "PageTables"));
        Assert.Contains($"nr_page_table_pages {tables}\n", sys.Pages.VmStat());
        mm.Dispose();
        Assert.Equal(sys.Pages.NrPageTablePages * 4, Kb(sys, "PageTables"));
        Assert.True(sys.Pages.NrPageTablePages < tables);
    }
}

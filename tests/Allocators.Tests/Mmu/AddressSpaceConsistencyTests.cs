using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

/// <summary>The address-space check finds page tables that disagree with the VMAs or with their own counts.</summary>
public sealed unsafe class AddressSpaceConsistencyTests
{
    private const ulong At = 0x4000_0000;

    [Fact]
    public void AnEntryOutsideEveryVmaIsFound()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        ulong a = MapWrittenPage(mm);
        mm.CheckConsistency();
        ulong* mapped = mm.EntrySlotForTesting(a, VirtualAddress.PteLevel);
        ulong* next = mapped + 1; // the same PTE table maps the page after the one-page VMA
        *next = *mapped;
        try
        {
            var ex = Assert.Throws<InvalidOperationException>(mm.CheckConsistency);
            Assert.Contains($"maps 0x{a + 4096:x}, which no VMA covers", ex.Message);
        }
        finally { *next = 0; }
        mm.CheckConsistency();
    }

    [Fact]
    public void AWritableEntryInAReadOnlyVmaIsFound()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        ulong a = MapWrittenPage(mm);
        mm.Mprotect(a, 4096, MemoryProtection.Read);
        mm.CheckConsistency();
        ulong* pte = mm.EntrySlotForTesting(a, VirtualAddress.PteLevel);
        ulong saved = *pte;
        *pte = saved | (ulong)PteFlags.ReadWrite;
        try
        {
            var ex = Assert.Throws<InvalidOperationException>(mm.CheckConsistency);
            Assert.Contains("writable in a VMA without VM_WRITE", ex.Message);
        }
        finally { *pte = saved; }
        mm.CheckConsistency();
    }

    /// <summary>One private anonymous page at <see cref="At"/>, written so that it is mapped.</summary>
    private static ulong MapWrittenPage(AddressSpace mm)
    {
        ulong a = mm.Mmap(At, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
        mm.Write<int>(a, 1);
        return a;
    }
}

using Allocators.Mmu;
using Allocators.PageAlloc;

namespace Allocators.Tests.Mmu;

/// <summary>RW, User and NX are checked at every level of the walk, not just in the leaf.</summary>
public unsafe class WalkPermissionTests
{
    [Fact]
    public void UserBitMissingInAnUpperLevelDeniesUserAccess()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0x4000_0000, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
            mm.Write<int>(a, 1);
            ulong* pmd = mm.EntrySlotForTesting(a, 2);
            ulong saved = *pmd;
            *pmd = saved & ~(ulong)PteFlags.User;
            mm.FlushTlbAll();
            var ex = Assert.Throws<SegmentationFaultException>(() => mm.Read<int>(a));
            Assert.Equal(PageFaultErrorCode.Protection | PageFaultErrorCode.User, ex.ErrorCode);
            Assert.Equal(SegvCode.AccessError, ex.Code);
            // Kernel mode ignores the User bit.
            Span<byte> buf = stackalloc byte[4];
            Assert.Equal(0, mm.CopyFromUser(buf, a));
            *pmd = saved;
            mm.FlushTlbAll();
            Assert.Equal(1, mm.Read<int>(a));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void RwAndNxInUpperLevelsApplyToKernelAccesses()
    {
        using var f = new MmuFixture();
        var page = f.Pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
        ulong va = VirtualAddress.VmallocStart + 0x40_0000;
        f.Kernel.MapKernelPage(va, page, PteFlags.PageKernelExec);
        f.Kernel.Write<int>(va, 0x90);
        Assert.Equal(0x90, f.Kernel.Fetch<byte>(va));

        ulong* pmd = f.Kernel.EntrySlotForTesting(va, 2);
        ulong savedPmd = *pmd;
        *pmd = savedPmd & ~(ulong)PteFlags.ReadWrite;
        f.Kernel.FlushTlbAll();
        var write = Assert.Throws<KernelOopsException>(() => f.Kernel.Write<int>(va, 1));
        Assert.Contains("#PF: error_code(0x0003) - permissions violation", write.Report);
        Assert.Equal(0x90, f.Kernel.Read<int>(va)); // reads still work
        *pmd = savedPmd;

        ulong* pud = f.Kernel.EntrySlotForTesting(va, 1);
        ulong savedPud = *pud;
        *pud = savedPud | (ulong)PteFlags.NoExecute;
        f.Kernel.FlushTlbAll();
        var fetch = Assert.Throws<KernelOopsException>(() => f.Kernel.Fetch<byte>(va));
        Assert.Contains("#PF: supervisor instruction fetch in kernel mode", fetch.Report);
        Assert.Contains("error_code(0x0011)", fetch.Report);
        *pud = savedPud;
        f.Kernel.FlushTlbAll();
        Assert.Equal(0x90, f.Kernel.Fetch<byte>(va));

        f.Kernel.UnmapKernelRange(va, 4096);
        f.Pages.FreePages(page, 0);
        f.AssertAllFreed();
    }

    [Fact]
    public void AccessedIsSetInEveryLevelAndDirtyOnlyInTheLeaf()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0x4000_0000, 4096, MemoryProtection.ReadWrite, MapFlags.Shared | MapFlags.Anonymous | MapFlags.Fixed);
            mm.Read<int>(a);
            for (int level = 0; level < 3; level++)
            {
                ulong* slot = mm.EntrySlotForTesting(a, level);
                *slot &= ~(ulong)(PteFlags.Accessed | PteFlags.Dirty);
            }
            Assert.True(mm.TestAndClearYoung(a));
            mm.Write<int>(a, 1);
            for (int level = 0; level < 3; level++)
            {
                var e = new PageTableEntry(*mm.EntrySlotForTesting(a, level));
                Assert.True(e.Young, $"level {level}");
                Assert.False(e.Dirty, $"level {level}");
            }
            var leaf = mm.GetPte(a);
            Assert.True(leaf.Young && leaf.Dirty);
        }
        f.AssertAllFreed();
    }
}

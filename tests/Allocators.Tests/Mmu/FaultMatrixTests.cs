using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public class FaultMatrixTests
{
    public static TheoryData<MemoryProtection, MemoryAccess, bool> Matrix()
    {
        var data = new TheoryData<MemoryProtection, MemoryAccess, bool>();
        foreach (var prot in new[] { MemoryProtection.None, MemoryProtection.Read, MemoryProtection.ReadWrite,
                     MemoryProtection.Read | MemoryProtection.Exec, MemoryProtection.ReadWrite | MemoryProtection.Exec,
                     MemoryProtection.Write, MemoryProtection.Exec })
        {
            foreach (var access in new[] { MemoryAccess.Read, MemoryAccess.Write, MemoryAccess.Execute })
            {
                // x86: write implies read, exec implies read.
                bool allowed = access switch
                {
                    MemoryAccess.Read => prot != MemoryProtection.None,
                    MemoryAccess.Write => (prot & MemoryProtection.Write) != 0,
                    _ => (prot & MemoryProtection.Exec) != 0,
                };
                data.Add(prot, access, allowed);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Matrix))]
    public void AccessAgainstProtection(MemoryProtection prot, MemoryAccess access, bool allowed)
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            foreach (var shared in new[] { false, true })
            {
                ulong a = mm.Mmap(0, 4096, prot, (shared ? MapFlags.Shared : MapFlags.Private) | MapFlags.Anonymous);
                // Once on a not-present page, once after the page was made present through a readable alias.
                for (int round = 0; round < 2; round++)
                {
                    if (allowed)
                    {
                        mm.Touch(a, access);
                    }
                    else
                    {
                        var ex = Assert.Throws<SegmentationFaultException>(() => mm.Touch(a, access));
                        Assert.Equal(SegvCode.AccessError, ex.Code);
                        Assert.Equal(a, ex.Address);
                        Assert.True((ex.ErrorCode & PageFaultErrorCode.User) != 0);
                        Assert.Equal(access == MemoryAccess.Write, (ex.ErrorCode & PageFaultErrorCode.Write) != 0);
                        Assert.Equal(access == MemoryAccess.Execute, (ex.ErrorCode & PageFaultErrorCode.InstructionFetch) != 0);
                    }
                    if (round == 0 && prot != MemoryProtection.None) mm.Touch(a, MemoryAccess.Read);
                }
                mm.Munmap(a, 4096);
            }
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void ProtectionErrorBitReportsPresentPages()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        ulong a = mm.Mmap(0, 4096, MemoryProtection.Read, MapFlags.Private | MapFlags.Anonymous);
        var notPresent = Assert.Throws<SegmentationFaultException>(() => mm.Write<int>(a, 1));
        Assert.Equal(PageFaultErrorCode.User | PageFaultErrorCode.Write, notPresent.ErrorCode);
        mm.Read<int>(a); // maps the zero page
        var present = Assert.Throws<SegmentationFaultException>(() => mm.Write<int>(a, 1));
        Assert.Equal(PageFaultErrorCode.User | PageFaultErrorCode.Write | PageFaultErrorCode.Protection, present.ErrorCode);
        Assert.Contains("SEGV_ACCERR", present.Message);
    }

    [Theory]
    [InlineData(MemoryAccess.Read)]
    [InlineData(MemoryAccess.Write)]
    [InlineData(MemoryAccess.Execute)]
    public void NoVmaIsMapError(MemoryAccess access)
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        ulong a = mm.Mmap(0x10_0000_0000, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace);
        var ex = Assert.Throws<SegmentationFaultException>(() => mm.Touch(a + 4096, access));
        Assert.Equal(SegvCode.MapError, ex.Code);
        Assert.Equal(a + 4096, ex.Address);
        Assert.False(ex.IsNullPointerDereference);
        Assert.Contains("SEGV_MAPERR", ex.Message);
        Assert.Contains($"segfault at {a + 4096:x}", ex.Message);
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(8UL)]
    [InlineData(0xFFF0UL)]
    public void NullPageIsReportedAsNullDereference(ulong address)
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        var ex = Assert.Throws<SegmentationFaultException>(() => mm.Read<long>(address));
        Assert.True(ex.IsNullPointerDereference);
        Assert.Equal(SegvCode.MapError, ex.Code);
        Assert.StartsWith("NULL pointer dereference", ex.Message);
        Assert.Throws<ArgumentException>(() => mm.Mmap(address & ~0xFFFUL, 4096, MemoryProtection.Read, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed));
        // A hint below 64 KiB is ignored rather than honoured.
        Assert.True(mm.Mmap(address & ~0xFFFUL, 4096, MemoryProtection.Read, MapFlags.Private | MapFlags.Anonymous) >= VirtualAddress.MmapMinAddr);
    }

    [Fact]
    public void NonCanonicalIsGeneralProtection()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        var ex = Assert.Throws<GeneralProtectionFaultException>(() => mm.Read<int>(0x0000_8000_0000_0000));
        Assert.Equal(SegvCode.Kernel, ex.Code);
        Assert.Contains("non-canonical address 0x0000800000000000", ex.Message);
    }

    [Fact]
    public void UserAccessToKernelHalfIsMapError()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        var ex = Assert.Throws<SegmentationFaultException>(() => mm.Read<int>(VirtualAddress.VmallocStart));
        Assert.Equal(SegvCode.MapError, ex.Code);
    }

    [Fact]
    public void StackGrowsDownUntilTheGuardGapAndTheLimit()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            var stack = mm.Vmas.Single(v => v.Name == "[stack]");
            Assert.True((stack.Flags & VmFlags.GrowsDown) != 0);
            Assert.Equal(AddressSpace.StackTop, stack.End);
            // Touch 64 KiB below the stack: it grows.
            ulong below = stack.Start - 0x10000 + 8;
            mm.Write<long>(below, 42);
            Assert.Equal(42, mm.Read<long>(below));
            var grown = mm.Vmas.Single(v => v.Name == "[stack]");
            Assert.Equal(VirtualAddress.PageAlignDown(below), grown.Start);
            Assert.Equal(1, f.Kernel.Statistics.StackExpansions);

            // Beyond RLIMIT_STACK: no growth.
            Assert.Throws<SegmentationFaultException>(() => mm.Read<long>(AddressSpace.StackTop - AddressSpace.StackLimit - 4096));

            // A mapping just below: growing into its guard gap fails, outside the gap works.
            ulong low = grown.Start - AddressSpace.StackGuardGap - 0x10000;
            mm.Mmap(low, 0x10000, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
            var ex = Assert.Throws<SegmentationFaultException>(() => mm.Read<long>(grown.Start - 4096));
            Assert.Equal(SegvCode.MapError, ex.Code);
            // Non-fixed mmap never lands in the guard gap below the stack.
            for (int i = 0; i < 4; i++)
            {
                ulong m = mm.Mmap(grown.Start - 0x8000, 0x4000, MemoryProtection.Read, MapFlags.Private | MapFlags.Anonymous);
                Assert.True(m + 0x4000 + AddressSpace.StackGuardGap <= grown.Start || m >= grown.End);
            }
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void GrowsDownMappingGrowsToo()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0x4000_0000, 0x4000, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.GrowsDown | MapFlags.Fixed);
            mm.Write<int>(a - 4096, 5);
            Assert.Equal(5, mm.Read<int>(a - 4096));
            Assert.Equal(a - 4096, mm.FindVma(a - 4096)!.Value.Start);
        }
        f.AssertAllFreed();
    }
}

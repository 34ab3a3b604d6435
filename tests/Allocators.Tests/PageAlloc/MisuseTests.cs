using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// Every kind of bad free is rejected with an exception that names the page (pfn in hex) or the address, and is
/// rejected before any state changes: free lists, per-thread lists and counters stay exactly as they were.
/// </summary>
public sealed unsafe class MisuseTests : IDisposable
{
    private readonly MemorySystem _sys;
    private readonly PageAllocator _pa;
    private readonly List<string> _warnings = new();
    private readonly string _boot;

    public MisuseTests()
    {
        _sys = NewSystem(16, warn: _warnings.Add);
        _pa = _sys.Pages;
        _boot = _pa.BuddyInfo();
    }

    public void Dispose()
    {
        _sys.Dispose();
    }

    /// <summary>Runs a bad call and checks the exception, its message and that nothing changed.</summary>
    private TException Rejects<TException>(Action misuse, string mustMention) where TException : MemoryCorruptionException
    {
        FreeListState before = Snapshot(_pa);
        var e = Assert.Throws<TException>(misuse);
        Assert.Contains(mustMention, e.Message);
        AssertSameState(before, Snapshot(_pa));
        return e;
    }

    private static string Hex(ulong pfn) => $"0x{pfn:x}";

    /// <summary>After the misuse the allocator still works and returns to its boot state.</summary>
    private void AssertStillHealthy()
    {
        var pages = new List<nint>();
        for (int i = 0; i < 100; i++) pages.Add((nint)_pa.AllocPages(Gfp.Kernel, i % 4));
        for (int i = 0; i < pages.Count; i++) _pa.FreePages((PageFrame*)pages[i], i % 4);
        _pa.DrainAllPages();
        Assert.Equal(_boot, _pa.BuddyInfo());
    }

    [Fact]
    public void FreeOfANeverAllocatedPage()
    {
        // pfn 0 heads a free order-10 block; pfn 5 sits inside it.
        PageFrame* head = _pa.PfnToPage(0);
        PageFrame* inside = _pa.PfnToPage(5);
        Assert.True(head->Has(PageFlags.Buddy));
        var e1 = Rejects<BadPageException>(() => _pa.FreePages(head, 0), Hex(0));
        Assert.Equal(0UL, e1.Pfn);
        var e2 = Rejects<BadPageException>(() => _pa.FreePages(inside, 0), Hex(5));
        Assert.Equal(5UL, e2.Pfn);
        Assert.Contains("not the start of an allocation", e2.Message);
        Rejects<BadPageException>(() => _pa.FreePages(_pa.PageAddress(inside), 0), Hex(5));
        AssertStillHealthy();
    }

    [Fact]
    public void FreeOfATailPageOfACompoundPage()
    {
        PageFrame* head = _pa.AllocPages(Gfp.Kernel | Gfp.Comp, 3);
        PageFrame* tail = head + 3;
        var e = Rejects<BadPageException>(() => _pa.FreePages(tail, 0), Hex(tail->Pfn));
        Assert.Contains("tail page", e.Message);
        Rejects<BadPageException>(() => _pa.FreePages(tail, 3), Hex(tail->Pfn));
        Rejects<BadPageException>(() => _pa.FreePages(_pa.PageAddress(tail), 3), Hex(tail->Pfn));
        Assert.True(head->Has(PageFlags.Head) && tail->Has(PageFlags.Tail));
        _pa.FreePages(head, 3);
        AssertStillHealthy();
    }

    [Fact]
    public void FreeOfAnInteriorPageOfANonCompoundBlock()
    {
        PageFrame* block = _pa.AllocPages(Gfp.Kernel, 2);
        PageFrame* interior = block + 1;
        Rejects<BadPageException>(() => _pa.FreePages(interior, 0), Hex(interior->Pfn));
        Rejects<BadPageException>(() => _pa.FreePages(interior, 2), Hex(interior->Pfn));
        Rejects<BadPageException>(() => _pa.PutPage(interior), Hex(interior->Pfn));
        Assert.True(block->Has(PageFlags.Allocated));
        _pa.FreePages(block, 2);
        AssertStillHealthy();
    }

    [Theory]
    [InlineData(2, 1)]
    [InlineData(2, 3)]
    [InlineData(0, 1)]
    [InlineData(5, 4)]
    [InlineData(5, 10)]
    public void FreeWithTheWrongOrder(int allocated, int freedAs)
    {
        PageFrame* block = _pa.AllocPages(Gfp.Kernel, allocated);
        var e = Rejects<BadPageException>(() => _pa.FreePages(block, freedAs), Hex(block->Pfn));
        Assert.Contains($"freed with order {freedAs} but allocated with order {allocated}", e.Message);
        Assert.Contains($"order={allocated}", e.PageState);
        _pa.FreePages(block, allocated);
        AssertStillHealthy();
    }

    [Fact]
    public void DoubleFreeWhileThePageSitsOnAPerThreadList()
    {
        PageFrame* page = _pa.AllocPages(Gfp.Kernel, 0);
        _pa.FreePages(page, 0);
        Assert.True(page->Has(PageFlags.Pcp), "an order-0 free goes to the per-thread list first");
        var e = Rejects<BadPageException>(() => _pa.FreePages(page, 0), Hex(page->Pfn));
        Assert.Contains("double free", e.Message);
        Rejects<BadPageException>(() => _pa.FreePages(_pa.PageAddress(page), 0), Hex(page->Pfn));

        PageFrame* small = _pa.AllocPages(Gfp.Kernel | Gfp.Comp, 2);
        _pa.FreePages(small, 2);
        Rejects<BadPageException>(() => _pa.FreePages(small, 2), Hex(small->Pfn));
        AssertStillHealthy();
    }

    [Fact]
    public void DoubleFreeAfterDrainAllPages()
    {
        PageFrame* a = _pa.AllocPages(Gfp.Kernel, 0);
        PageFrame* keep = _pa.AllocPages(Gfp.Kernel, 0);
        PageFrame* big = _pa.AllocPages(Gfp.Kernel, 6);
        _pa.FreePages(a, 0);
        _pa.FreePages(big, 6);
        _pa.DrainAllPages();
        Assert.False(a->Has(PageFlags.Pcp));
        Rejects<BadPageException>(() => _pa.FreePages(a, 0), Hex(a->Pfn));
        Rejects<BadPageException>(() => _pa.FreePages(big, 6), Hex(big->Pfn));
        Rejects<BadPageException>(() => _pa.PutPage(big), Hex(big->Pfn));
        _pa.FreePages(keep, 0);
        AssertStillHealthy();
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(-1)]
    public void FreeWithAnOrderOutsideTheBuddyRange(int order)
    {
        PageFrame* page = _pa.AllocPages(Gfp.Kernel, 0);
        var e = Rejects<BadPageException>(() => _pa.FreePages(page, order), Hex(page->Pfn));
        Assert.Contains($"order {order} is outside 0..10", e.Message);
        _pa.FreePages(page, 0);
        AssertStillHealthy();
    }

    [Fact]
    public void FreeOfAPointerOutsideTheArena()
    {
        void* foreign = NativeMemory.AlignedAlloc(4096, 4096);
        try
        {
            var e = Rejects<MemoryCorruptionException>(() => _pa.FreePages(foreign, 0), $"0x{(nuint)foreign:x}");
            Assert.Equal((nuint)foreign, e.Address);
            Assert.IsNotType<BadPageException>(e);
        }
        finally
        {
            NativeMemory.AlignedFree(foreign);
        }

        byte* end = _sys.Memory.ContiguousBase + 16 * MiB;   // one past the arena
        Rejects<MemoryCorruptionException>(() => _pa.FreePages(end, 0), $"0x{(nuint)end:x}");
        byte* before = _sys.Memory.ContiguousBase - 4096;
        Rejects<MemoryCorruptionException>(() => _pa.FreePages(before, 0), $"0x{(nuint)before:x}");
        AssertStillHealthy();
    }

    [Fact]
    public void FreeOfAnUnalignedAddress()
    {
        byte* address = _pa.GetFreePages(Gfp.Kernel, 1);
        PageFrame* page = _pa.VirtToPage(address);
        foreach (int offset in new[] { 8, 100, 4095 })
        {
            var e = Rejects<BadPageException>(() => _pa.FreePages(address + offset, 1), $"0x{(nuint)(address + offset):x}");
            Assert.Equal((nuint)(address + offset), e.Address);
            Assert.Equal(page->Pfn, e.Pfn);
        }
        _pa.FreePages(address, 1);
        AssertStillHealthy();
    }

    [Fact]
    public void FreeOfAFrameThatIsNotTheAllocatorsOwn()
    {
        PageFrame* page = _pa.AllocPages(Gfp.Kernel, 0);
        PageFrame copy = *page;                          // looks live, but is not in the mem_map
        PageFrame* fake = &copy;
        var e = Rejects<MemoryCorruptionException>(() => _pa.FreePages(fake, 0), $"0x{(nuint)fake:x}");
        Assert.IsNotType<BadPageException>(e);
        var skewed = (PageFrame*)((byte*)page + 8);      // a pointer into the middle of a frame
        Rejects<MemoryCorruptionException>(() => _pa.FreePages(skewed, 0), $"0x{(nuint)skewed:x}");
        _pa.FreePages(page, 0);
        AssertStillHealthy();
    }

    [Fact]
    public void NullFrees()
    {
        FreeListState before = Snapshot(_pa);
        Assert.Throws<ArgumentNullException>(() => _pa.FreePages((PageFrame*)null, 0));
        _pa.FreePages((void*)null, 0);                   // free_pages(0) is a no-op, as in the kernel
        AssertSameState(before, Snapshot(_pa));
    }

    [Fact]
    public void GetPageAndSplitPageRejectPagesThatAreNotLive()
    {
        PageFrame* free = _pa.PfnToPage(40);
        Rejects<BadPageException>(() => _pa.GetPage(free), Hex(40));

        PageFrame* comp = _pa.AllocPages(Gfp.Kernel | Gfp.Comp, 2);
        var e = Rejects<BadPageException>(() => _pa.SplitPage(comp, 2), Hex(comp->Pfn));
        Assert.Contains("compound", e.Message);
        PageFrame* plain = _pa.AllocPages(Gfp.Kernel, 2);
        Rejects<BadPageException>(() => _pa.SplitPage(plain, 1), Hex(plain->Pfn));
        Rejects<BadPageException>(() => _pa.SplitPage(plain + 1, 0), Hex(plain->Pfn + 1));
        _pa.FreePages(comp, 2);
        _pa.FreePages(plain, 2);
        AssertStillHealthy();
    }

    [Theory]
    [InlineData(11)]
    [InlineData(20)]
    [InlineData(-1)]
    public void AllocationAboveMaxOrderFailsAndWarnsUnlessNoWarn(int order)
    {
        FreeListState before = Snapshot(_pa);
        long failures = _pa.AllocFailures, warnings = _pa.Warnings;

        Assert.True(_pa.AllocPages(Gfp.Kernel, order) == null);
        Assert.Equal(failures + 1, _pa.AllocFailures);
        Assert.Equal(warnings + 1, _pa.Warnings);
        string warning = Assert.Single(_warnings);
        Assert.Contains($"page allocation failure: order:{order}, mode:0x{(uint)Gfp.Kernel:x}(GFP_KERNEL)", warning);

        Assert.True(_pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, order) == null);
        Assert.Equal(failures + 2, _pa.AllocFailures);
        Assert.Equal(warnings + 1, _pa.Warnings);
        Assert.Single(_warnings);
        Assert.True(_pa.GetFreePages(Gfp.Atomic | Gfp.NoWarn, order) == null);
        Assert.Equal(failures + 3, _pa.AllocFailures);
        Assert.Contains(_pa.VmStatItems(), item => item == ("pgalloc_fail", failures + 3));
        AssertSameState(before, Snapshot(_pa));
    }

    [Fact]
    public void ExhaustionWarnsOnceForEachFailureWithoutNoWarn()
    {
        var pages = new List<nint>();
        PageFrame* p;
        while ((p = _pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, 0)) != null) pages.Add((nint)p);
        Assert.Empty(_warnings);
        Assert.True(_pa.AllocPages(Gfp.Kernel, 0) == null);
        string warning = Assert.Single(_warnings);
        Assert.Contains("page allocation failure: order:0", warning);
        foreach (nint page in pages) _pa.FreePages((PageFrame*)page, 0);
        AssertStillHealthy();
    }
}

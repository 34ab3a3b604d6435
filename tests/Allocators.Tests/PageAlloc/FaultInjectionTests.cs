using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>fail_page_alloc: failures on purpose, exactly as many and exactly where configured.</summary>
public sealed unsafe class FaultInjectionTests : IDisposable
{
    private readonly MemorySystem _sys = NewSystem(16);
    private PageAllocator Pa => _sys.Pages;
    private readonly List<(nint Page, int Order)> _held = new();

    public void Dispose()
    {
        foreach (var (page, order) in _held) Pa.FreePages((PageFrame*)page, order);
        Pa.DrainAllPages();
        Assert.Equal(Pa.ManagedPages, Pa.NrFreePages);
        _sys.Dispose();
    }

    /// <summary>Allocates and keeps the page; returns whether it succeeded.</summary>
    private bool Try(Gfp gfp, int order = 0)
    {
        PageFrame* page = Pa.AllocPages(gfp | Gfp.NoWarn, order);
        if (page == null) return false;
        _held.Add(((nint)page, order));
        return true;
    }

    private bool[] Run(int count, Gfp gfp = Gfp.Kernel, int order = 0)
        => Enumerable.Range(0, count).Select(_ => Try(gfp, order)).ToArray();

    [Fact]
    public void DisabledByDefault()
    {
        Assert.Equal(0, Pa.FaultInjection.Probability);
        Assert.All(Run(200), Assert.True);
        Assert.Equal(0, Pa.InjectedFailures);
    }

    [Fact]
    public void Probability100Times3FailsExactlyThreeThenSucceeds()
    {
        Pa.FaultInjection.Times = 3;
        Pa.FaultInjection.Probability = 100;
        long failures = Pa.AllocFailures;
        Assert.Equal([false, false, false, true, true, true, true, true], Run(8));
        Assert.Equal(3, Pa.InjectedFailures);
        Assert.Equal(3, Pa.FaultInjection.Injected);
        Assert.Equal(failures + 3, Pa.AllocFailures);
        Assert.Equal(0, Pa.FaultInjection.Times);
        Assert.Contains(Pa.VmStatItems(), i => i == ("pgalloc_fail_injected", 3L));
        Assert.All(Run(100), Assert.True);   // stays off once the budget is spent
        Assert.Equal(3, Pa.InjectedFailures);
    }

    [Fact]
    public void IntervalFailsEveryNthCall()
    {
        Pa.FaultInjection.Interval = 4;
        Pa.FaultInjection.Probability = 100;
        bool[] results = Run(12);
        Assert.Equal([true, true, true, false, true, true, true, false, true, true, true, false], results);
        Assert.Equal(3, Pa.InjectedFailures);
    }

    [Fact]
    public void IntervalAndTimesCombine()
    {
        Pa.FaultInjection.Interval = 3;
        Pa.FaultInjection.Times = 2;
        Pa.FaultInjection.Probability = 100;
        bool[] results = Run(12);
        Assert.Equal([true, true, false, true, true, false, true, true, true, true, true, true], results);
        Assert.Equal(2, Pa.InjectedFailures);
    }

    [Fact]
    public void NoFailAllocationsAreNeverFailed()
    {
        Pa.FaultInjection.Probability = 100;
        Assert.All(Run(50, Gfp.Kernel | Gfp.NoFail), Assert.True);
        Assert.All(Run(20, Gfp.Kernel | Gfp.NoFail, order: 1), Assert.True);
        Assert.Equal(0, Pa.InjectedFailures);
        Assert.All(Run(5), Assert.False);
        Assert.Equal(5, Pa.InjectedFailures);
    }

    [Fact]
    public void MinOrderSparesSmallAllocations()
    {
        Pa.FaultInjection.MinOrder = 2;
        Pa.FaultInjection.Probability = 100;
        Assert.True(Try(Gfp.Kernel, 0));
        Assert.True(Try(Gfp.Kernel, 1));
        Assert.False(Try(Gfp.Kernel, 2));
        Assert.False(Try(Gfp.Kernel, 7));
        Assert.Equal(2, Pa.InjectedFailures);
    }

    [Fact]
    public void IgnoreGfpWaitSparesCallersThatMayBlock()
    {
        Pa.FaultInjection.IgnoreGfpWait = true;
        Pa.FaultInjection.Probability = 100;
        Assert.True(Try(Gfp.Kernel));
        Assert.False(Try(Gfp.Atomic));
        Assert.False(Try(Gfp.NoWait));
        Assert.Equal(2, Pa.InjectedFailures);
    }

    [Fact]
    public void SpaceLetsThatManyBytesThroughFirst()
    {
        Pa.FaultInjection.Space = 3 * 4096 + 1;
        Pa.FaultInjection.Probability = 100;
        Assert.Equal([true, true, true, false, false], Run(5));
        Assert.Equal(2, Pa.InjectedFailures);
    }

    [Fact]
    public void SeededProbabilityIsRepeatable()
    {
        Pa.FaultInjection.Seed(99);
        Pa.FaultInjection.Probability = 30;
        bool[] first = Run(300);
        long injected = Pa.InjectedFailures;
        Assert.InRange(injected, 40, 140);
        Assert.Equal(injected, first.Count(ok => !ok));

        using var other = NewSystem(16);
        other.Pages.FaultInjection.Seed(99);
        other.Pages.FaultInjection.Probability = 30;
        var pages = new List<nint>();
        bool[] second = Enumerable.Range(0, 300).Select(_ =>
        {
            PageFrame* p = other.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 0);
            if (p != null) pages.Add((nint)p);
            return p != null;
        }).ToArray();
        Assert.Equal(first, second);
        foreach (nint p in pages) other.Pages.FreePages((PageFrame*)p, 0);
    }

    [Fact]
    public void InjectedFailuresChangeNoState()
    {
        for (int i = 0; i < 8; i++) Assert.True(Try(Gfp.Kernel, i % 4));
        FreeListState before = Snapshot(Pa);
        Pa.FaultInjection.Probability = 100;
        Assert.All(Run(10, Gfp.Kernel, 3), Assert.False);
        Assert.True(Pa.GetFreePages(Gfp.Atomic | Gfp.NoWarn, 0) == null);
        AssertSameState(before, Snapshot(Pa));
        Assert.Equal(11, Pa.InjectedFailures);
    }

    [Fact]
    public void BulkAllocationStopsAtTheFirstInjectedFailure()
    {
        Pa.FaultInjection.Interval = 5;
        Pa.FaultInjection.Times = 1;
        Pa.FaultInjection.Probability = 100;
        Span<nint> pages = stackalloc nint[8];
        pages.Clear();
        Assert.Equal(4, Pa.AllocPagesBulk(Gfp.Kernel | Gfp.NoWarn, pages));
        Assert.Equal(0, pages[4]);
        Assert.Equal(8, Pa.AllocPagesBulk(Gfp.Kernel | Gfp.NoWarn, pages));   // fills only the empty entries
        Assert.Equal(8, pages.ToArray().Distinct().Count());
        Pa.FreePagesBulk(pages);
        Assert.All(pages.ToArray(), p => Assert.Equal(0, p));
    }

    [Fact]
    public void FailNthFailsExactlyTheNthCallOnceAndReadsBackZero()
    {
        Pa.FaultInjection.FailNth = 3;
        Assert.Equal([true, true, false, true, true], Run(5));
        Assert.Equal(0, Pa.FaultInjection.FailNth);
        Assert.Equal(1, Pa.InjectedFailures);
        Assert.Equal(1, Pa.FaultInjection.Injected);
        Assert.All(Run(50), Assert.True);
    }

    [Fact]
    public void FailNthStillAboveZeroCountsTheCallsThatNeverCame()
    {
        Pa.FaultInjection.FailNth = 10;
        Assert.All(Run(4), Assert.True);
        Assert.Equal(6, Pa.FaultInjection.FailNth);
        Pa.FaultInjection.FailNth = 0;
        Assert.All(Run(20), Assert.True);
        Assert.Equal(0, Pa.InjectedFailures);
    }

    [Fact]
    public void FailNthNeedsNoProbabilityAndSkipsWhatIsNotEligible()
    {
        Pa.FaultInjection.MinOrder = 1;
        Pa.FaultInjection.FailNth = 2;
        Assert.True(Try(Gfp.Kernel | Gfp.NoFail, 1)); // neither NoFail nor an order below MinOrder counts
        Assert.True(Try(Gfp.Kernel, 0));
        Assert.True(Try(Gfp.Kernel, 1));
        Assert.False(Try(Gfp.Kernel, 1));
        Assert.Equal(0, Pa.FaultInjection.Probability);
        Assert.Throws<ArgumentOutOfRangeException>(() => Pa.FaultInjection.FailNth = -1);
    }

    [Fact]
    public void ProbabilityIsValidated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Pa.FaultInjection.Probability = 101);
        Assert.Throws<ArgumentOutOfRangeException>(() => Pa.FaultInjection.Probability = -1);
    }
}

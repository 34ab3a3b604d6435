using Allocators.PageAlloc;
using Allocators.Tests.PageAlloc;

namespace Allocators.Tests.Failure;

/// <summary>
/// Runs an operation again and again, failing its first allocation, then its second, and so on (the kernel's
/// fail-nth), first in the page allocator (fail_page_alloc), then in the slab layer (failslab), until it gets through
/// every allocation it makes; after each failure the system must be exactly as before and the operation's inputs intact.
/// </summary>
internal static class FailNth
{
    /// <summary>More steps than any operation here makes; reaching it means the operation never stops allocating.</summary>
    private const int MaxSteps = 4000;

    /// <summary>A small flat system whose free memory stays in the arena (nothing is given back to the host meanwhile).</summary>
    public static MemorySystem NewSystem(long mebibytes = 16) => PageTestKit.NewSystem(mebibytes, releaseFreeMemory: false);

    /// <summary>
    /// Fails each allocation of <paramref name="attempt"/> in turn (see the type). <paramref name="attempt"/> returns
    /// whether the operation succeeded, or throws <see cref="OutOfMemoryException"/>; after a success
    /// <paramref name="undo"/> takes its result away again, after a failure <paramref name="inputsIntact"/> checks
    /// what the operation was given. An operation may also get through an injected failure (a fallback).
    /// </summary>
    /// <returns>How many of the operation's page and slab allocations were failed.</returns>
    public static (int Pages, int Slab) Run(MemorySystem sys, string what, Func<SystemState> capture, Func<bool> attempt, Action undo,
        Action? inputsIntact = null, bool kernelTablesMayChange = false)
    {
        int pages = Layer(sys.Pages.FaultInjection, "page allocation");
        int slab = Layer(sys.Slab.Failslab, "slab allocation");
        return (pages, slab);

        int Layer(FaultAttributes faults, string layer)
        {
            int failed = 0;
            for (int n = 1; ; n++)
            {
                Assert.True(n <= MaxSteps, $"{what}: still allocating after {MaxSteps} {layer}s.");
                SystemState before = capture();
                bool ok = false;
                faults.FailNth = n;
                try
                {
                    ok = attempt();
                }
                catch (OutOfMemoryException)
                {
                }
                bool injected = faults.FailNth == 0;
                faults.FailNth = 0;
                if (ok)
                {
                    undo();
                    if (!injected) return failed;
                    failed++;
                    continue;
                }
                Assert.True(injected, $"{what}: failed at {layer} {n} although nothing was failed on purpose.");
                failed++;
                before.AssertSame(capture(), $"{what}, {layer} {n} failed", kernelTablesMayChange);
                inputsIntact?.Invoke();
            }
        }
    }
}

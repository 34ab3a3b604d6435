namespace Allocators.Tests.Threading;

/// <summary>What a body of code allocates on the managed heap, for the "hot paths allocate nothing" tests.</summary>
internal static class ManagedBytes
{
    /// <summary>
    /// The fewest managed bytes <paramref name="body"/> allocates on the calling thread in <paramref name="runs"/> runs.
    /// A steady state allocates nothing in every run; a one-time cost from outside the code under test lands in one
    /// run only: another test's system draining every thread's caches (this thread registers again, which allocates),
    /// the JIT moving a loop to optimised code (on-stack replacement allocates), a process-wide KFENCE sample request.
    /// </summary>
    public static long LeastOf(int runs, Action body)
    {
        long least = long.MaxValue;
        for (int run = 0; run < runs; run++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            body();
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        return least;
    }
}

using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Threading;

namespace Allocators.Tests.Threading;

/// <summary>The stack-indexed thread records behind the plain API's fast paths: each thread finds its own, never another's.</summary>
[Collection(nameof(Allocators.Tests.Slab.SerialThreadContexts))]
public unsafe class ThreadRecordTests
{
    private static void RunOnNewThread(Action body, int maxStackSize = 0)
    {
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { error = e; }
        }, maxStackSize);
        thread.Start();
        thread.Join();
        if (error != null) throw new Xunit.Sdk.XunitException($"on the thread: {error}");
    }

    [Fact]
    public void EnabledOnLinuxX64()
        => Assert.Equal(OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64, ThreadRecord.Enabled);

    [Fact]
    public void AThreadFindsItsOwnRecordOncePublished()
    {
        RunOnNewThread(() =>
        {
            ThreadRecord* r = ThreadRecord.Publish();
            Assert.True(r != null);
            Assert.True(ThreadRecord.Current() == r);
            Assert.True(ThreadRecord.Mine() == r);
            byte probe;
            nuint sp = (nuint)(&probe);
            Assert.True(sp - r->Low < r->Size, $"0x{sp:x} lies in [0x{r->Low:x}, +0x{r->Size:x})");
            Assert.True(HostMemory.TryGetThreadStack(out nuint low, out nuint high));
            Assert.Equal(low, r->Low);
            Assert.Equal(high - low, r->Size);
        });
    }

    [Fact]
    public void ARecordCoversAtMostTheTop16MiBOfAStack()
    {
        if (!ThreadRecord.Enabled) return;
        RunOnNewThread(() =>
        {
            ThreadRecord* r = ThreadRecord.Publish();
            Assert.True(HostMemory.TryGetThreadStack(out nuint low, out nuint high));
            Assert.True(high - low > 16u << 20, $"the thread got a {high - low}-byte stack");
            Assert.Equal(high - (16u << 20), r->Low);
            Assert.Equal((nuint)(16u << 20), r->Size);
            Assert.True(ThreadRecord.Current() == r);
        }, maxStackSize: 64 << 20);
    }

    [Fact]
    public void ConcurrentThreadsNeverFindAnotherThreadsRecord()
    {
        const int Threads = 6;
        var mine = new nint[Threads];
        int wrong = 0;
        using var start = new Barrier(Threads);
        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            mine[t] = (nint)ThreadRecord.Publish();
            start.SignalAndWait();
            for (int i = 0; i < 200_000; i++)
            {
                ThreadRecord* r = ThreadRecord.Current();
                if (r == null) r = ThreadRecord.Publish();
                if ((nint)r != mine[t]) Interlocked.Increment(ref wrong);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Equal(0, wrong);
        Assert.Equal(Threads, mine.Distinct().Count());
    }

    [Fact]
    public void AThreadOnAnExitedThreadsStackDoesNotFindItsRecord()
    {
        if (!ThreadRecord.Enabled) return;
        // glibc hands a joined thread's stack to the next thread of the same size: the new thread's stack pointer
        // then lies in the old record's bounds, and only the exit key's destructor keeps it from matching.
        int reused = 0, stale = 0;
        nuint previousLow = 0;
        ThreadRecord* previous = null;
        for (int i = 0; i < 40; i++)
        {
            RunOnNewThread(() =>
            {
                Assert.True(HostMemory.TryGetThreadStack(out nuint low, out _));
                if (low == previousLow) reused++;
                if (ThreadRecord.Current() != null) stale++;
                previous = ThreadRecord.Publish();
                previousLow = low;
            });
            // The destructor runs on the exiting thread after Join returns: wait for it, then the record is free.
            var wait = System.Diagnostics.Stopwatch.StartNew();
            while (Volatile.Read(ref previous->Dead) == 0 && wait.ElapsedMilliseconds < 5_000) Thread.Sleep(1);
            Assert.Equal(1, previous->Dead);
            Assert.Equal((nuint)0, previous->Size);
        }
        Assert.Equal(0, stale);
        Assert.True(reused > 0, "no thread ran on a stack an earlier one had used, so nothing was tested");
    }

    [Fact]
    public void ExitedThreadsRecordsAreClaimedAgain()
    {
        if (!ThreadRecord.Enabled) return;
        RunOnNewThread(() => ThreadRecord.Publish());
        int before = ThreadRecord.Capacity;
        for (int i = 0; i < 200; i++) RunOnNewThread(() => ThreadRecord.Publish());
        Assert.InRange(ThreadRecord.Capacity, before, before + 64);
    }
}

using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>Tests that watch which thread context a new thread gets: alone, since every thread of the process shares the registry.</summary>
[CollectionDefinition(nameof(SerialThreadContexts), DisableParallelization = true)]
public sealed class SerialThreadContexts;

/// <summary>A thread that starts after another ended takes over its slab context: its slabs, free objects and owner id.</summary>
[Collection(nameof(SerialThreadContexts))]
public unsafe class SlabAdoptionTests
{
    [Fact]
    public void AThreadThatStartsAfterAnotherEndedAdoptsItsSlabs()
    {
        using var sys = NewUncheckedSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("adopted", 64);
        // A registration adopts one ended thread's context and retires the others: after this one has ended, its
        // context is the only one left to adopt (unless a thread of an earlier test ends meanwhile: then try again).
        bool adopted = false;
        for (int attempt = 0; attempt < 5 && !adopted; attempt++)
        {
            RunOnNewThread(() => SlabCpus.GetOrCreateCurrent());
            nint first = 0;
            RunOnNewThread(() =>
            {
                first = (nint)SlabCpus.GetOrCreateCurrent();
                // Allocate and free a little: the thread keeps a current slab with free objects when it ends.
                var objects = Enumerable.Range(0, 40).Select(_ => (nint)cache.Alloc()).ToArray();
                foreach (nint p in objects) cache.Free((void*)p);
            });
            long grown = cache.Stats.SlabsAllocated;
            RunOnNewThread(() =>
            {
                adopted = (nint)SlabCpus.GetOrCreateCurrent() == first;
                if (!adopted) return;
                // The adopter allocates from the ended thread's slab: no new slab.
                var objects = Enumerable.Range(0, 40).Select(_ => (nint)cache.Alloc()).ToArray();
                foreach (nint p in objects) cache.Free((void*)p);
                Assert.Equal(grown, cache.Stats.SlabsAllocated);
            });
        }
        Assert.True(adopted, "a new thread adopted the context of the thread that ended just before");
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void AThreadAboutToGrowASlabFirstTakesTheSlabsOfAThreadThatEnded()
    {
        using var sys = NewUncheckedSystem();
        var cache = sys.Slab.CreateCache("retired-exited", 64);
        using var registered = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        long grown = -1, after = -1;
        // The taker registers first, so it cannot adopt the ended thread's context: only RetireExited can give it the slab.
        var taker = new Thread(() =>
        {
            SlabCpus.GetOrCreateCurrent();
            registered.Set();
            go.Wait();
            Thread.Sleep(5); // a fresh millisecond for the scan
            grown = cache.Stats.SlabsAllocated;
            var objects = Enumerable.Range(0, 40).Select(_ => (nint)cache.Alloc()).ToArray();
            after = cache.Stats.SlabsAllocated;
            foreach (nint p in objects) cache.Free((void*)p);
        });
        taker.Start();
        registered.Wait();
        RunOnNewThread(() =>
        {
            var objects = Enumerable.Range(0, 40).Select(_ => (nint)cache.Alloc()).ToArray();
            foreach (nint p in objects) cache.Free((void*)p);
        });
        go.Set();
        taker.Join();
        Assert.Equal(1, grown);
        Assert.Equal(grown, after); // no new slab: the ended thread's went to the node and the taker took it
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
    }
}

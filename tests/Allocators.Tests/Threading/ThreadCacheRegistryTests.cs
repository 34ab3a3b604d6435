using Allocators.Threading;

namespace Allocators.Tests.Threading;

public unsafe class ThreadCacheRegistryTests
{
    private sealed class CountingOwner : IThreadCacheOwner
    {
        public int Flushed;
        public int Retired;
        public int Initialised;

        public void InitCache(ThreadCacheHeader* cache) => Interlocked.Increment(ref Initialised);

        public void FlushCache(ThreadCacheHeader* cache) => Interlocked.Increment(ref Flushed);

        public void RetireCache(ThreadCacheHeader* cache) => Interlocked.Increment(ref Retired);
    }

    [Fact]
    public void CurrentIsNullUntilRegisteredThenStable()
    {
        using var registry = new ThreadCacheRegistry(new CountingOwner(), 128);
        Assert.True(registry.Current == null);
        ThreadCacheHeader* cache = registry.GetOrCreateCurrent();
        Assert.True(cache != null);
        Assert.True(registry.Current == cache);
        Assert.True(registry.GetOrCreateCurrent() == cache);
        Assert.Equal(1, registry.Count);
    }

    [Fact]
    public void EveryNewBlockIsInitialisedOnceBeforeUse()
    {
        var owner = new CountingOwner();
        using var registry = new ThreadCacheRegistry(owner, 128);
        registry.GetOrCreateCurrent();
        registry.GetOrCreateCurrent();
        var other = new Thread(() => registry.GetOrCreateCurrent());
        other.Start();
        other.Join();
        Assert.Equal(2, owner.Initialised);
    }

    [Fact]
    public void RegistryCreatedAfterDisposeNeverSeesTheOldCache()
    {
        for (int round = 0; round < 8; round++)
        {
            var first = new ThreadCacheRegistry(new CountingOwner(), 128);
            Assert.True(first.GetOrCreateCurrent() != null);
            first.Dispose();
            Assert.True(first.Current == null);

            // Usually takes the slot just given back; its entry on this thread still names the freed block.
            using var second = new ThreadCacheRegistry(new CountingOwner(), 128);
            Assert.True(second.Current == null);
            ThreadCacheHeader* cache = second.GetOrCreateCurrent();
            Assert.True(cache != null);
            Assert.True(second.Current == cache);
            Assert.Equal(1, second.Count);
        }
    }

    [Fact]
    public void ManyRegistriesOnOneThreadEachKeepTheirOwnCache()
    {
        var registries = new ThreadCacheRegistry[40];
        var caches = new nint[registries.Length];
        try
        {
            for (int i = 0; i < registries.Length; i++)
            {
                registries[i] = new ThreadCacheRegistry(new CountingOwner(), 64 + i);
                caches[i] = (nint)registries[i].GetOrCreateCurrent();
            }
            // The thread's slot table grew several times meanwhile; every entry must have moved with it.
            for (int i = 0; i < registries.Length; i++) Assert.Equal(caches[i], (nint)registries[i].Current);
            Assert.Equal(caches.Length, caches.Distinct().Count());
        }
        finally
        {
            foreach (ThreadCacheRegistry? r in registries) r?.Dispose();
        }
    }

    [Fact]
    public void CacheOfAnExitedThreadIsRetired()
    {
        var owner = new CountingOwner();
        using var registry = new ThreadCacheRegistry(owner, 128);
        nint seen = 0;
        var thread = new Thread(() => seen = (nint)registry.GetOrCreateCurrent());
        thread.Start();
        thread.Join();
        Assert.NotEqual(0, seen);
        Assert.True(registry.Current == null);

        for (int i = 0; i < 50 && Volatile.Read(ref owner.Retired) == 0; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.Equal(1, owner.Retired);
        Assert.Equal(0, registry.Count);
    }
}

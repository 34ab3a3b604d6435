using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Highmem;

public sealed unsafe class KmapTests : IDisposable
{
    private const long MiB = 1L << 20;
    private const MemoryProtection ReadWrite = MemoryProtection.Read | MemoryProtection.Write;
    private readonly MemorySystem _sys = new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = 32 * MiB } });

    public void Dispose() => _sys.Dispose();

    private KernelAddressSpace Kernel => _sys.Kernel;

    private PageFrame* HighPage()
    {
        PageFrame* page = _sys.Pages.AllocPages(Gfp.HighUser | Gfp.Zero, 0);
        Assert.True(Kernel.IsHighMem(page));
        return page;
    }

    [Fact]
    public void KmapSeesWhatAVmallocAliasAndAUserMappingOfThePageSee()
    {
        using var mm = _sys.CreateAddressSpace();
        ulong user = mm.Mmap(0, 4096, ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        mm.Write(user + 8, 1111L);
        PageFrame* page = _sys.Memory.PfnToPage(mm.GetPte(user).Pfn);
        Assert.True(Kernel.IsHighMem(page)); // user memory comes from HighMem when there is some

        ulong kva = Kernel.Kmap(page);
        Assert.InRange(kva, KernelAddressSpace.PkmapBase, KernelAddressSpace.PkmapAddress(KernelAddressSpace.LastPkmap) - 1);
        Assert.Equal(kva, Kernel.PageAddress(page));
        Assert.Equal(1111L, Kernel.Read<long>(kva + 8));
        Kernel.Write(kva + 16, 2222L);
        Assert.Equal(2222L, mm.Read<long>(user + 16));

        nint one = (nint)page;
        ulong alias = _sys.Vmalloc.Vmap(new ReadOnlySpan<nint>(&one, 1));
        Assert.Equal(2222L, Kernel.Read<long>(alias + 16));
        Kernel.Write(alias + 24, 3333L);
        Assert.Equal(3333L, Kernel.Read<long>(kva + 24));
        Assert.Equal(3333L, mm.Read<long>(user + 24));
        _sys.Vmalloc.Vunmap(alias);
        Kernel.Kunmap(page);
    }

    [Fact]
    public void AFreedEntryFaultsOnceAWrapHasFlushedIt()
    {
        PageFrame* page = HighPage();
        ulong kva = Kernel.Kmap(page);
        Kernel.Write(kva, 5L);
        Kernel.Kunmap(page);
        int slot = (int)((kva - KernelAddressSpace.PkmapBase) >> 12);
        Assert.NotEqual(0, slot);
        Assert.Equal(1, Kernel.PkmapCount(slot));
        Assert.Equal(5L, Kernel.Read<long>(kva)); // count 1: still mapped (and maybe cached) until the next flush
        Assert.Equal(kva, Kernel.PageAddress(page));

        // Map and unmap other pages until the search wraps: flush_all_zero_pkmaps clears every count-1 entry with
        // one flush, and the wrapping kmap takes entry 0, so this page's entry is free and unmapped.
        var others = new List<nint>();
        long flushes = Kernel.PkmapFlushes;
        while (Kernel.PkmapFlushes == flushes)
        {
            PageFrame* other = HighPage(); // a new page each time: a page still in an entry reuses it
            others.Add((nint)other);
            Kernel.Kmap(other);
            Kernel.Kunmap(other);
            Assert.True(others.Count <= KernelAddressSpace.LastPkmap);
        }
        Assert.Equal(flushes + 1, Kernel.PkmapFlushes);
        Assert.Equal(0, Kernel.PkmapCount(slot));
        Assert.Equal(0UL, Kernel.PageAddress(page));
        Assert.Throws<KernelOopsException>(() => Kernel.Read<long>(kva));
        _sys.Pages.FreePages(page, 0);
        foreach (nint p in others) _sys.Pages.FreePages((PageFrame*)p, 0);
    }

    [Fact]
    public void NestedAtomicMapsUnmapInReverseAndRefuseAnyOtherOrder()
    {
        PageFrame* a = HighPage(), b = HighPage(), c = HighPage();
        *(long*)_sys.Pages.AddressOf(a) = 1;
        *(long*)_sys.Pages.AddressOf(b) = 2;
        *(long*)_sys.Pages.AddressOf(c) = 3;
        ulong va = Kernel.KmapAtomic(a), vb = Kernel.KmapAtomic(b), vc = Kernel.KmapAtomic(c);
        Assert.Equal(3, new[] { va, vb, vc }.Distinct().Count());
        Assert.All(new[] { va, vb, vc }, v => Assert.InRange(v, Fixmap.Start, Fixmap.Top));
        Assert.Equal(1L, Kernel.Read<long>(va));
        Assert.Equal(2L, Kernel.Read<long>(vb));
        Assert.Equal(3L, Kernel.Read<long>(vc));
        Assert.True(Kernel.InAtomic);
        var wrong = Assert.Throws<InvalidOperationException>(() => Kernel.KunmapAtomic(va));
        Assert.Contains("reverse order", wrong.Message);
        Assert.Equal(2L, Kernel.Read<long>(vb)); // nothing changed
        var sleep = Assert.Throws<InvalidOperationException>(() => Kernel.Kmap(a));
        Assert.Contains("sleeping function called from invalid context", sleep.Message);
        Kernel.KunmapAtomic(vc);
        Kernel.KunmapAtomic(vb + 100); // any address inside the page
        Kernel.KunmapAtomic(va);
        Assert.False(Kernel.InAtomic);
        Assert.Throws<KernelOopsException>(() => Kernel.Read<long>(va));
        // The same slots serve the next maps on this thread.
        Assert.Equal(va, Kernel.KmapLocal(c));
        Assert.Equal(3L, Kernel.Read<long>(va));
        Kernel.KunmapLocal(va);
        foreach (nint p in new[] { (nint)a, (nint)b, (nint)c }) _sys.Pages.FreePages((PageFrame*)p, 0);
    }

    [Fact]
    public void ALowPageMapsToItsDirectMapAddressWithoutASlot()
    {
        PageFrame* low = _sys.Pages.AllocPages(Gfp.Kernel, 0);
        ulong direct = Kernel.PageAddress(low);
        Assert.Equal(direct, Kernel.KmapAtomic(low));
        Kernel.KunmapAtomic(direct);
        Assert.Equal(direct, Kernel.Kmap(low));
        Kernel.Kunmap(low);
        PageFrame* high = HighPage();
        ulong slot0 = Kernel.KmapLocal(high);
        Assert.Equal(Fixmap.ToVirt(Fixmap.KmapBegin), slot0 & ~0xFFFUL);
        Kernel.KunmapLocal(slot0);
        _sys.Pages.FreePages(low, 0);
        _sys.Pages.FreePages(high, 0);
    }

    [Fact]
    public void KmapSleepsWhileEveryEntryIsInUseUntilAnotherThreadUnmaps()
    {
        var pages = new List<nint>();
        for (int i = 0; i < KernelAddressSpace.LastPkmap; i++)
        {
            PageFrame* p = HighPage();
            pages.Add((nint)p);
            Kernel.Kmap(p);
        }
        PageFrame* extra = HighPage();
        ulong got = 0;
        var waiter = new Thread(() => got = Kernel.Kmap(extra));
        waiter.Start();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (Kernel.PkmapWaits == 0 && DateTime.UtcNow < deadline) Thread.Sleep(5);
        Assert.Equal(1, Kernel.PkmapWaits); // every entry is in use: it sleeps
        Assert.False(waiter.Join(100));
        Kernel.Kunmap((PageFrame*)pages[17]);
        Assert.True(waiter.Join(10_000));
        Assert.NotEqual(0UL, got);
        Assert.Equal(got, Kernel.PageAddress(extra));
        Kernel.Kunmap(extra);
        for (int i = 0; i < pages.Count; i++) if (i != 17) Kernel.Kunmap((PageFrame*)pages[i]);
        foreach (nint p in pages) _sys.Pages.FreePages((PageFrame*)p, 0);
        _sys.Pages.FreePages(extra, 0);
    }

    [Fact]
    public void ManyThreadsKmappingRandomPagesLoseNoMapping()
    {
        const int Pages = 700; // more than LAST_PKMAP, so the area wraps and threads sleep
        var pages = new nint[Pages];
        for (int i = 0; i < Pages; i++)
        {
            PageFrame* p = HighPage();
            pages[i] = (nint)p;
            *(long*)_sys.Pages.AddressOf(p) = i;
        }
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var threads = new Thread[4];
        for (int t = 0; t < threads.Length; t++)
        {
            int seed = t;
            threads[t] = new Thread(() =>
            {
                var rng = new Random(seed);
                for (int n = 0; n < 3000; n++)
                {
                    int held = rng.Next(1, 4);
                    var mine = new (int Index, ulong Va)[held];
                    for (int k = 0; k < held; k++)
                    {
                        int i = rng.Next(Pages);
                        mine[k] = (i, Kernel.Kmap((PageFrame*)pages[i]));
                    }
                    foreach (var (i, va) in mine)
                        if (Kernel.Read<long>(va) != i) errors.Enqueue($"page {i} read {Kernel.Read<long>(va)} at 0x{va:x}");
                    // Atomic maps ride along on the same pages.
                    ulong local = Kernel.KmapAtomic((PageFrame*)pages[mine[0].Index]);
                    if (Kernel.Read<long>(local) != mine[0].Index) errors.Enqueue("atomic map read the wrong page");
                    Kernel.KunmapAtomic(local);
                    foreach (var (i, _) in mine) Kernel.Kunmap((PageFrame*)pages[i]);
                }
            });
        }
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.True(t.Join(120_000));
        Assert.Empty(errors);
        for (int i = 0; i < KernelAddressSpace.LastPkmap; i++) Assert.InRange(Kernel.PkmapCount(i), 0, 1);
        foreach (nint p in pages) _sys.Pages.FreePages((PageFrame*)p, 0);
    }

    /// <summary>
    /// More threads than slot groups (<see cref="Fixmap.KmapGroups"/>): threads that hold no local kmap lose their group
    /// to threads that need one, and no two threads ever map through one slot at once (each reads its own page's value
    /// through every map, also after its translation is flushed and walked again, while others take groups around it).
    /// </summary>
    [Fact]
    public void MoreThreadsThanSlotGroupsShareThemWithoutSharingASlot()
    {
        const int Threads = Fixmap.KmapGroups + 12;
        var pages = new nint[2 * Threads];
        for (int i = 0; i < pages.Length; i++)
        {
            PageFrame* p = HighPage();
            pages[i] = (nint)p;
            *(long*)_sys.Pages.AddressOf(p) = i;
        }
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var idle = new Barrier(Threads);
        var threads = new Thread[Threads];
        for (int t = 0; t < Threads; t++)
        {
            int me = t;
            threads[t] = new Thread(() =>
            {
                var rng = new Random(me);
                try
                {
                    for (int n = 0; n < 300; n++)
                    {
                        // Every thread has mapped once and holds nothing: later maps must take groups from idle threads.
                        if (n == 1) idle.SignalAndWait();
                        int first = 2 * me, second = 2 * me + 1;
                        ulong a = Kernel.KmapLocal((PageFrame*)pages[first]);
                        ulong b = rng.Next(2) == 0 ? Kernel.KmapLocal((PageFrame*)pages[second]) : 0;
                        if (rng.Next(8) == 0) Thread.Yield();
                        // A flushed translation is walked again from the slot's PTE, which no other thread may have rewritten.
                        if (rng.Next(3) == 0) Kernel.FlushTlbPage(a);
                        if (b != 0 && rng.Next(3) == 0) Kernel.FlushTlbPage(b);
                        if (Kernel.Read<long>(a) != first) errors.Enqueue($"thread {me} read {Kernel.Read<long>(a)} through 0x{a:x}");
                        if (b != 0 && Kernel.Read<long>(b) != second) errors.Enqueue($"thread {me} read {Kernel.Read<long>(b)} through 0x{b:x}");
                        if (b != 0) Kernel.KunmapLocal(b);
                        Kernel.KunmapLocal(a);
                    }
                }
                catch (InvalidOperationException e)
                {
                    // A slot another thread unmapped under this one oopses; the barrier must not wait for this thread.
                    errors.Enqueue($"thread {me}: {e.Message}");
                    idle.RemoveParticipant();
                }
            });
        }
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.True(t.Join(120_000));
        Assert.Empty(errors);
        foreach (nint p in pages) _sys.Pages.FreePages((PageFrame*)p, 0);
    }
}

using Allocators.Filemap;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// try_to_unmap's batched TLB flush: the unmaps of one reclaim batch share one shootdown per address space (as the
/// kernel's tlbflush_unmap_batch), pages come back intact afterwards, and munmap waits for a shootdown a batch still
/// owes (flush_tlb_batched_pending).
/// </summary>
public sealed unsafe class TlbBatchTests
{
    private const int PageSize = 4096;
    private const int Pages = 256;

    /// <summary>A second thread that has used <paramref name="mm"/> (so every shootdown has someone to wait for) and idles until disposed.</summary>
    private sealed class IdleUser : IDisposable
    {
        private readonly ManualResetEventSlim _stop = new();
        private readonly Thread _thread;

        public IdleUser(AddressSpace mm, ulong address)
        {
            using var started = new ManualResetEventSlim();
            _thread = new Thread(() =>
            {
                mm.Read<byte>(address);
                started.Set();
                _stop.Wait();
            }) { IsBackground = true };
            _thread.Start();
            started.Wait();
        }

        public void Dispose()
        {
            _stop.Set();
            _thread.Join();
            _stop.Dispose();
        }
    }

    private static byte[] Data(int pages, int seed)
    {
        var data = new byte[pages * PageSize];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>Reclaims until <paramref name="done"/> holds (the first passes only clear accessed bits), at most 20 passes.</summary>
    private static long ReclaimUntil(MemorySystem system, Func<bool> done)
    {
        long freed = 0;
        for (int pass = 0; pass < 20 && !done(); pass++) freed += system.Reclaim(Pages);
        return freed;
    }

    [Fact]
    public void MappedFilePagesShareOneShootdownPerBatch()
    {
        using var f = new SwapFixture(swapon: false);
        using FileMapping file = f.System.PageCache.Open(Path.Combine(f.Dir, "mapped.bin"));
        byte[] data = Data(Pages, 1);
        file.Write(0, data);
        file.Fsync(); // clean: reclaim drops them with no write, so nothing but the batch flushes
        using (AddressSpace mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, Pages * PageSize, MemoryProtection.Read, MapFlags.Shared, file, 0);
            for (int i = 0; i < Pages; i++) Assert.Equal(data[i * PageSize], mm.Read<byte>(a + (ulong)i * PageSize));
            using (new IdleUser(mm, a))
            {
                long shootdowns = mm.TlbStatistics.Shootdowns;
                ReclaimUntil(f.System, () => mm.Statistics.RssFile <= Pages / 4);
                long unmapped = Pages - mm.Statistics.RssFile;
                long waited = mm.TlbStatistics.Shootdowns - shootdowns;
                Assert.True(unmapped >= Pages / 2, $"reclaim unmapped {unmapped} of {Pages} pages");
                // One shootdown per batch of up to SWAP_CLUSTER_MAX pages, not one per page.
                Assert.True(waited > 0 && waited * 8 <= unmapped, $"{waited} shootdowns for {unmapped} unmapped pages");
                Assert.Equal(0, mm.TlbBatchPending);
            }
            // Everything dropped comes back from the file.
            for (int i = 0; i < Pages; i++)
            {
                Assert.Equal(data[i * PageSize], mm.Read<byte>(a + (ulong)i * PageSize));
                Assert.Equal(data[i * PageSize + PageSize - 1], mm.Read<byte>(a + (ulong)i * PageSize + PageSize - 1));
            }
            mm.CheckConsistency();
        }
        f.System.PageCache.CheckConsistency();
        f.Pages.Lru.CheckConsistency();
    }

    [Fact]
    public void CleanSwapCachePagesShareOneShootdownPerBatch()
    {
        using var f = new SwapFixture();
        using (AddressSpace mm = f.NewProcess())
        {
            ulong a = SwapTests.MapStamped(mm, Pages, seed: 4);
            Assert.True(f.System.Reclaim(Pages) >= Pages / 2);
            // Read back: the pages return clean and keep their slots (the swap cache), so reclaim needs no write.
            SwapTests.AssertStamps(mm, a, Pages, seed: 4);
            using (new IdleUser(mm, a))
            {
                long shootdowns = mm.TlbStatistics.Shootdowns;
                long swappedOut = f.Counters.PagesSwappedOut;
                ReclaimUntil(f.System, () => mm.Statistics.RssAnon <= Pages / 4);
                long unmapped = mm.SwapEntries;
                long waited = mm.TlbStatistics.Shootdowns - shootdowns;
                Assert.True(unmapped >= Pages / 2, $"reclaim unmapped {unmapped} of {Pages} pages");
                Assert.Equal(swappedOut, f.Counters.PagesSwappedOut); // clean: no page was written again
                Assert.True(waited > 0 && waited * 8 <= unmapped, $"{waited} shootdowns for {unmapped} unmapped pages");
            }
            SwapTests.AssertStamps(mm, a, Pages, seed: 4);
            f.AnonSwapChecks();
            mm.CheckConsistency();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void DirtyPagesAreFlushedBeforeEachWriteOut()
    {
        using var f = new SwapFixture();
        using (AddressSpace mm = f.NewProcess())
        {
            ulong a = SwapTests.MapStamped(mm, Pages, seed: 3);
            using (new IdleUser(mm, a))
            {
                long shootdowns = mm.TlbStatistics.Shootdowns;
                long swappedOut = f.Counters.PagesSwappedOut;
                Assert.True(f.System.Reclaim(Pages) >= Pages / 2);
                long written = f.Counters.PagesSwappedOut - swappedOut;
                long waited = mm.TlbStatistics.Shootdowns - shootdowns;
                // A dirty entry leaves a writable translation: the batch waits for it before the page is written out
                // (try_to_unmap_flush_dirty), so no write to the page can land after its copy went to swap.
                Assert.True(written >= Pages / 2, $"{written} pages written");
                Assert.True(waited >= written, $"{waited} shootdowns for {written} pages written out");
                Assert.Equal(0, mm.TlbBatchPending);
            }
            SwapTests.AssertStamps(mm, a, Pages, seed: 3);
            f.AnonSwapChecks();
            mm.CheckConsistency();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void MunmapWaitsForTheShootdownABatchOwes()
    {
        using var f = new SwapFixture(swapon: false);
        using FileMapping file = f.System.PageCache.Open(Path.Combine(f.Dir, "pending.bin"));
        byte[] data = Data(4, 2);
        file.Write(0, data);
        using (AddressSpace mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 4 * PageSize, MemoryProtection.Read, MapFlags.Shared, file, 0);
            for (int i = 0; i < 4; i++) mm.Read<byte>(a + (ulong)i * PageSize);
            using (new IdleUser(mm, a))
            {
                PageFrame* page = file.FindGetPage(2);
                Assert.True(page != null);
                TlbUnmapBatch batch = TlbUnmapBatch.Begin();
                try
                {
                    PageWait.Lock(page);
                    ((IFileMapper)mm).TryUnmap(file, 2, page);
                    PageWait.Unlock(page);
                    Assert.Equal(0, page->MapCount);
                    Assert.NotEqual(0, mm.TlbBatchPending);
                    Assert.Equal(1, batch.PendingCount);

                    // The page's entry is already clear, so munmap of it has nothing of its own to flush: it must
                    // still not return while another thread may be inside an access through the old translation.
                    long shootdowns = mm.TlbStatistics.Shootdowns;
                    mm.Munmap(a + 2 * PageSize, PageSize);
                    Assert.Equal(0, mm.TlbBatchPending);
                    Assert.Equal(shootdowns + 1, mm.TlbStatistics.Shootdowns);
                }
                finally
                {
                    batch.End();
                    f.Pages.PutPage(page);
                }
                Assert.Null(TlbUnmapBatch.Current);
                Assert.Equal(0, batch.PendingCount);
            }
            Assert.Equal(data[3 * PageSize], mm.Read<byte>(a + 3 * PageSize));
            Assert.Equal(data[1 * PageSize], mm.Read<byte>(a + 1 * PageSize));
        }
    }
}

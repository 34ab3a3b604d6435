using Allocators.Buffers;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Lifetime;

/// <summary>
/// After <see cref="MemorySystem.Dispose"/> every public entry point throws <see cref="ObjectDisposedException"/> (Dispose
/// methods are no-ops), whatever was used before; and a dispose racing with other threads' calls makes them throw or
/// lets them finish, never corrupting memory or killing the process.
/// </summary>
public sealed unsafe class UseAfterDisposeTests(ITestOutputHelper output)
{
    private static void Disposed(string what, Action call)
    {
        try
        {
            call();
        }
        catch (ObjectDisposedException)
        {
            return;
        }
        catch (Exception e)
        {
            Assert.Fail($"{what}: {e.GetType().Name} instead of ObjectDisposedException: {e.Message}");
        }
        Assert.Fail($"{what}: returned instead of throwing ObjectDisposedException");
    }

    [Fact]
    public void EveryEntryPointThrowsAfterDispose()
    {
        var sys = NewSystem();
        SlabAllocator slab = sys.Slab;
        PageAllocator pages = sys.Pages;
        KmemCache cache = slab.CreateCache("after-dispose", 64);
        KmemCache<long> typed = slab.CreateCache<long>("after-dispose-t");
        void* obj = cache.Alloc();
        long* typedObj = typed.Alloc();
        void* small = slab.Kmalloc(64);
        void* large = slab.Kmalloc(100_000);
        PageFrame* page = pages.AllocPages(Gfp.Kernel, 0);
        var vmalloc = sys.Vmalloc;
        ulong area = vmalloc.Vmalloc(3 * 4096);
        nint percpu = sys.Percpu.AllocPercpu(16);
        AddressSpace mm = sys.CreateAddressSpace();
        ulong va = mm.Mmap(0, 4 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        mm.Write(va, 42L);
        var pool = new NativeMemoryPool(sys.Slab);
        var rented = pool.Rent(100);

        sys.Dispose();
        sys.Dispose(); // idempotent

        Disposed("Kmalloc(64)", () => slab.Kmalloc(64));
        Disposed("Kmalloc(3000), a class not used before", () => slab.Kmalloc(3000));
        Disposed("Kmalloc(100000)", () => slab.Kmalloc(100_000));
        Disposed("Kzalloc", () => slab.Kzalloc(32));
        Disposed("Kfree", () => slab.Kfree(small));
        Disposed("Kfree large", () => slab.Kfree(large));
        Disposed("Krealloc", () => slab.Krealloc(small, 200));
        Disposed("Ksize", () => slab.Ksize(small));
        Disposed("Kmalloc through a handle", () => slab.ThisThread().Kmalloc(64));
        Disposed("CreateCache", () => slab.CreateCache("late", 32));
        Disposed("cache.Alloc", () => cache.Alloc());
        Disposed("cache.Free", () => cache.Free(obj));
        Disposed("cache handle Alloc", () => cache.ThisThread().Alloc());
        Disposed("cache handle Free", () => cache.ThisThread().Free(obj));
        Disposed("cache.Shrink", () => cache.Shrink());
        Disposed("cache.Validate", () => cache.Validate());
        Disposed("KmemCache<T>.Alloc", () => typed.Alloc());
        Disposed("KmemCache<T>.Free", () => typed.Free(typedObj));
        cache.Dispose();
        typed.Dispose();

        Disposed("AllocPages", () => pages.AllocPages(Gfp.Kernel, 0));
        Disposed("AllocPages order 3", () => pages.AllocPages(Gfp.Kernel, 3));
        Disposed("FreePages", () => pages.FreePages(page, 0));
        Disposed("FreePages by address", () => pages.FreePages(pages.Memory.ContiguousBase, 0));
        Disposed("GetFreePages", () => pages.GetFreePages(Gfp.Kernel, 0));
        Disposed("AllocPages through a handle", () => pages.ThisThread().AllocPages(Gfp.Kernel, 0));
        Disposed("FreePages through a handle", () => pages.ThisThread().FreePages(page, 0));
        Disposed("PageAddress", () => pages.PageAddress(page));

        Disposed("Vmalloc", () => vmalloc.Vmalloc(4096));
        Disposed("Vfree", () => vmalloc.Vfree(area));
        Disposed("AllocPercpu", () => sys.Percpu.AllocPercpu(8));
        Disposed("FreePercpu", () => sys.Percpu.FreePercpu(percpu));

        Disposed("mm.Read", () => mm.Read<long>(va));
        Disposed("mm.Write", () => mm.Write(va, 1L));
        Disposed("mm.Mmap", () => mm.Mmap(0, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous));
        Disposed("mm.Munmap", () => mm.Munmap(va, 4096));
        Disposed("mm.Fork", () => mm.Fork());
        Disposed("CreateAddressSpace", () => sys.CreateAddressSpace());
        mm.Dispose();

        Disposed("pool.Rent", () => pool.Rent(100));
        rented.Dispose(); // returning a buffer to a dead pool gives nothing back, and does not throw
        pool.Dispose();
    }

    [Fact]
    public void DisposeRacingWithOtherThreadsNeverCorrupts()
    {
        // A call that overlaps the dispose may finish or throw (the memory it was working on is gone); every call that
        // starts after Dispose returned throws ObjectDisposedException; the process survives all of it.
        for (int round = 0; round < 6; round++)
        {
            var sys = NewSystem();
            KmemCache cache = sys.Slab.CreateCache("racing", 96);
            var wrong = new System.Collections.Concurrent.ConcurrentQueue<string>();
            using var started = new CountdownEvent(4);
            int disposed = 0;
            long ops = 0, overlapping = 0;
            void Worker(int kind)
            {
                started.Signal();
                var mine = new List<nint>();
                for (int i = 0; ; i++)
                {
                    bool after = Volatile.Read(ref disposed) != 0;
                    try
                    {
                        switch (kind)
                        {
                            case 0:
                                mine.Add((nint)sys.Slab.Kmalloc((nuint)(16 + i % 3000)));
                                if (mine.Count > 64) { sys.Slab.Kfree((void*)mine[0]); mine.RemoveAt(0); }
                                break;
                            case 1:
                                mine.Add((nint)cache.Alloc());
                                if (mine.Count > 64) { cache.Free((void*)mine[0]); mine.RemoveAt(0); }
                                break;
                            case 2:
                                mine.Add((nint)sys.Pages.AllocPages(Gfp.Kernel, i % 3));
                                if (mine.Count > 16) { sys.Pages.FreePages((PageFrame*)mine[0], (i - 16) % 3); mine.RemoveAt(0); }
                                break;
                            default:
                                sys.Vmalloc.Vfree(sys.Vmalloc.Vmalloc(8192));
                                break;
                        }
                        Interlocked.Increment(ref ops);
                        if (after) wrong.Enqueue($"worker {kind}: a call that started after the dispose returned normally");
                    }
                    catch (ObjectDisposedException)
                    {
                        if (after) return;
                    }
                    catch (Exception e)
                    {
                        if (after) wrong.Enqueue($"worker {kind}: {e}");
                        Interlocked.Increment(ref overlapping);
                    }
                    if (after) return;
                }
            }
            var threads = Enumerable.Range(0, 4).Select(k => new Thread(() => Worker(k)) { IsBackground = true }).ToArray();
            foreach (var t in threads) t.Start();
            started.Wait();
            Thread.Sleep(20 + round * 10);
            sys.Dispose();
            Volatile.Write(ref disposed, 1);
            foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(20)), "a worker did not stop after the dispose");
            foreach (var w in wrong) output.WriteLine(w);
            Assert.Empty(wrong);
            Assert.True(Interlocked.Read(ref ops) > 0);
            output.WriteLine($"round {round}: {ops} calls, {overlapping} overlapping calls threw something else than ObjectDisposedException");
        }
    }
}

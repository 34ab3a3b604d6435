using System.Runtime.InteropServices;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// The hot paths allocate no managed memory (DESIGN §9): measured with the current thread's allocated-bytes counter
/// around 100 000 operations after a warm-up, including batches that overflow the magazines into the depot and slabs.
/// No assertion runs inside a measured loop.
/// </summary>
public unsafe class SlabZeroAllocationTests
{
    private const int Iterations = 100_000;

    public struct Particle
    {
        public double X, Y, Z;
        public int Id;
    }

    private static long Measure(Action body)
    {
        body(); // warm-up: per-thread caches, magazines, depot, slabs, JIT
        body();
        long before = GC.GetAllocatedBytesForCurrentThread();
        body();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    [Fact]
    public void KmallocKfreeLoopAllocatesNoManagedBytes()
    {
        using var sys = NewUncheckedSystem();
        SlabAllocator slab = sys.Slab;
        int failures = 0;
        long bytes = Measure(() =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                void* p = slab.Kmalloc(64);
                if (p == null) { failures++; continue; }
                *(long*)p = i;
                slab.Kfree(p);
            }
        });
        Assert.Equal(0, failures);
        Assert.Equal(0, bytes);
    }

    [Fact]
    public void TypedCacheLoopAllocatesNoManagedBytes()
    {
        using var sys = NewUncheckedSystem();
        KmemCache<Particle> cache = sys.Slab.CreateCache<Particle>();
        long bytes = Measure(() =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                Particle* p = cache.Alloc();
                p->Id = i;
                cache.Free(p);
                ref Particle r = ref cache.AllocRef();
                r.X = i;
                cache.FreeRef(ref r);
            }
        });
        Assert.Equal(0, bytes);
    }

    [Fact]
    public void BatchesOfAThousandAllocateNoManagedBytes()
    {
        const int Batch = 1000;
        using var sys = NewUncheckedSystem(64);
        KmemCache cache = sys.Slab.CreateCache("batch-200", 200);
        SlabAllocator slab = sys.Slab;
        nint* objects = (nint*)NativeMemory.Alloc(Batch, (nuint)sizeof(nint));
        try
        {
            int failures = 0;
            long bytes = Measure(() =>
            {
                for (int round = 0; round < Iterations / Batch; round++)
                {
                    for (int i = 0; i < Batch; i++)
                    {
                        objects[i] = (nint)cache.Alloc();
                        if (objects[i] == 0) failures++;
                    }
                    for (int i = 0; i < Batch; i++) cache.Free((void*)objects[i]);
                }
            });
            Assert.Equal(0, failures);
            Assert.Equal(0, bytes);

            // kmalloc batches over every size class, including kmalloc-8k whose magazines are small, so slabs are
            // created and given back within each round.
            bytes = Measure(() =>
            {
                for (int round = 0; round < Iterations / Batch; round++)
                {
                    for (int i = 0; i < Batch; i++)
                    {
                        objects[i] = (nint)slab.Kmalloc((nuint)(1 + (i * 37 + round * 11) % 8192));
                        if (objects[i] == 0) failures++;
                    }
                    for (int i = Batch - 1; i >= 0; i--) slab.Kfree((void*)objects[i]);
                }
            });
            Assert.Equal(0, failures);
            Assert.Equal(0, bytes);
        }
        finally
        {
            NativeMemory.Free(objects);
        }
    }

    [Fact]
    public void BulkAllocationAllocatesNoManagedBytes()
    {
        using var sys = NewUncheckedSystem();
        KmemCache cache = sys.Slab.CreateCache("bulk-32", 32);
        nint* objects = (nint*)NativeMemory.Alloc(256, (nuint)sizeof(nint));
        try
        {
            int failures = 0;
            long bytes = Measure(() =>
            {
                var span = new Span<nint>(objects, 256);
                for (int round = 0; round < Iterations / 256; round++)
                {
                    if (cache.AllocBulk(Allocators.PageAlloc.Gfp.Kernel, span) != 256) failures++;
                    cache.FreeBulk(span);
                }
            });
            Assert.Equal(0, failures);
            Assert.Equal(0, bytes);
        }
        finally
        {
            NativeMemory.Free(objects);
        }
    }
}

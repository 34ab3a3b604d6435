using Allocators.Cli.Bench;
using Allocators.Workloads;
using Allocators.Physical;

namespace Allocators.Tests.Bench;

/// <summary>
/// <see cref="IBlockAllocator{TBlock}.OnThisThread"/>: the headline Allocators rows run a thread's loop through the plain
/// calls, like every other allocator; only the handle variants take the thread's handle. Blocks cross between the two
/// kinds of call.
/// </summary>
public sealed unsafe class ThreadRunTests
{
    private struct Probe : IThreadRun<nint>
    {
        public Type? Seen;
        public nint Block;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<nint>, allows ref struct
        {
            Seen = typeof(TAlloc);
            Block = allocator.Allocate(48);
            allocator.Data(Block) = 0x5a;
        }
    }

    private struct Release(nint block) : IThreadRun<nint>
    {
        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<nint>, allows ref struct => allocator.Free(block);
    }

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential, Size = 48)]
    private struct Node
    {
    }

    [Fact]
    public void PlainRowsRunAsTheyAreAndOnlyTheHandleVariantsTakeAHandle()
    {
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 32L << 20 } });
        var handles = new ThreadHandleCount();

        var kmalloc = new KmallocAllocator(system.Slab);
        var probe = new Probe();
        kmalloc.OnThisThread(ref probe);
        Assert.Equal(typeof(KmallocAllocator), probe.Seen);
        Assert.Equal(0x5a, *(byte*)probe.Block);

        var kmallocHandles = new KmallocThreadHandles(system.Slab, handles);
        var viaHandle = new Probe();
        kmallocHandles.OnThisThread(ref viaHandle);
        Assert.Equal(typeof(KmallocHandleAllocator), viaHandle.Seen);
        Assert.Equal(1, handles.Taken);
        // A block from the handle goes back through the plain call, and the other way.
        kmalloc.Free(viaHandle.Block);
        var release = new Release(probe.Block);
        kmallocHandles.OnThisThread(ref release);
        Assert.Equal(2, handles.Taken);

        using var cache = system.Slab.CreateCache<Node>();
        var typed = new SlabCacheAllocator<Node>(cache);
        probe = new Probe();
        typed.OnThisThread(ref probe);
        Assert.Equal(typeof(SlabCacheAllocator<Node>), probe.Seen);
        viaHandle = new Probe();
        new SlabCacheThreadHandles<Node>(cache, handles).OnThisThread(ref viaHandle);
        Assert.Equal(typeof(SlabCacheHandleAllocator<Node>), viaHandle.Seen);
        Assert.Equal(3, handles.Taken);
        typed.Free(viaHandle.Block);
        typed.Free(probe.Block);

        probe = new Probe();
        new NativeMemoryAllocator().OnThisThread(ref probe);
        Assert.Equal(typeof(NativeMemoryAllocator), probe.Seen);
        new NativeMemoryAllocator().Free(probe.Block);

        system.Slab.ShrinkAll();
        Assert.Equal(0, cache.Cache.ActiveObjects);
    }
}

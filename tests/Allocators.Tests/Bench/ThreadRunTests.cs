using Allocators.Cli.Bench;
using Allocators.Physical;

namespace Allocators.Tests.Bench;

/// <summary>
/// <see cref="IBlockAllocator{TBlock}.OnThisThread"/>: Allocators' contenders run a thread's loop through the per-thread
/// handles (the API a program doing runs of operations on one thread uses), the others as they are; either way blocks
/// cross between the two kinds of call.
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
    public void AllocatorsRunThroughTheirThreadHandlesAndOthersAsTheyAre()
    {
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 32L << 20 } });
        var kmalloc = new KmallocAllocator(system.Slab);
        var probe = new Probe();
        kmalloc.OnThisThread(ref probe);
        Assert.Equal(typeof(KmallocHandleAllocator), probe.Seen);
        Assert.Equal(0x5a, *(byte*)probe.Block);
        kmalloc.Free(probe.Block); // a block from the handle goes back through the plain call, and the other way
        nint plain = kmalloc.Allocate(48);
        var release = new Release(plain);
        kmalloc.OnThisThread(ref release);

        using var cache = system.Slab.CreateCache<Node>();
        var typed = new SlabCacheAllocator<Node>(cache);
        probe = new Probe();
        typed.OnThisThread(ref probe);
        Assert.Equal(typeof(SlabCacheHandleAllocator<Node>), probe.Seen);
        typed.Free(probe.Block);

        probe = new Probe();
        new NativeMemoryAllocator().OnThisThread(ref probe);
        Assert.Equal(typeof(NativeMemoryAllocator), probe.Seen);
        new NativeMemoryAllocator().Free(probe.Block);

        system.Slab.ShrinkAll();
        Assert.Equal(0, cache.Cache.ActiveObjects);
    }
}

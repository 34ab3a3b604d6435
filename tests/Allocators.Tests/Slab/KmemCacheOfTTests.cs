using System.Runtime.CompilerServices;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>The typed face of a slab cache: <see cref="KmemCache{T}"/> with a struct, its ref helpers and a constructor.</summary>
public unsafe class KmemCacheOfTTests
{
    public struct Node
    {
        public long Key;
        public int Value;
        public short Flags;
        public byte Tag;
    }

    public struct Big
    {
        public fixed byte Bytes[300];
        public long Sum;
    }

    [Fact]
    public void TypedCacheHandsOutDistinctAlignedObjects()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        using (KmemCache<Node> cache = sys.Slab.CreateCache<Node>())
        {
            Assert.Equal(nameof(Node), cache.Cache.Name);
            Assert.Equal(sizeof(Node), cache.Cache.ObjectSize);
            var seen = new HashSet<nint>();
            var nodes = new List<nint>();
            for (int i = 0; i < 1000; i++)
            {
                Node* n = cache.Alloc();
                Assert.True((nuint)n % 8 == 0);
                Assert.True(seen.Add((nint)n));
                Assert.True(cache.Cache.Owns(n));
                *n = new Node { Key = i, Value = -i, Flags = (short)i, Tag = (byte)i };
                nodes.Add((nint)n);
            }
            for (int i = 0; i < nodes.Count; i++)
            {
                Node* n = (Node*)nodes[i];
                Assert.Equal(new Node { Key = i, Value = -i, Flags = (short)i, Tag = (byte)i }, *n);
                cache.Free(n);
            }
            Node* z = cache.Alloc(Gfp.Kernel | Gfp.Zero);
            Assert.Equal(default, *z);
            cache.Free(z);
        }
        Assert.DoesNotContain(sys.Slab.Caches, c => c.Name == nameof(Node));
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void RefHelpersRoundTrip()
    {
        using var sys = NewSystem();
        KmemCache<Big> cache = sys.Slab.CreateCache<Big>("big");
        ref Big a = ref cache.AllocRef();
        ref Big b = ref cache.AllocRef();
        Assert.False(Unsafe.AreSame(ref a, ref b));
        a.Bytes[299] = 1;
        a.Sum = 42;
        b.Sum = 7;
        Assert.Equal(42, ((Big*)Unsafe.AsPointer(ref a))->Sum);
        Assert.True(cache.Cache.Owns(Unsafe.AsPointer(ref a)));
        cache.FreeRef(ref a);
        Assert.Equal(7, b.Sum);
        cache.FreeRef(ref b);
        cache.Cache.Shrink();
        Assert.Equal(0, cache.Cache.ActiveObjects);

        Big onStack = default;
        Assert.ThrowsAny<MemoryCorruptionException>(() => cache.FreeRef(ref onStack));
        cache.Dispose();
    }

    [Fact]
    public void TypedDebugCacheStillDetectsMisuse()
    {
        using var sys = NewSystem();
        KmemCache<Node> cache = sys.Slab.CreateCache<Node>("node-debug", SlabFlags.Debug);
        Node* n = cache.Alloc();
        cache.Free(n);
        Assert.ThrowsAny<MemoryCorruptionException>(() => cache.Free(n));
        KmemCache<Node> other = sys.Slab.CreateCache<Node>("node-other");
        Node* m = other.Alloc();
        Assert.ThrowsAny<MemoryCorruptionException>(() => cache.Free(m));
        other.Free(m);
        Assert.Empty(cache.Cache.Validate());
    }

    [Fact]
    public void ConstructorRunsOncePerObjectWhenTheSlabIsMade()
    {
        using var sys = NewUncheckedSystem();
        int constructed = 0;
        KmemCache<Node> cache = sys.Slab.CreateCache<Node>("ctor-node", SlabFlags.None, obj =>
        {
            var n = (Node*)obj;
            n->Key = 0x1234_5678;
            n->Value = 99;
            n->Flags = 3;
            n->Tag = 0xab;
            constructed++;
        });
        var expected = new Node { Key = 0x1234_5678, Value = 99, Flags = 3, Tag = 0xab };

        var objects = new List<nint>();
        for (int i = 0; i < 500; i++)
        {
            Node* n = cache.Alloc();
            Assert.Equal(expected, *n);
            objects.Add((nint)n);
        }
        Assert.Equal(cache.Cache.Stats.SlabsAllocated * cache.Cache.ObjectsPerSlab, constructed);

        // Objects go back in their constructed state (the caller's duty) and come out constructed, without a new ctor call.
        int before = constructed;
        foreach (nint p in objects) cache.Free((Node*)p);
        objects.Clear();
        for (int i = 0; i < 500; i++)
        {
            ref Node r = ref cache.AllocRef();
            Assert.Equal(expected, r);
            objects.Add((nint)Unsafe.AsPointer(ref r));
        }
        Assert.Equal(before, constructed);

        // Once the slabs are given back, new slabs are constructed again.
        foreach (nint p in objects) cache.Free((Node*)p);
        cache.Cache.Shrink();
        Assert.Equal(0, cache.Cache.Stats.Slabs);
        Node* again = cache.Alloc();
        Assert.Equal(expected, *again);
        Assert.Equal(before + cache.Cache.ObjectsPerSlab, constructed);
        Assert.Equal(cache.Cache.Stats.SlabsAllocated * cache.Cache.ObjectsPerSlab, constructed);
        cache.Free(again);
    }

    [Fact]
    public void ConstructorWithDebugFlagsKeepsConstructedStateAndRedZones()
    {
        using var sys = NewUncheckedSystem();
        KmemCache cache = sys.Slab.CreateCache("ctor-debug", 40, 0, SlabFlags.Debug, obj =>
        {
            for (int i = 0; i < 40; i++) ((byte*)obj)[i] = (byte)(i + 1);
        });
        byte* p = (byte*)cache.Alloc();
        for (int i = 0; i < 40; i++) Assert.Equal((byte)(i + 1), p[i]);
        AssertBytes(p + 40, cache.InUseSize - 40, SlabPoison.RedActive, "right red zone");
        cache.Free(p);
        for (int i = 0; i < 40; i++) Assert.Equal((byte)(i + 1), p[i]); // a constructed cache is not poisoned
        AssertBytes(p + 40, cache.InUseSize - 40, SlabPoison.RedInactive, "right red zone of a free object");
        p[40] = 0;
        Assert.Single(cache.Validate(), r => r.Title == "BUG ctor-debug: Right Redzone overwritten");
        byte* q = (byte*)cache.Alloc();
        Assert.True(q == p);
        for (int i = 0; i < 40; i++) Assert.Equal((byte)(i + 1), q[i]);
        cache.Free(q);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Cli.Inspection;
using Allocators.Diagnostics;
using Allocators.Physical;
using Allocators.Slab;
using Xunit.Abstractions;

namespace Allocators.Tests.Cli;

/// <summary>This process's own memory as an inspection target (only valid addresses may be read).</summary>
internal sealed unsafe class SelfMemory : ITargetMemory
{
    public int Read(ulong address, Span<byte> buffer)
    {
        new ReadOnlySpan<byte>((void*)address, buffer.Length).CopyTo(buffer);
        return buffer.Length;
    }
}

/// <summary>
/// The inspector's decoding, run against this process's own metadata: it must print exactly what the library prints,
/// find the live StoreUser objects by site, refuse layouts it does not know and never follow a corrupt free pointer.
/// </summary>
[Trait("Category", "Inspect")]
public sealed unsafe class InProcessInspectorTests(ITestOutputHelper output)
{
    // Checked modes off whatever ALLOCATORS_CHECKS says: these tests free objects and expect them free in their slabs at
    // once (and one scribbles on freed objects), where KASAN would hold them in its quarantine and report the scribble.
    private static MemorySystem NewSystem() => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 32L << 20, Checks = CheckedModeOptions.Parse("") } });

    private static SystemReport InspectSelf(MemorySystem system, bool leaks)
    {
        var inspector = new SystemInspector(new TargetReader(new SelfMemory()));
        return Assert.Single(inspector.InspectAll((ulong)NativeRegistry.Root, leaks, system.Pages.Id));
    }

    [Fact]
    public void ReadsExactlyWhatTheLibraryPrints()
    {
        using var system = NewSystem();
        var kept = new List<nint>();
        for (int i = 0; i < 500; i++) kept.Add((nint)system.Slab.Kmalloc((nuint)(1 + i * 13 % 5000)));
        for (int i = 0; i < kept.Count; i += 2) system.Slab.Kfree((void*)kept[i]);
        var block = system.Pages.AllocPages(Allocators.PageAlloc.Gfp.Kernel, 4);
        var cache = system.Slab.CreateCache("inproc-tracked", 48, flags: SlabFlags.StoreUser | SlabFlags.RedZone);
        var objects = AllocA(cache, 70).Concat(AllocB(cache, 30)).ToList();
        for (int i = 0; i < 70; i += 7) cache.Free((void*)objects[i]);

        ulong area = VmallocSomething(system);
        nint percpu = system.Percpu.AllocPercpu(100);

        var report = InspectSelf(system, leaks: true);
        Assert.Equal(system.Vmalloc.VmallocInfo(), report.VmallocInfo);
        Assert.Contains("InProcessInspectorTests.VmallocSomething", report.VmallocInfo);
        Assert.Contains(report.Meminfo, i => i.Name == "Percpu" && i.Kb == system.Percpu.NrPages * 4 && i.Kb > 0);
        Assert.Equal(system.Pages.BuddyInfo(), report.BuddyInfo);
        Assert.Equal(system.Slab.SlabInfo(), report.SlabInfo);
        Assert.Equal(system.Meminfo(), report.MeminfoText);
        var leaks = Assert.Single(report.Leaks!);
        output.WriteLine(string.Join("\n", leaks.Sites.Select(s => $"{s.Count} {s.Site} {s.Threads} {s.Cpus}")));
        Assert.Equal("inproc-tracked", leaks.Cache);
        Assert.Equal(90, leaks.LiveObjects);
        Assert.Empty(leaks.Problems);
        Assert.Equal(60, Assert.Single(leaks.Sites, s => s.Site.StartsWith("InProcessInspectorTests.AllocA")).Count);
        Assert.Equal(30, Assert.Single(leaks.Sites, s => s.Site.StartsWith("InProcessInspectorTests.AllocB")).Count);
        Assert.Equal(30 * 48, leaks.Sites.Single(s => s.Site.StartsWith("InProcessInspectorTests.AllocB")).Bytes);

        foreach (nint p in objects.Where((_, i) => i >= 70 || i % 7 != 0)) cache.Free((void*)p);
        system.Pages.FreePages(block, 4);
        system.Vmalloc.Vfree(area);
        system.Percpu.FreePercpu(percpu);
        system.Vmalloc.PurgeVmapAreas();
        var after = InspectSelf(system, leaks: true);
        Assert.Equal(system.Vmalloc.VmallocInfo(), after.VmallocInfo);
        Assert.Equal(system.Meminfo(), after.MeminfoText);
        Assert.Empty(Assert.Single(InspectSelf(system, leaks: true).Leaks!).Sites);
    }

    [Fact]
    public void ObjectsInKasansQuarantineAreNeitherLiveNorLeaked()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32L << 20, Checks = new CheckedModeOptions { Kasan = true } },
        });
        var quarantine = system.Memory.Kasan!.Quarantine;
        var cache = system.Slab.CreateCache("inproc-kasan", 48, flags: SlabFlags.StoreUser);
        var objects = AllocA(cache, 40);
        for (int i = 0; i < 40; i += 4) cache.Free((void*)objects[i]);
        Assert.All(objects.Where((_, i) => i % 4 == 0), p => Assert.True(quarantine.Contains((void*)p)));
        Assert.Equal(40, cache.ActiveObjects); // still allocated in their slabs while they wait

        var leaks = Assert.Single(InspectSelf(system, leaks: true).Leaks!, l => l.Cache == "inproc-kasan");
        Assert.Empty(leaks.Problems);
        Assert.Equal(30, leaks.LiveObjects);
        Assert.Equal(10, leaks.QuarantinedObjects);
        Assert.Equal(30, Assert.Single(leaks.Sites).Count);

        // Given back to their slabs they are plain free objects; freed again into the quarantine, not live either.
        cache.Shrink();
        leaks = Assert.Single(InspectSelf(system, leaks: true).Leaks!, l => l.Cache == "inproc-kasan");
        Assert.Equal((30L, 0L), (leaks.LiveObjects, leaks.QuarantinedObjects));
        // Allocated again, their slots are live (a link left from their wait would hide them).
        var again = AllocB(cache, 10);
        Assert.NotEmpty(again.Intersect(objects));
        leaks = Assert.Single(InspectSelf(system, leaks: true).Leaks!, l => l.Cache == "inproc-kasan");
        Assert.Equal((40L, 0L), (leaks.LiveObjects, leaks.QuarantinedObjects));
        foreach (nint p in again) cache.Free((void*)p);
        cache.Shrink();
        foreach (nint p in objects.Where((_, i) => i % 4 != 0)) cache.Free((void*)p);
        leaks = Assert.Single(InspectSelf(system, leaks: true).Leaks!, l => l.Cache == "inproc-kasan");
        Assert.Equal((0L, 30L), (leaks.LiveObjects, leaks.QuarantinedObjects));
        Assert.Empty(leaks.Sites);
        cache.Shrink();
        cache.Destroy();
    }

    [Fact]
    public void ANameEndingJustBeforeAnUnmappedPageIsReadWithoutTouchingThatPage()
    {
        // A short heap block at the end of its mapping (a cache name near the top of a malloc arena): reading it in
        // fixed chunks ran into the next page, which a live target reports as a short read and this process faults on.
        var pages = (byte*)Allocators.Native.HostMemory.Reserve(2 * 4096, 4096);
        try
        {
            Allocators.Native.HostMemory.MapAnonymousFixed(pages, 2 * 4096);
            Allocators.Native.HostMemory.Protect(pages + 4096, 4096, Allocators.Native.Libc.ProtNone);
            "inproc-name\0"u8.CopyTo(new Span<byte>(pages + 4096 - 12, 12));
            Assert.Equal("inproc-name", new TargetReader(new SelfMemory()).ReadUtf8((ulong)(pages + 4096 - 12), 256));
        }
        finally
        {
            Allocators.Native.HostMemory.Release(pages, 2 * 4096);
        }
    }

    [Fact]
    public void StrayWritesIntoFreeObjectsDoNotMisleadTheWalk()
    {
        using var system = NewSystem();
        var cache = system.Slab.CreateCache("inproc-scribbled", 64, flags: SlabFlags.StoreUser);
        var objects = AllocA(cache, 20);
        cache.Free((void*)objects[5]);
        cache.Free((void*)objects[9]);
        // Free objects hold no metadata: what a stray write leaves there changes nothing the walk reports.
        for (int i = 0; i < 8; i++) ((ulong*)objects[9])[i] = 0xdead_beef_0000_1000;
        for (int i = 0; i < 8; i++) ((ulong*)objects[5])[i] = (ulong)objects[9];
        var leaks = Assert.Single(InspectSelf(system, leaks: true).Leaks!);
        Assert.Empty(leaks.Problems);
        Assert.Equal(18, leaks.LiveObjects);
    }

    [Fact]
    public void BitsPastTheLastObjectAreReported()
    {
        using var system = NewSystem();
        var cache = system.Slab.CreateCache("inproc-bits", 48, flags: SlabFlags.StoreUser);
        var objects = AllocA(cache, 3);
        var d = *cache.Data;
        var bitmap = new byte[d.Words * sizeof(ulong)];
        bitmap[0] = 0b101;
        var free = new bool[d.Objects];
        var problems = new List<string>();
        SystemInspector.DecodeBitmap(d, 0x1000, bitmap, free, problems);
        Assert.Empty(problems);
        Assert.True(free[0] && !free[1] && free[2]);
        int past = d.Objects;
        bitmap[past >> 3] |= (byte)(1 << (past & 7));
        SystemInspector.DecodeBitmap(d, 0x1000, bitmap, free, problems);
        Assert.Equal($"slab 0x1000: its free bitmap marks 1 objects past its last ({d.Objects} objects)", Assert.Single(problems));
        foreach (nint p in objects) cache.Free((void*)p);
    }

    [Fact]
    public void UnknownLayoutIsRefusedWithTheReason()
    {
        using var system = NewSystem();
        var root = (RegistryRoot*)NativeMemory.AllocZeroed((nuint)sizeof(RegistryRoot));
        var systems = (SystemDescriptor**)NativeMemory.AllocZeroed(1, (nuint)sizeof(nint));
        var d = (SystemDescriptor*)NativeMemory.AllocZeroed((nuint)sizeof(SystemDescriptor));
        try
        {
            var real = (RegistryRoot*)NativeRegistry.Root;
            SystemDescriptor* mine = null;
            for (int i = 0; i < real->Count; i++)
                if (real->Systems[i] != null && real->Systems[i]->Id == system.Pages.Id) mine = real->Systems[i];
            Assert.True(mine != null);
            *d = *mine;
            *root = *real;
            root->Count = root->Capacity = 1;
            root->Systems = systems;
            systems[0] = d;
            var inspector = new SystemInspector(new TargetReader(new SelfMemory()));

            d->PageFrameSize = 72;
            var e = Assert.Throws<TargetException>(() => inspector.InspectAll((ulong)root, leaks: false));
            output.WriteLine(e.Message);
            Assert.Contains("incompatible version", e.Message);
            Assert.Contains("PageFrame is 72 bytes in the target, 64 here", e.Message);

            d->PageFrameSize = sizeof(PageFrame);
            d->Version = 99;
            e = Assert.Throws<TargetException>(() => inspector.InspectAll((ulong)root, leaks: false));
            Assert.Contains("layout version 99", e.Message);

            root->Magic = 0x1234;
            e = Assert.Throws<TargetException>(() => inspector.InspectAll((ulong)root, leaks: false));
            Assert.Contains("not a compatible Allocators registry", e.Message);
        }
        finally
        {
            NativeMemory.Free(d);
            NativeMemory.Free(systems);
            NativeMemory.Free(root);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ulong VmallocSomething(MemorySystem system) => system.Vmalloc.Vmalloc(7 * 4096);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static List<nint> AllocA(KmemCache cache, int count)
    {
        var list = new List<nint>();
        for (int i = 0; i < count; i++) list.Add((nint)cache.Alloc());
        return list;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static List<nint> AllocB(KmemCache cache, int count)
    {
        var list = new List<nint>();
        for (int i = 0; i < count; i++) list.Add((nint)cache.Alloc());
        return list;
    }
}

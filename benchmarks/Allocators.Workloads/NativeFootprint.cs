using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Peers;

namespace Allocators.Workloads;

/// <summary>
/// What a native allocator holds for the program right now, in bytes, from its own statistics call: the counterpart of
/// Allocators' pages handed out by the page allocator (memory kept in size classes, thread caches and partly used
/// pages counts; for jemalloc and tcmalloc, free pages they keep for later or gave back to the OS do not).
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>glibc: <c>mallinfo2()</c>, <c>arena + hblkhd</c> (heap obtained from the OS over all arenas, plus mmapped
/// chunks): glibc has no separate count of whole free pages, so its free chunks and untrimmed top count too. The C heap
/// is the runtime's as well, so the runtime's own allocations during a run count.</item>
/// <item>jemalloc: <c>stats.active</c> after an <c>epoch</c> refresh (pages of active extents, thread caches included).</item>
/// <item>tcmalloc: <c>generic.heap_size - tcmalloc.pageheap_free_bytes - tcmalloc.pageheap_unmapped_bytes</c> (spans in use).</item>
/// <item>mimalloc: <c>current_commit</c> of <c>mi_process_info</c> (what it has committed), where its build keeps that
/// statistic; Debian's release build reports 0, and mimalloc then has no footprint.</item>
/// </list>
/// An allocator keeps its state for the life of the process, so a difference between two readings only means "what
/// this run needed" in a process that ran nothing else on that allocator before: the bench reads these only in
/// isolated runs (<c>bench --isolate</c>), each in a fresh process.
/// </remarks>
internal sealed unsafe class NativeFootprint
{
    private readonly string _name;
    private readonly nint _function;

    private NativeFootprint(string name, nint function)
    {
        _name = name;
        _function = function;
    }

    /// <summary>The probe of <paramref name="library"/>, or null when the library is absent or its call is missing or fails.</summary>
    public static NativeFootprint? For(NativeAllocatorLibrary library)
    {
        nint address = NativeTrim.NativeExport(library, library.Name switch
        {
            "glibc" => "mallinfo2",
            "mimalloc" => "mi_process_info",
            "jemalloc" => "mallctl",
            "tcmalloc" => "MallocExtension_GetNumericProperty",
            _ => "",
        });
        if (address == 0) return null;
        var probe = new NativeFootprint(library.Name, address);
        if (probe.Read() is not { } first) return null;
        probe.Baseline = first;
        return probe;
    }

    /// <summary>The first reading, taken when the probe was made: in an isolated child, before its one run started.</summary>
    public long Baseline { get; private set; }

    /// <summary>Bytes held now, or null when the call failed.</summary>
    public long? Read() => _name switch
    {
        "glibc" => Glibc(),
        "mimalloc" => Mimalloc(),
        "jemalloc" => Jemalloc(),
        "tcmalloc" => Tcmalloc(),
        _ => null,
    };

    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    private long? Glibc()
    {
        MallInfo2 info = ((delegate* unmanaged[Cdecl]<MallInfo2>)_function)();
        return (long)(info.Arena + info.Hblkhd);
    }

    /// <summary>
    /// glibc only: bytes of free chunks in its arenas (<c>fordblks</c>), which the reading counts already; a malloc
    /// served from them leaves the reading unchanged. Null for the other allocators.
    /// </summary>
    public long? FreeCounted()
        => _name == "glibc" ? (long)((delegate* unmanaged[Cdecl]<MallInfo2>)_function)().Fordblks : null;

    private long? Mimalloc()
    {
        nuint elapsed, user, system, rss, peakRss, commit, peakCommit, faults;
        ((delegate* unmanaged[Cdecl]<nuint*, nuint*, nuint*, nuint*, nuint*, nuint*, nuint*, nuint*, void>)_function)(
            &elapsed, &user, &system, &rss, &peakRss, &commit, &peakCommit, &faults);
        return commit > 0 ? (long)commit : null;
    }

    private long? Jemalloc()
    {
        var mallctl = (delegate* unmanaged[Cdecl]<byte*, void*, nuint*, void*, nuint, int>)_function;
        ulong epoch = 1;
        nuint active = 0, length = (nuint)sizeof(nuint);
        // The u8 literals are NUL-terminated in memory.
        fixed (byte* refresh = "epoch"u8)
        fixed (byte* name = "stats.active"u8)
        {
            if (mallctl(refresh, null, null, &epoch, sizeof(ulong)) != 0) return null;
            return mallctl(name, &active, &length, null, 0) == 0 ? (long)active : null;
        }
    }

    private long? Tcmalloc()
    {
        long? heap = TcmallocProperty("generic.heap_size"u8);
        long? free = TcmallocProperty("tcmalloc.pageheap_free_bytes"u8);
        long? unmapped = TcmallocProperty("tcmalloc.pageheap_unmapped_bytes"u8);
        return heap is { } h && free is { } f && unmapped is { } u ? h - f - u : null;
    }

    private long? TcmallocProperty(ReadOnlySpan<byte> property)
    {
        nuint value = 0;
        fixed (byte* name = property)
        {
            return ((delegate* unmanaged[Cdecl]<byte*, nuint*, int>)_function)(name, &value) != 0 ? (long)value : null;
        }
    }
}

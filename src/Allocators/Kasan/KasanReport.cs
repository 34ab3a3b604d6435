using Allocators.Common;

namespace Allocators.Kasan;

/// <summary>The shadow codes of generic KASAN (mm/kasan/kasan.h): what a poisoned granule is.</summary>
public static class KasanShadowCode
{
    /// <summary>A free page (KASAN_PAGE_FREE).</summary>
    public const byte PageFree = 0xFF;
    /// <summary>The tail of a large kmalloc's pages past the requested size (KASAN_PAGE_REDZONE).</summary>
    public const byte PageRedZone = 0xFE;
    /// <summary>A guard block after a block of pages (<c>CheckedModeOptions.KasanPageGuards</c>; this library's code, unused by the kernel).</summary>
    public const byte PageGuard = 0xFD;
    /// <summary>A slab red zone, or a slab object never allocated (KASAN_SLAB_REDZONE).</summary>
    public const byte SlabRedZone = 0xFC;
    /// <summary>A freed slab object (KASAN_SLAB_FREE).</summary>
    public const byte SlabFree = 0xFB;
    /// <summary>A freed slab object whose free track is kept (KASAN_SLAB_FREETRACK).</summary>
    public const byte SlabFreeTrack = 0xFA;
    /// <summary>Per-CPU space that is not part of a live allocation's size: free, freed, or past the end (this library's code, unused by the kernel).</summary>
    public const byte PercpuInvalid = 0xF9;
    /// <summary>vmalloc space that is not part of a live area's requested size (KASAN_VMALLOC_INVALID).</summary>
    public const byte VmallocInvalid = 0xF8;

    /// <summary>The kernel's bug type for an access that hit a granule with <paramref name="code"/>.</summary>
    public static string BugType(byte code) => code switch
    {
        PageFree => "use-after-free",
        PageRedZone or SlabRedZone => "slab-out-of-bounds",
        PageGuard => "page-out-of-bounds",
        SlabFree or SlabFreeTrack => "slab-use-after-free",
        VmallocInvalid => "vmalloc-out-of-bounds",
        PercpuInvalid => "percpu-out-of-bounds",
        _ => "out-of-bounds",
    };
}

/// <summary>One KASAN report: a bad access (or free) found through the shadow, in the kernel's words.</summary>
/// <param name="Type">The bug type: <c>slab-out-of-bounds</c>, <c>slab-use-after-free</c>, <c>use-after-free</c>, <c>double-free</c>, <c>invalid-free</c>, <c>vmalloc-out-of-bounds</c>, ...</param>
/// <param name="Address">The first bad byte (for a free: the pointer freed).</param>
/// <param name="Size">Bytes the access covered (0 for a free).</param>
/// <param name="IsWrite">True for a write access.</param>
/// <param name="Function">The library entry point that made the access (the kernel's function in the report's first line).</param>
/// <param name="Text">The whole report as the kernel prints it.</param>
public sealed record KasanReport(string Type, nuint Address, long Size, bool IsWrite, string Function, string Text);

/// <summary>
/// An access through the library hit poisoned shadow memory: the access was not performed. <see cref="Report"/> is the
/// KASAN report (kept in <see cref="KasanShadow.Reports"/> the first time this address was reported).
/// </summary>
public sealed class KasanException : MemoryCorruptionException
{
    /// <summary>Creates the exception for <paramref name="report"/>.</summary>
    public KasanException(KasanReport report) : base(FirstLine(report), report.Address) => Report = report;

    /// <summary>The report of the bad access.</summary>
    public KasanReport Report { get; }

    private static string FirstLine(KasanReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        return $"KASAN: {report.Type} in {report.Function}: {(report.IsWrite ? "write" : "read")} of size {report.Size} at addr 0x{report.Address:x}.";
    }
}

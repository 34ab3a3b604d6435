namespace Allocators.PageAlloc;

/// <summary>
/// Get-free-page flags: how an allocation may behave (zone, reserves, blocking, retries, zeroing).
/// Mirrors the kernel's <c>gfp_t</c>; the combinations callers normally use are named values
/// (<see cref="Kernel"/>, <see cref="Atomic"/>, <see cref="NoWait"/>, ...).
/// </summary>
[Flags]
public enum Gfp : uint
{
    /// <summary>No flag: a non-blocking allocation with no reserve access (like GFP_NOWAIT without kswapd).</summary>
    None = 0,

    /// <summary>Zone modifier: only the DMA zone (__GFP_DMA).</summary>
    Dma = 1u << 0,
    /// <summary>Zone modifier: DMA32 or lower (__GFP_DMA32).</summary>
    Dma32 = 1u << 1,
    /// <summary>Zone modifier: the allocation may come from high memory (__GFP_HIGHMEM); Normal here.</summary>
    HighMem = 1u << 2,
    /// <summary>Zone modifier: the page is movable (__GFP_MOVABLE).</summary>
    Movable = 1u << 3,

    /// <summary>May use part of the reserve below the min watermark (__GFP_HIGH).</summary>
    High = 1u << 4,
    /// <summary>May use every reserve, ignoring watermarks (__GFP_MEMALLOC); pages are marked pfmemalloc.</summary>
    MemAlloc = 1u << 5,
    /// <summary>Must not use the emergency reserve even when the caller would (__GFP_NOMEMALLOC).</summary>
    NoMemAlloc = 1u << 6,

    /// <summary>May sleep and reclaim directly (__GFP_DIRECT_RECLAIM).</summary>
    DirectReclaim = 1u << 7,
    /// <summary>May wake the background reclaimer (__GFP_KSWAPD_RECLAIM).</summary>
    KswapdReclaim = 1u << 8,
    /// <summary>Both reclaim flags (__GFP_RECLAIM).</summary>
    Reclaim = DirectReclaim | KswapdReclaim,
    /// <summary>Reclaim may start physical I/O (__GFP_IO).</summary>
    Io = 1u << 9,
    /// <summary>Reclaim may call into file systems (__GFP_FS).</summary>
    Fs = 1u << 10,

    /// <summary>Zero the memory (__GFP_ZERO).</summary>
    Zero = 1u << 11,
    /// <summary>
    /// Never fail; wait for memory or grow the arena (__GFP_NOFAIL). Needs <see cref="DirectReclaim"/> (refused
    /// otherwise). Once reclaim fails, orders up to 3 may take pages below the watermarks; a request still waiting is
    /// reported every <see cref="PageAllocatorOptions.StallWarningInterval"/>. Order &gt; 1 is not guaranteed.
    /// </summary>
    NoFail = 1u << 12,
    /// <summary>Fail fast: no waiting, no growth (__GFP_NORETRY).</summary>
    NoRetry = 1u << 13,
    /// <summary>Try hard but allow failure (__GFP_RETRY_MAYFAIL).</summary>
    RetryMayFail = 1u << 14,
    /// <summary>Do not report a failure (__GFP_NOWARN).</summary>
    NoWarn = 1u << 15,
    /// <summary>Make a compound page: head carries the order, tails point at the head (__GFP_COMP).</summary>
    Comp = 1u << 16,
    /// <summary>Only the requested node, no fallback to other nodes (__GFP_THISNODE).</summary>
    ThisNode = 1u << 17,
    /// <summary>Enforce the cpuset memory policy (__GFP_HARDWALL); accepted and recorded.</summary>
    HardWall = 1u << 18,
    /// <summary>Account to the memory cgroup (__GFP_ACCOUNT); accepted and recorded.</summary>
    Account = 1u << 19,

    /// <summary>GFP_ATOMIC: cannot sleep, may use part of the reserve.</summary>
    Atomic = High | KswapdReclaim,
    /// <summary>GFP_KERNEL: normal kernel allocation, may sleep.</summary>
    Kernel = Reclaim | Io | Fs,
    /// <summary>GFP_NOWAIT: cannot sleep, no reserve.</summary>
    NoWait = KswapdReclaim,
    /// <summary>GFP_NOIO: may sleep but must not start I/O.</summary>
    NoIo = Reclaim,
    /// <summary>GFP_NOFS: may sleep and do I/O but not call into file systems.</summary>
    NoFs = Reclaim | Io,
    /// <summary>GFP_USER: user-space allocation.</summary>
    User = Reclaim | Io | Fs | HardWall,
    /// <summary>GFP_HIGHUSER: user-space allocation that may come from high memory.</summary>
    HighUser = User | HighMem,
    /// <summary>GFP_HIGHUSER_MOVABLE.</summary>
    HighUserMovable = HighUser | Movable,
    /// <summary>GFP_DMA.</summary>
    KernelDma = Kernel | Dma,
    /// <summary>GFP_DMA32.</summary>
    KernelDma32 = Kernel | Dma32,
}

/// <summary>Helpers over <see cref="Gfp"/>.</summary>
public static class GfpExtensions
{
    /// <summary>The highest zone an allocation with these flags may use (gfp_zone).</summary>
    public static ZoneType HighestZone(this Gfp gfp)
        => (gfp & Gfp.Dma) != 0 ? ZoneType.Dma : (gfp & Gfp.Dma32) != 0 ? ZoneType.Dma32 : (gfp & Gfp.HighMem) != 0 ? ZoneType.HighMem : ZoneType.Normal;

    /// <summary>True when the caller may block (gfpflags_allow_blocking).</summary>
    public static bool AllowsBlocking(this Gfp gfp) => (gfp & Gfp.DirectReclaim) != 0;

    /// <summary>
    /// Rejects <see cref="Gfp.NoFail"/> without <see cref="Gfp.DirectReclaim"/>. A caller that may not block can neither
    /// reclaim nor wait, so nothing can keep the promise; the kernel WARNs and fails such a request, here the misuse is
    /// refused outright, before any state changes, so that it is found where it is written.
    /// </summary>
    internal static void ThrowIfNoFailCannotBlock(this Gfp gfp)
    {
        if ((gfp & (Gfp.NoFail | Gfp.DirectReclaim)) == Gfp.NoFail) Throw(gfp);

        static void Throw(Gfp gfp) => throw new ArgumentException(
            $"Gfp.NoFail needs Gfp.DirectReclaim, but mode:0x{(uint)gfp:x}({gfp.Describe()}) may not block: it could neither reclaim "
            + "nor wait for memory, so it cannot be promised success (the kernel refuses __GFP_NOFAIL without __GFP_DIRECT_RECLAIM). "
            + "Ask with Gfp.Kernel | Gfp.NoFail, or drop NoFail and handle failure.", nameof(gfp));
    }

    /// <summary>The flags in the kernel's <c>%pGg</c> style, e.g. <c>GFP_KERNEL|__GFP_ZERO</c>.</summary>
    public static string Describe(this Gfp gfp)
    {
        var parts = new List<string>();
        Gfp rest = gfp;
        foreach (var (value, name) in Named)
        {
            if (value != 0 && (rest & value) == value) { parts.Add(name); rest &= ~value; }
        }
        foreach (Gfp bit in Enum.GetValues<Gfp>())
        {
            if (bit != 0 && (uint.PopCount((uint)bit) == 1) && (rest & bit) != 0)
                parts.Add("__GFP_" + bit.ToString().ToUpperInvariant());
        }
        return parts.Count == 0 ? "0" : string.Join('|', parts);
    }

    private static readonly (Gfp Value, string Name)[] Named =
    [
        (Gfp.HighUserMovable, "GFP_HIGHUSER_MOVABLE"), (Gfp.HighUser, "GFP_HIGHUSER"), (Gfp.User, "GFP_USER"),
        (Gfp.Kernel, "GFP_KERNEL"), (Gfp.NoFs, "GFP_NOFS"), (Gfp.NoIo, "GFP_NOIO"), (Gfp.Atomic, "GFP_ATOMIC"),
        (Gfp.NoWait, "GFP_NOWAIT"),
    ];
}

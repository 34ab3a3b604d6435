namespace Allocators.Physical;

/// <summary>
/// The checked modes of a memory system: the kernel's hardening and bug-finding boot options, set once when the arena
/// is built and read by every layer above it. Each mode is off by default and costs nothing when off.
/// </summary>
/// <remarks>
/// The defaults come from the <c>ALLOCATORS_CHECKS</c> environment variable when it is set, like the kernel's command
/// line (or <c>MIMALLOC_*</c>/<c>MALLOC_CONF</c>): a comma-separated list of <c>init_on_alloc</c>, <c>init_on_free</c>,
/// <c>slab_freelist_random</c>, <c>page_alloc.shuffle</c>, <c>kasan</c>, <c>kasan.redzone=N</c>, <c>kasan.stacktrace=on|off</c>,
/// <c>kasan.quarantine=BYTES</c>, <c>kasan.page_guards</c>, <c>kfence.sample_interval=N</c>, <c>kfence.sample_rate=N</c> and
/// <c>kfence.num_objects=N</c>. Properties set in code override it (a KFENCE interval or rate set in code also replaces
/// the other one from the environment). An unknown or malformed entry throws when the options are built.
/// </remarks>
public sealed class CheckedModeOptions
{
    /// <summary>Largest red zone <see cref="KasanRedZone"/> accepts.</summary>
    public const int MaxRedZone = 4096;

    /// <summary>Zero every page and object when it is allocated (the kernel's <c>init_on_alloc=1</c>).</summary>
    public bool InitOnAlloc { get; init; }

    /// <summary>Zero every page and object when it is freed (the kernel's <c>init_on_free=1</c>).</summary>
    public bool InitOnFree { get; init; }

    /// <summary>Hand out the objects of a new slab in random order (<c>CONFIG_SLAB_FREELIST_RANDOM</c>).</summary>
    public bool SlabFreelistRandom { get; init; }

    /// <summary>Shuffle the buddy free lists so the next page is not predictable (<c>page_alloc.shuffle=1</c>).</summary>
    public bool ShufflePages { get; init; }

    /// <summary>
    /// Shadow-memory checking (generic KASAN): every access through the library is checked against one shadow byte per
    /// 8 bytes of the arena, and bad ones are reported in KASAN's format.
    /// </summary>
    public bool Kasan { get; init; }

    /// <summary>Red zone after every slab object and large kmalloc with <see cref="Kasan"/> on, in bytes: 32..4096, a multiple of 8. Default 32.</summary>
    public int KasanRedZone { get; init; }

    /// <summary>
    /// Record the allocation and free site of every object with <see cref="Kasan"/> on, for the reports (the kernel's
    /// <c>kasan.stacktrace</c>, on by default). Each record walks the managed stack, which dominates KASAN's cost;
    /// off, reports name the bad access's site only.
    /// </summary>
    public bool KasanStackTrace { get; init; }

    /// <summary>Bytes of freed memory held back from reuse with <see cref="Kasan"/> on (KASAN's quarantine); null: 1/32 of the arena.</summary>
    public long? QuarantineBytes { get; init; }

    /// <summary>
    /// With <see cref="Kasan"/> on, every page allocation below MAX_PAGE_ORDER takes a block of twice its size and keeps
    /// the upper half as a guard (<see cref="Allocators.Kasan.KasanShadowCode.PageGuard"/>) until the block is freed, so an access
    /// past the end of any block of pages is reported (<c>page-out-of-bounds</c>), whatever is allocated next to it.
    /// Generic KASAN gives pages no red zone; this is the buddy's guard pages (the kernel's <c>debug_guardpage_minorder</c>)
    /// placed after every block. It doubles the memory page allocations take. Entry <c>kasan.page_guards</c>.
    /// </summary>
    public bool KasanPageGuards { get; init; }

    /// <summary>
    /// Every this many milliseconds, the next slab or kmalloc allocation of at most a page goes between guard pages
    /// (KFENCE's <c>kfence.sample_interval</c>; the kernel's default is 100); 0 (default) never. Needs Linux.
    /// </summary>
    public int KfenceSampleInterval
    {
        get => _kfenceSampleInterval;
        init
        {
            // Either way of sampling set in code replaces the other one when that came from the environment.
            _kfenceSampleInterval = value;
            _kfenceIntervalInCode = true;
            if (value > 0 && !_kfenceRateInCode) _kfenceSampleRate = 0;
        }
    }

    /// <summary>
    /// One slab or kmalloc allocation of at most a page in about this many goes between guard pages (GWP-ASan's
    /// sample rate: each thread's entry for a cache counts its allocations down from a number drawn uniformly in
    /// 1..2N-1, so the mean gap is N and the next sample is not predictable; caches the per-thread fast paths do not
    /// serve, debug and KASAN ones, share one count per cache); 0 (default) never. An alternative to
    /// <see cref="KfenceSampleInterval"/> (set one of the two). Set in <see cref="EnvironmentVariable"/> when the process
    /// starts, the fast paths count inline (a decrement per allocation); set only in code, every allocation and free of
    /// a counted cache takes the hardened paths (a call each). The timed sampling costs nothing between samples. Entry <c>kfence.sample_rate</c>. Needs Linux.
    /// </summary>
    public int KfenceSampleRate
    {
        get => _kfenceSampleRate;
        init
        {
            _kfenceSampleRate = value;
            _kfenceRateInCode = true;
            if (value > 0 && !_kfenceIntervalInCode) _kfenceSampleInterval = 0;
        }
    }

    private int _kfenceSampleInterval, _kfenceSampleRate;
    private bool _kfenceIntervalInCode, _kfenceRateInCode;

    /// <summary>Objects in the guarded pool (<c>CONFIG_KFENCE_NUM_OBJECTS</c>), 1..511 (one max-order block). Default 255.</summary>
    public int KfenceObjects { get; init; }

    /// <summary>The name of the environment variable that sets the defaults.</summary>
    public const string EnvironmentVariable = "ALLOCATORS_CHECKS";

    private static readonly CheckedModeDefaults Environment = CheckedModeDefaults.Parse(System.Environment.GetEnvironmentVariable(EnvironmentVariable));

    /// <summary>
    /// True when the process started with <c>kfence.sample_rate</c> in <see cref="EnvironmentVariable"/> (a boot
    /// parameter): the slab fast paths then count KFENCE's samples inline. A static read-only field is .NET's static key:
    /// the JIT folds it, so without the boot parameter the fast paths carry no trace of the count, and systems given a
    /// rate in code count in the hardened paths instead.
    /// </summary>
    internal static readonly bool KfenceCountedAtBoot = Environment.KfenceSampleRate > 0;

    /// <summary>
    /// Options from a list in <see cref="EnvironmentVariable"/>'s syntax (e.g. <c>"kasan,init_on_free"</c>), every mode
    /// not named off whatever the environment says.
    /// </summary>
    /// <exception cref="ArgumentException">An entry is unknown or its value malformed.</exception>
    public static CheckedModeOptions Parse(string text) => new(CheckedModeDefaults.Parse(text));

    /// <summary>Every mode as <see cref="EnvironmentVariable"/> says, off when it is not set.</summary>
    public CheckedModeOptions() : this(Environment) { }

    private CheckedModeOptions(CheckedModeDefaults d)
    {
        InitOnAlloc = d.InitOnAlloc;
        InitOnFree = d.InitOnFree;
        SlabFreelistRandom = d.SlabFreelistRandom;
        ShufflePages = d.ShufflePages;
        Kasan = d.Kasan;
        KasanRedZone = d.KasanRedZone;
        KasanStackTrace = d.KasanStackTrace;
        QuarantineBytes = d.QuarantineBytes;
        KasanPageGuards = d.KasanPageGuards;
        _kfenceSampleInterval = d.KfenceSampleInterval;
        _kfenceSampleRate = d.KfenceSampleRate;
        KfenceObjects = d.KfenceObjects;
    }

    /// <summary>True when any mode is on.</summary>
    public bool Any => InitOnAlloc || InitOnFree || SlabFreelistRandom || ShufflePages || Kasan || Kfence;

    /// <summary>True when KFENCE samples allocations, by time or by count.</summary>
    public bool Kfence => KfenceSampleInterval > 0 || KfenceSampleRate > 0;

    internal void Validate()
    {
        if (KasanRedZone < 32 || KasanRedZone > MaxRedZone || KasanRedZone % 8 != 0)
            throw new ArgumentException($"KasanRedZone must be a multiple of 8 in 32..{MaxRedZone}, was {KasanRedZone}.", nameof(KasanRedZone));
        if (QuarantineBytes is { } q && q < 0)
            throw new ArgumentException($"QuarantineBytes must not be negative, was {q}.", nameof(QuarantineBytes));
        if (KasanPageGuards && !Kasan)
            throw new ArgumentException("KasanPageGuards needs Kasan: the guards are shadow poison.", nameof(KasanPageGuards));
        if (KfenceSampleInterval < 0)
            throw new ArgumentException($"KfenceSampleInterval must not be negative, was {KfenceSampleInterval}.", nameof(KfenceSampleInterval));
        if (KfenceSampleRate < 0)
            throw new ArgumentException($"KfenceSampleRate must not be negative, was {KfenceSampleRate}.", nameof(KfenceSampleRate));
        if (KfenceSampleInterval > 0 && KfenceSampleRate > 0)
            throw new ArgumentException("KfenceSampleInterval and KfenceSampleRate are two ways to sample: set one of them.", nameof(KfenceSampleRate));
        if (KfenceObjects is < 1 or > 511)
            throw new ArgumentException($"KfenceObjects must be 1..511, was {KfenceObjects}.", nameof(KfenceObjects));
        if (Kfence && !OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("KFENCE (KfenceSampleInterval, KfenceSampleRate) needs Linux: its guard pages are mprotect-ed arena pages.");
    }
}

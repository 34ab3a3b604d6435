using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Peers;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Workloads;

/// <summary>
/// One allocator the suite compares. Opening a session prepares it for one run (Allocators builds a fresh memory
/// system); the session runs a workload with the allocator's struct, so the workload's loops are specialised for it.
/// </summary>
internal abstract class AllocatorUnderTest
{
    /// <summary>
    /// True in a child process that runs one measurement and nothing else, so native allocators' statistics are read
    /// for the footprint column (see <see cref="NativeFootprint"/>).
    /// </summary>
    public static bool InFreshProcess { get; set; }

    /// <summary>Short name (table row).</summary>
    public abstract string Name { get; }

    /// <summary>What it is and how it is called.</summary>
    public abstract string Description { get; }

    /// <summary>False when the allocator cannot run here (see <see cref="Status"/>).</summary>
    public virtual bool IsAvailable => true;

    /// <summary>"available", or why it is skipped.</summary>
    public virtual string Status => "available";

    /// <summary>True when this allocator can run <paramref name="workload"/>.</summary>
    public virtual bool Supports(Workload workload) => true;

    /// <summary>True for a variant that runs only when named with <c>--allocator</c>, never in the default set.</summary>
    public virtual bool OnlyOnRequest => false;

    /// <summary>True for an extra row that runs in <c>--full</c> and when named, but not in the default quick set.</summary>
    public virtual bool OnlyInFull => false;

    /// <summary>Prepares one run.</summary>
    public abstract AllocatorSession Open();

    /// <summary>Gives cached free memory back to the OS where the allocator has a call for it (between runs).</summary>
    public virtual void Trim() { }

    /// <summary>Every allocator the suite knows, available or not, in table order.</summary>
    public static IReadOnlyList<AllocatorUnderTest> All { get; } =
    [
        new AllocatorsKmalloc(),
        new AllocatorsTypedCache(),
        new AllocatorsKmallocHandle(),
        new AllocatorsTypedCacheHandle(),
        new AllocatorsKmallocFine(),
        new NativeLibraryUnderTest(() => NativeAllocators.Glibc, "glibc malloc/free through SuppressGCTransition function pointers (the baseline)"),
        new NativeMemoryUnderTest(),
        new NativeLibraryUnderTest(() => NativeAllocators.Mimalloc, "mimalloc mi_malloc/mi_free through SuppressGCTransition function pointers"),
        new NativeLibraryUnderTest(() => NativeAllocators.Jemalloc, "jemalloc malloc/free through SuppressGCTransition function pointers"),
        new NativeLibraryUnderTest(() => NativeAllocators.Tcmalloc, "gperftools tcmalloc tc_malloc/tc_free through SuppressGCTransition function pointers"),
        new ArrayPoolUnderTest(),
        new GcUnderTest(),
        new PrivateReferenceUnderTest(),
    ];

    /// <summary>
    /// What runs in <paramref name="scale"/> when no allocator is named: every one but the <see cref="OnlyOnRequest"/>
    /// variants, and the <see cref="OnlyInFull"/> ones only when the scale runs the published parameters.
    /// </summary>
    public static IReadOnlyList<AllocatorUnderTest> DefaultSet(BenchScale scale)
        => [.. All.Where(a => !a.OnlyOnRequest && (!a.OnlyInFull || scale.IsPublished))];

    /// <summary>The name of the baseline allocator that ratios are computed against.</summary>
    public const string BaselineName = "glibc";
}

/// <summary>One run's use of an allocator.</summary>
internal abstract class AllocatorSession : IDisposable
{
    /// <summary>The allocator's own footprint in bytes right now (pages in use), or null when it cannot say.</summary>
    public virtual long? Footprint() => null;

    /// <summary>Runs the workload.</summary>
    public abstract WorkloadOutcome Run(Workload workload, RunContext context);

    /// <summary>Checks after the run that the allocator got every byte back (no lost objects).</summary>
    public virtual void Verify(WorkloadOutcome outcome) { }

    /// <summary>Per-thread handles the runs took: only Allocators' handle variants take any.</summary>
    public virtual long ThreadHandlesTaken => 0;

    /// <inheritdoc/>
    public virtual void Dispose() { }
}

/// <summary>Allocators' kmalloc on a fresh 1 GiB memory system per run.</summary>
internal class AllocatorsKmalloc : AllocatorUnderTest
{
    /// <summary>Arena size of the bench memory system (untouched pages are never committed).</summary>
    public const long ArenaBytes = 1L << 30;

    /// <inheritdoc/>
    public override string Name => "allocators";

    /// <inheritdoc/>
    public override string Description => "Allocators Slab.Kmalloc/Kfree, the plain calls (slab caches kmalloc-16..32k, larger from the buddy allocator), 1 GiB arena";

    /// <inheritdoc/>
    public override AllocatorSession Open() => new Session(this);

    /// <summary>The slab layer's options of the bench memory system.</summary>
    protected virtual SlabAllocatorOptions SlabOptions => new();

    /// <summary>True for the variants whose threads run through their per-thread handles instead of the plain calls.</summary>
    protected virtual bool ThroughHandles => false;

    /// <summary>Runs the workload on the given system; <paramref name="handles"/> is null for the plain calls.</summary>
    protected virtual WorkloadOutcome RunOn(MemorySystem system, Workload workload, RunContext context, ThreadHandleCount? handles)
        => handles is null
            ? workload.Run<KmallocAllocator, nint>(new KmallocAllocator(system.Slab), context)
            : workload.Run<KmallocThreadHandles, nint>(new KmallocThreadHandles(system.Slab, handles), context);

    /// <summary>Pages handed out by the page allocator (slabs and large kmallocs), per-thread page lists excluded.</summary>
    public static long PagesInUse(MemorySystem system)
        => system.Pages.ManagedPages - system.Pages.NrFreePages - system.Pages.PcpPages;

    private sealed class Session : AllocatorSession
    {
        private readonly AllocatorsKmalloc _owner;
        private readonly MemorySystem _system;
        private readonly long _baseline;
        private readonly ThreadHandleCount? _handles;

        public Session(AllocatorsKmalloc owner)
        {
            _owner = owner;
            _handles = owner.ThroughHandles ? new ThreadHandleCount() : null;
            _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = ArenaBytes }, Slab = owner.SlabOptions });
            _baseline = PagesInUse(_system);
        }

        public override long? Footprint() => (PagesInUse(_system) - _baseline) * PageFrame.PageSize;

        public override WorkloadOutcome Run(Workload workload, RunContext context) => _owner.RunOn(_system, workload, context, _handles);

        public override long ThreadHandlesTaken => _handles?.Taken ?? 0;

        public override void Verify(WorkloadOutcome outcome)
        {
            _system.Slab.ShrinkAll();
            long objects = 0;
            foreach (var cache in _system.Slab.Caches) objects += cache.ActiveObjects;
            if (objects != 0) outcome.Fail($"{objects} slab objects still allocated after the workload freed everything");
            _system.Pages.DrainAllPages();
            long pages = PagesInUse(_system) - _baseline;
            if (pages != 0) outcome.Fail($"{pages} pages still in use after the workload freed everything and the caches were shrunk");
        }

        public override void Dispose() => _system.Dispose();
    }
}

/// <summary>Allocators' kmalloc with four size classes per power of two (<see cref="KmallocSizeClasses.Fine"/>); only on request.</summary>
internal sealed class AllocatorsKmallocFine : AllocatorsKmalloc
{
    /// <inheritdoc/>
    public override string Name => "allocators-fine";

    /// <inheritdoc/>
    public override string Description => "Allocators kmalloc/kfree with KmallocSizeClasses.Fine (33 caches, four per power of two), 1 GiB arena";

    /// <inheritdoc/>
    public override bool OnlyOnRequest => true;

    /// <inheritdoc/>
    protected override SlabAllocatorOptions SlabOptions => new() { KmallocSizeClasses = KmallocSizeClasses.Fine };
}

/// <summary>Allocators' typed slab cache (<c>KmemCache&lt;T&gt;</c>) for workloads whose blocks all have one size.</summary>
internal class AllocatorsTypedCache : AllocatorsKmalloc
{
    /// <inheritdoc/>
    public override string Name => "allocators-cache";

    /// <inheritdoc/>
    public override string Description => "Allocators typed slab cache KmemCache<T>, the plain Alloc/Free (workloads with one object size)";

    /// <inheritdoc/>
    public override bool Supports(Workload workload) => workload.HasTypedCache;

    /// <inheritdoc/>
    protected override WorkloadOutcome RunOn(MemorySystem system, Workload workload, RunContext context, ThreadHandleCount? handles)
        => workload.RunOnTypedCache(system.Slab, context, handles) ?? throw new NotSupportedException($"{workload.Name} has no single object size");
}

/// <summary>Allocators' kmalloc through each thread's handle: an extra row beside the plain calls.</summary>
internal sealed class AllocatorsKmallocHandle : AllocatorsKmalloc
{
    /// <inheritdoc/>
    public override string Name => "allocators-handle";

    /// <inheritdoc/>
    public override string Description => "extra (--full, or -a): Allocators kmalloc/kfree through each thread's handle, Slab.ThisThread(), taken once per thread's run";

    /// <inheritdoc/>
    public override bool OnlyInFull => true;

    /// <inheritdoc/>
    protected override bool ThroughHandles => true;
}

/// <summary>Allocators' typed slab cache through each thread's handle: an extra row beside the plain calls.</summary>
internal sealed class AllocatorsTypedCacheHandle : AllocatorsTypedCache
{
    /// <inheritdoc/>
    public override string Name => "allocators-cache-handle";

    /// <inheritdoc/>
    public override string Description => "extra (--full, or -a): Allocators typed slab cache through each thread's handle, KmemCache<T>.ThisThread(), taken once per thread's run";

    /// <inheritdoc/>
    public override bool OnlyInFull => true;

    /// <inheritdoc/>
    protected override bool ThroughHandles => true;
}

/// <summary>A native allocator library (glibc, mimalloc, jemalloc, tcmalloc) through its function pointers.</summary>
internal sealed unsafe class NativeLibraryUnderTest(Func<NativeAllocatorLibrary> library, string description) : AllocatorUnderTest
{
    private readonly Lazy<NativeAllocatorLibrary> _library = new(library);
    private readonly Lazy<nint> _trim = new(() => NativeTrim.Resolve(library()));
    private readonly Lazy<NativeFootprint?> _footprint = new(() => NativeFootprint.For(library()));

    /// <summary>The library.</summary>
    public NativeAllocatorLibrary Library => _library.Value;

    /// <inheritdoc/>
    public override string Name => Library.Name;

    /// <inheritdoc/>
    public override string Description => description;

    /// <inheritdoc/>
    public override bool IsAvailable => Library.IsAvailable;

    /// <inheritdoc/>
    public override string Status => Library.IsAvailable ? Library.Status : "skipped: " + Library.Status;

    /// <inheritdoc/>
    public override AllocatorSession Open() => new Session(Library, InFreshProcess ? _footprint.Value : null);

    /// <inheritdoc/>
    public override void Trim()
    {
        if (IsAvailable) NativeTrim.Invoke(Library.Name, _trim.Value);
    }

    private sealed class Session(NativeAllocatorLibrary library, NativeFootprint? footprint) : NativeFootprintSession(footprint)
    {
        public override WorkloadOutcome Run(Workload workload, RunContext context)
            => workload.Run<NativeLibraryAllocator, nint>(new NativeLibraryAllocator(library), context);
    }
}

/// <summary>
/// A session whose footprint is what a native allocator's statistics say it holds beyond what it held when the process
/// first opened it (<see cref="NativeFootprint.Baseline"/>). The statistics calls take the allocator's locks (glibc
/// walks every arena's bins), so they are made every 20 ms at most, not at every 2 ms sample.
/// </summary>
internal abstract class NativeFootprintSession(NativeFootprint? footprint) : AllocatorSession
{
    private const long ReadIntervalMs = 20;
    private long _lastReadAt;
    private long? _last;

    /// <inheritdoc/>
    public override long? Footprint()
    {
        if (footprint is null) return null;
        long now = Environment.TickCount64;
        if (_last is null || now - _lastReadAt >= ReadIntervalMs)
        {
            _last = footprint.Read() - footprint.Baseline;
            _lastReadAt = now;
        }
        return _last;
    }
}

/// <summary>NativeMemory.Alloc/Free.</summary>
internal sealed class NativeMemoryUnderTest : AllocatorUnderTest
{
    /// <inheritdoc/>
    public override string Name => "NativeMemory";

    /// <inheritdoc/>
    public override string Description => "System.Runtime.InteropServices.NativeMemory.Alloc/Free (the runtime's path to the C heap)";

    /// <inheritdoc/>
    public override AllocatorSession Open() => new Session(InFreshProcess ? s_cHeap.Value : null);

    // NativeMemory.Alloc is the C runtime's malloc: glibc's statistics cover it.
    private static readonly Lazy<NativeFootprint?> s_cHeap = new(() => NativeFootprint.For(NativeAllocators.Glibc));

    private sealed class Session(NativeFootprint? footprint) : NativeFootprintSession(footprint)
    {
        public override WorkloadOutcome Run(Workload workload, RunContext context)
            => workload.Run<NativeMemoryAllocator, nint>(default, context);
    }
}

/// <summary>ArrayPool&lt;byte&gt;.Shared rent/return.</summary>
internal sealed class ArrayPoolUnderTest : AllocatorUnderTest
{
    /// <inheritdoc/>
    public override string Name => "ArrayPool";

    /// <inheritdoc/>
    public override string Description => "ArrayPool<byte>.Shared Rent/Return (byte arrays; only where blocks hold no pointers)";

    /// <inheritdoc/>
    public override bool Supports(Workload workload) => workload.SupportsArrayPool;

    /// <inheritdoc/>
    public override AllocatorSession Open() => new Session();

    private sealed class Session : AllocatorSession
    {
        public override WorkloadOutcome Run(Workload workload, RunContext context)
            => workload.Run<ArrayPoolAllocator, byte[]>(default, context);
    }
}

/// <summary>The garbage collector.</summary>
internal sealed class GcUnderTest : AllocatorUnderTest
{
    /// <inheritdoc/>
    public override string Name => "GC";

    /// <inheritdoc/>
    public override string Description => "the .NET GC: new (uninitialised) byte arrays, or class nodes in binary-trees; free = drop the reference";

    /// <inheritdoc/>
    public override AllocatorSession Open() => new Session();

    private sealed class Session : AllocatorSession
    {
        public override WorkloadOutcome Run(Workload workload, RunContext context)
            => workload.Run<GcAllocator, byte[]>(default, context);
    }
}

/// <summary>The false-sharing reference: every thread uses its own private cache lines; no allocator at all.</summary>
internal sealed class PrivateReferenceUnderTest : AllocatorUnderTest
{
    /// <inheritdoc/>
    public override string Name => "private";

    /// <inheritdoc/>
    public override string Description => "reference for cache-scratch/cache-thrash: each thread writes its own private cache line (no allocator, no false sharing)";

    /// <inheritdoc/>
    public override bool Supports(Workload workload) => workload.HasPrivateReference;

    /// <inheritdoc/>
    public override AllocatorSession Open() => new Session();

    private sealed class Session : AllocatorSession
    {
        public override WorkloadOutcome Run(Workload workload, RunContext context)
            => workload.Run<PrivateLineAllocator, nint>(default, context);
    }
}

/// <summary>Each native allocator's call that hands cached free memory back to the OS, resolved from its library.</summary>
internal static unsafe class NativeTrim
{
    /// <summary>The trim entry point of <paramref name="library"/>, or 0.</summary>
    public static nint Resolve(NativeAllocatorLibrary library) => NativeExport(library, library.Name switch
    {
        "glibc" => "malloc_trim",
        "mimalloc" => "mi_collect",
        "jemalloc" => "mallctl",
        "tcmalloc" => "MallocExtension_ReleaseFreeMemory",
        _ => "",
    });

    /// <summary>The address of <paramref name="symbol"/> in the loaded <paramref name="library"/>, or 0 when either is missing.</summary>
    public static nint NativeExport(NativeAllocatorLibrary library, string symbol)
        => symbol.Length > 0 && library.IsAvailable && library.LibraryPath is not null
           && NativeLibrary.TryLoad(library.LibraryPath, out nint handle) && NativeLibrary.TryGetExport(handle, symbol, out nint address)
            ? address
            : 0;

    /// <summary>Calls a resolved trim entry point with the arguments its library expects.</summary>
    public static void Invoke(string name, nint function)
    {
        if (function == 0) return;
        switch (name)
        {
            case "glibc":
                ((delegate* unmanaged[Cdecl]<nuint, int>)function)(0);
                break;
            case "mimalloc":
                ((delegate* unmanaged[Cdecl]<byte, void>)function)(1);
                break;
            case "tcmalloc":
                ((delegate* unmanaged[Cdecl]<void>)function)();
                break;
            case "jemalloc":
                // MALLCTL_ARENAS_ALL is 4096: purge unused dirty pages of every arena.
                byte* command = stackalloc byte[] { (byte)'a', (byte)'r', (byte)'e', (byte)'n', (byte)'a', (byte)'.', (byte)'4', (byte)'0', (byte)'9', (byte)'6', (byte)'.', (byte)'p', (byte)'u', (byte)'r', (byte)'g', (byte)'e', 0 };
                ((delegate* unmanaged[Cdecl]<byte*, void*, nuint*, void*, nuint, int>)function)(command, null, null, null, 0);
                break;
        }
    }
}

using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.Filemap;
using Allocators.Mmu;
using Allocators.Vmalloc;
using Allocators.PageAlloc;
using Allocators.Reclaim;
using Allocators.Percpu;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators;

/// <summary>Configuration of a whole <see cref="MemorySystem"/>.</summary>
public sealed class MemorySystemOptions
{
    /// <summary>The arena and its NUMA/zone layout.</summary>
    public PhysicalMemoryOptions Physical { get; init; } = new();

    /// <summary>Page allocator tunables.</summary>
    public PageAllocatorOptions PageAllocator { get; init; } = new();

    /// <summary>Slab layer tunables.</summary>
    public SlabAllocatorOptions Slab { get; init; } = new();

    /// <summary>Page cache tunables: readahead window, dirty limits and flusher timing.</summary>
    public PageCacheOptions PageCache { get; init; } = new();

    /// <summary>Give cached and free memory back after this long without page activity; null (default) never.</summary>
    public TimeSpan? IdleTrimAfter { get; init; }

    /// <summary>
    /// Checks every layer's options without building anything (the <see cref="MemorySystem"/> constructor runs the same
    /// checks first).
    /// </summary>
    /// <exception cref="ArgumentException">A value is out of range; <see cref="ArgumentException.ParamName"/> names the property.</exception>
    /// <exception cref="PlatformNotSupportedException">The backing needs another operating system.</exception>
    public void Validate()
    {
        Physical.Validate();
        PageAllocator.Validate();
        Slab.Validate();
        PageCache.Validate();
        if (IdleTrimAfter is { } idle && idle <= TimeSpan.Zero)
            throw new ArgumentException($"IdleTrimAfter must be positive, was {idle}.", nameof(IdleTrimAfter));
    }
}

/// <summary>
/// One memory system: owns the arena and composes the allocators built on it. It is the top of the library's layer
/// stack (docs/architecture.md; the layering tests check it): every layer below is usable on its own through its own
/// type and never refers to this class. Locks: <c>_lazyLock</c> guards building the kernel address space and vmalloc
/// once, outermost in docs/locking.md.
/// </summary>
public sealed unsafe class MemorySystem : IDisposable
{
    /// <summary>Builds the default system (256 MiB NativeMemory arena, one node) or the one described.</summary>
    public MemorySystem(MemorySystemOptions? options = null)
    {
        Options = options ?? new MemorySystemOptions();
        Options.Validate();
        Memory = new PhysicalMemory(Options.Physical);
        try
        {
            Pages = new PageAllocator(Memory, Options.PageAllocator);
            Slab = new SlabAllocator(Pages, Options.Slab);
            Percpu = new PercpuAllocator(Pages);
            if (Options.IdleTrimAfter is { } idle) Trimmer = new IdleTrimmer(Pages, Slab, idle);
        }
        catch
        {
            Percpu?.Dispose();
            Slab?.Dispose();
            Pages?.Dispose();
            Memory.Dispose();
            throw;
        }
        MemorySystemRegistry.Add(this);
        _descriptor = NativeRegistry.Register(Memory, Pages, Slab, Percpu);
    }

    private readonly unsafe SystemDescriptor* _descriptor;

    /// <summary>The options the system was built with.</summary>
    public MemorySystemOptions Options { get; }

    /// <summary>The physical arena.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>The buddy page allocator.</summary>
    public PageAllocator Pages { get; }

    /// <summary>The slab layer: kmem caches and kmalloc.</summary>
    public SlabAllocator Slab { get; }

    /// <summary>The RCU domain of this system's readers and deferred frees (the page allocator's).</summary>
    public Rcu.RcuDomain Rcu => Pages.Rcu;

    /// <summary>The per-CPU allocator: variables with one copy per possible CPU.</summary>
    public PercpuAllocator Percpu { get; }

    private KernelAddressSpace? _kernel;
    private VmallocAllocator? _vmalloc;
    private PageCache? _pageCache;
    private readonly Lock _lazyLock = new();

    /// <summary>
    /// The kernel address space (kernel page tables, vmalloc's mappings); process address spaces are created on it.
    /// Built on first use, so a system that never maps memory spends no page on tables.
    /// </summary>
    public KernelAddressSpace Kernel
    {
        get
        {
            if (_kernel != null) return _kernel;
            lock (_lazyLock)
            {
                ObjectDisposedException.ThrowIf(IsDisposed, this);
                return _kernel ??= new KernelAddressSpace(Pages);
            }
        }
    }

    /// <summary>vmalloc: virtually contiguous memory from scattered pages. Built on first use.</summary>
    public VmallocAllocator Vmalloc
    {
        get
        {
            if (_vmalloc != null) return _vmalloc;
            KernelAddressSpace kernel = Kernel;
            lock (_lazyLock)
            {
                ObjectDisposedException.ThrowIf(IsDisposed, this);
                if (_vmalloc == null)
                {
                    _vmalloc = new VmallocAllocator(kernel, Slab);
                    _descriptor->Vmalloc = (nint)_vmalloc.NativeStats;
                }
                return _vmalloc;
            }
        }
    }

    /// <summary>
    /// The page cache: files opened through it are read, written and mapped through pages of this arena and written
    /// back by its flusher thread. Built on first use.
    /// </summary>
    public PageCache PageCache
    {
        get
        {
            if (_pageCache != null) return _pageCache;
            lock (_lazyLock)
            {
                ObjectDisposedException.ThrowIf(IsDisposed, this);
                if (_pageCache != null) return _pageCache;
                var cache = new PageCache(Pages, Options.PageCache);
                var vmscan = (Reclaim.Vmscan)Pages.GetOrCreateReclaimer(() => new Reclaim.Vmscan(Pages));
                vmscan.SetFileOwner(cache.AttachToReclaim());
                return _pageCache = cache;
            }
        }
    }

    /// <summary>True once <see cref="Kernel"/> has been built.</summary>
    public bool HasKernel => _kernel != null;

    /// <summary>True once <see cref="PageCache"/> has been built.</summary>
    public bool HasPageCache => _pageCache != null;

    /// <summary>True once <see cref="Vmalloc"/> has been built.</summary>
    public bool HasVmalloc => _vmalloc != null;

    /// <summary>
    /// swapon(2): adds the swap file at <paramref name="path"/> (made with <see cref="Swap.SwapDevice.Mkswap"/>) so
    /// that reclaim can swap anonymous memory out to it; <paramref name="priority"/> -1 puts it below every device
    /// added before.
    /// </summary>
    public Swap.SwapDevice Swapon(string path, int priority = -1) => Kernel.Swapon(path, priority);

    /// <summary>swapoff(2): brings everything on the swap file at <paramref name="path"/> back into memory and removes it.</summary>
    public void Swapoff(string path) => Kernel.Swapoff(path);

    /// <summary>
    /// Proactive reclaim (cgroup v2's memory.reclaim): frees up to <paramref name="pages"/> cold pages now, as if memory
    /// had run short — file pages (written back first when dirty) and, with a swap device, anonymous pages. Returns the
    /// pages freed.
    /// </summary>
    public long Reclaim(long pages) => Kernel.Reclaim(pages);

    /// <summary>The swap devices in the layout of /proc/swaps.</summary>
    public string ProcSwaps() => Kernel.ProcSwaps();

    /// <summary>Creates a process address space (mm_struct) that shares this system's kernel half.</summary>
    public AddressSpace CreateAddressSpace() => new(Kernel);

    /// <summary>The idle trimmer, when <see cref="MemorySystemOptions.IdleTrimAfter"/> is set.</summary>
    public IdleTrimmer? Trimmer { get; }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Releases every layer and the arena.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        MemorySystemRegistry.Remove(this);
        unsafe { NativeRegistry.Unregister(_descriptor); }
        Trimmer?.Dispose();
        lock (_lazyLock)
        {
            if (_pageCache != null && Pages.Reclaimer is Reclaim.Vmscan vmscan) vmscan.RemoveOwner(_pageCache.LruOwner);
            _pageCache?.Dispose();
            _vmalloc?.Dispose();
            _kernel?.Dispose();
        }
        Percpu.Dispose();
        Slab.Dispose();
        Pages.Dispose();
        Memory.Dispose();
    }

    /// <summary>The system's memory summary in the layout of /proc/meminfo (<c>%-16s%8lu kB</c> lines).</summary>
    public string Meminfo() => MeminfoText.Format(MeminfoItems());

    /// <summary>The /proc/meminfo items as (name, kB) pairs, in the order they are printed.</summary>
    public IReadOnlyList<(string Name, long Kb)> MeminfoItems()
    {
        var values = new MeminfoValues
        {
            TotalPages = Pages.ManagedPages,
            FreePages = Pages.NrFreePages,
            PageTablePages = Pages.NrPageTablePages,
            VmallocPages = HasVmalloc ? Vmalloc.VmallocPages : null,
            PercpuPages = Percpu.NrPages,
            HighMem = Pages.HasHighMem,
        };
        for (int z = 0; z < Pages.Zones.Count; z++) values.AddZone(Pages.ZoneArray[z]);
        PageAlloc.Lru lru = Pages.Lru;
        values.ActiveAnon = lru.Total(PageAlloc.LruList.ActiveAnon);
        values.InactiveAnon = lru.Total(PageAlloc.LruList.InactiveAnon);
        values.ActiveFile = lru.Total(PageAlloc.LruList.ActiveFile);
        values.InactiveFile = lru.Total(PageAlloc.LruList.InactiveFile);
        if (_kernel is { } k) values.Swap = k.SwapPages;
        if (_pageCache is { } pageCache)
        {
            PageCacheStatistics stats = pageCache.Statistics;
            values.Files = new MeminfoFileValues
            {
                CachedPages = stats.FilePages,
                DirtyPages = stats.DirtyPages,
                WritebackPages = stats.WritebackPages,
                MappedPages = stats.MappedPages,
                ShmemPages = _kernel?.Statistics.ShmemPages ?? 0,
            };
        }
        foreach (var cache in Slab.Caches)
        {
            KmemCacheData* d = cache.Data;
            for (int n = 0; n < d->NodeCount; n++) values.SlabUnreclaimablePages += Volatile.Read(ref d->Nodes[n].NrSlabs) << d->Order;
        }
        return MeminfoFormat.Items(values);
    }

    /// <summary>The system's event counters in the layout of /proc/vmstat (<c>name value</c> lines).</summary>
    public string VmStat() => VmstatText.Format(VmStatItems());

    /// <summary>
    /// The /proc/vmstat items as (name, value) pairs: the page allocator's, then the MMU's once the kernel address
    /// space exists, then the page cache's once it exists. A counter two layers both report appears once, with the
    /// first layer's value.
    /// </summary>
    public IReadOnlyList<(string Name, long Value)> VmStatItems()
    {
        var items = new List<(string, long)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        void Add(IEnumerable<(string Name, long Value)> layer)
        {
            foreach (var item in layer)
                if (seen.Add(item.Name)) items.Add(item);
        }
        Add(Pages.VmStatItems());
        if (_kernel is { } kernel) Add(kernel.Statistics.Items());
        Add(Pages.ReclaimCounters.Items());
        if (_pageCache is { } cache) Add(cache.Statistics.Items());
        return items;
    }
}

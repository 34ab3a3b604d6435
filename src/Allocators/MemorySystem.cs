using Allocators.Diagnostics;
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

    /// <summary>Give cached and free memory back after this long without page activity; null (default) never.</summary>
    public TimeSpan? IdleTrimAfter { get; init; }
}

/// <summary>
/// One memory system: owns the arena and composes the allocators built on it (layers flow down only).
/// Every layer is also usable on its own through its own type.
/// </summary>
public sealed unsafe partial class MemorySystem : IDisposable
{
    /// <summary>Builds the default system (256 MiB NativeMemory arena, one node) or the one described.</summary>
    public MemorySystem(MemorySystemOptions? options = null)
    {
        Options = options ?? new MemorySystemOptions();
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
            Slab?.Dispose();
            Pages?.Dispose();
            Memory.Dispose();
            throw;
        }
        MemorySystemRegistry.Add(this);
        _descriptor = NativeRegistry.Register(Memory, Pages, Slab);
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

    /// <summary>The per-CPU allocator: variables with one copy per possible CPU.</summary>
    public PercpuAllocator Percpu { get; }

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
        Percpu.Dispose();
        Slab.Dispose();
        Pages.Dispose();
        Memory.Dispose();
    }
}

using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Kasan;
using Allocators.Native;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Percpu;

/// <summary>
/// The per-CPU allocator (the kernel's mm/percpu.c): carves variables that exist once per possible CPU out of
/// chunks of units, one unit per CPU at a fixed stride, so <c>per_cpu_ptr(p, cpu) = p + cpu * UnitSize</c> in O(1).
/// Chunks are contiguous page blocks from the page allocator, created and destroyed on demand; memory is zeroed.
/// </summary>
/// <remarks>
/// <para>Thread-safe; allocation and free take the allocator's lock (pcpu_alloc_mutex); access does not.</para>
/// <para>With KASAN on, every byte of a chunk outside a live allocation's requested size, in every unit, is poisoned
/// (<see cref="KasanShadowCode.PercpuInvalid"/>), and <see cref="Percpu{T}"/>'s accessors check the copy they hand out:
/// a use after <see cref="FreePercpu"/> is reported as <c>percpu-out-of-bounds</c> with its unit (the kernel's generic
/// KASAN leaves per-CPU memory unchecked).</para>
/// <para>Invariant: <c>FreeBytes = UnitSize - Granule * sum of Sizes</c> per chunk, and a granule is set in
/// <c>AllocMap</c> exactly when it lies in a live allocation.</para>
/// </remarks>
public sealed unsafe class PercpuAllocator : IDisposable
{
    /// <summary>Allocation granule in bytes (PCPU_MIN_ALLOC_SIZE in spirit).</summary>
    public const int Granule = 8;

    private readonly PageAllocator _pages;
    private readonly List<nint> _chunks = new();
    private readonly Lock _lock = new();
    private readonly int _unitGranules;
    private readonly int _chunkOrder;
    private readonly long* _nrPages = (long*)NativeMemory.AllocZeroed(sizeof(long));
    private bool _disposed;

    /// <summary>Builds a per-CPU allocator whose chunks come from <paramref name="pages"/>.</summary>
    /// <param name="pages">The page allocator.</param>
    /// <param name="possibleCpus">Number of units per chunk; default: the machine's possible CPUs.</param>
    /// <param name="unitSize">Bytes per unit (a power of two, 4 KiB..64 KiB); shrunk if a chunk would exceed 4 MiB.</param>
    public PercpuAllocator(PageAllocator pages, int? possibleCpus = null, int unitSize = 64 * 1024)
    {
        ArgumentNullException.ThrowIfNull(pages);
        _pages = pages;
        PossibleCpus = Math.Max(1, possibleCpus ?? Math.Max(HostMemory.PossibleCpus, Environment.ProcessorCount));
        if (!BitOperations.IsPow2(unitSize) || unitSize < PageFrame.PageSize || unitSize > 64 * 1024)
            throw new ArgumentOutOfRangeException(nameof(unitSize), unitSize, "Unit size must be a power of two from 4 KiB to 64 KiB.");
        long maxChunk = (long)PageFrame.PageSize << PageAllocator.MaxOrder;
        while ((long)unitSize * BitOperations.RoundUpToPowerOf2((uint)PossibleCpus) > maxChunk && unitSize > PageFrame.PageSize) unitSize /= 2;
        if ((long)unitSize * PossibleCpus > maxChunk)
            throw new ArgumentOutOfRangeException(nameof(possibleCpus), PossibleCpus, "Too many CPUs for one 4 MiB chunk.");
        UnitSize = unitSize;
        _unitGranules = unitSize / Granule;
        Kasan = pages.Memory.Kasan;
        Kasan?.AddDescriber(KasanDescribe);
        long chunkPages = (long)PossibleCpus * unitSize / PageFrame.PageSize;
        _chunkOrder = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((ulong)chunkPages));
    }

    /// <summary>The arena's KASAN shadow when the checked mode is on; otherwise null.</summary>
    internal KasanShadow? Kasan { get; }

    /// <summary>Units per chunk: one per possible CPU.</summary>
    public int PossibleCpus { get; }

    /// <summary>Distance in bytes between two CPUs' copies of a variable.</summary>
    public int UnitSize { get; }

    /// <summary>Pages held by per-CPU chunks, all units included (the Percpu line of /proc/meminfo).</summary>
    public long NrPages => Volatile.Read(ref *_nrPages);

    /// <summary>The page counter in native memory, read by out-of-process inspectors (SystemDescriptor.PercpuPages).</summary>
    internal long* NativeNrPages => _nrPages;

    /// <summary>Chunks currently allocated.</summary>
    public int ChunkCount { get { lock (_lock) return _chunks.Count; } }

    /// <summary>The CPU the calling thread runs on, folded into 0..PossibleCpus-1 (smp_processor_id).</summary>
    public int CurrentCpu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            int cpu = Thread.GetCurrentProcessorId();
            return (uint)cpu < (uint)PossibleCpus ? cpu : cpu % PossibleCpus;
        }
    }

    /// <summary>
    /// Allocates a zeroed per-CPU area of <paramref name="size"/> bytes aligned to <paramref name="align"/> (up to a page)
    /// in every unit (__alloc_percpu). Returns the unit-0 address, or 0 when memory runs out.
    /// </summary>
    public nint AllocPercpu(int size, int align = Granule)
    {
        if (size <= 0 || size > UnitSize) throw new ArgumentOutOfRangeException(nameof(size), size, $"Size must be 1..{UnitSize}.");
        if (align <= 0 || !BitOperations.IsPow2(align) || align > PageFrame.PageSize)
            throw new ArgumentOutOfRangeException(nameof(align), align, "Alignment must be a power of two up to 4096.");
        int granules = (size + Granule - 1) / Granule;
        int alignGranules = Math.Max(1, align / Granule);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            foreach (nint c in _chunks)
            {
                var chunk = (PercpuChunk*)c;
                if (chunk->FreeBytes < granules * Granule || chunk->ContigHint < granules) continue;
                int start = FindFit(chunk, granules, alignGranules);
                if (start >= 0) return Commit(chunk, start, size);
                // No aligned run of this length: any free run is shorter than granules + align - 1.
                chunk->ContigHint = Math.Min(chunk->ContigHint, granules + alignGranules - 2);
            }
            PercpuChunk* fresh = CreateChunk();
            if (fresh == null) return 0;
            return Commit(fresh, FindFit(fresh, granules, alignGranules), size);
        }
    }

    /// <summary>Allocates one zeroed <typeparamref name="T"/> per possible CPU (alloc_percpu).</summary>
    /// <exception cref="OutOfMemoryException">No memory for a new chunk.</exception>
    public Percpu<T> AllocPercpu<T>() where T : unmanaged
    {
        int align = Math.Min((int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(sizeof(T), 1)), Threading.CacheLines.Size);
        nint p = AllocPercpu(sizeof(T), Math.Max(align, Granule));
        if (p == 0) throw new OutOfMemoryException($"alloc_percpu: no memory for {sizeof(T)} bytes per CPU.");
        return new Percpu<T>(this, p);
    }

    /// <summary>Frees a per-CPU area (free_percpu); 0 is ignored. Throws for a pointer this allocator did not return.</summary>
    public void FreePercpu(nint pointer)
    {
        if (pointer == 0) return;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            PercpuChunk* chunk = FindChunk(pointer);
            long offset = pointer - (nint)(chunk == null ? null : chunk->Base);
            int start = (int)(offset / Granule);
            if (chunk == null || offset < 0 || offset >= UnitSize || offset % Granule != 0 || chunk->Sizes[start] == 0)
                throw new Common.MemoryCorruptionException($"free_percpu: 0x{pointer:x} is not a live per-CPU allocation.", (nuint)pointer);
            int granules = chunk->Sizes[start];
            if (_pages.Memory.Checks.InitOnFree)
            {
                for (int cpu = 0; cpu < PossibleCpus; cpu++) NativeMemory.Clear((byte*)pointer + (nint)cpu * UnitSize, (nuint)(granules * Granule));
            }
            if (Kasan != null)
            {
                for (int cpu = 0; cpu < PossibleCpus; cpu++) Kasan.Poison((byte*)pointer + (nint)cpu * UnitSize, (nuint)(granules * Granule), KasanShadowCode.PercpuInvalid);
            }
            chunk->Sizes[start] = 0;
            for (int i = start; i < start + granules; i++) chunk->AllocMap[i >> 6] &= ~(1UL << (i & 63));
            chunk->FreeBytes += granules * Granule;
            chunk->ContigHint = _unitGranules;
            if (chunk->FreeBytes == UnitSize && CountEmpty() > 1) DestroyChunk(chunk);
        }
    }

    /// <summary>The address of CPU <paramref name="cpu"/>'s copy (per_cpu_ptr).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* PerCpuPtr(nint pointer, int cpu)
    {
        if ((uint)cpu >= (uint)PossibleCpus) throw new ArgumentOutOfRangeException(nameof(cpu), cpu, $"CPUs are 0..{PossibleCpus - 1}.");
        return (byte*)pointer + (nint)cpu * UnitSize;
    }

    /// <summary>The address of the current CPU's copy (this_cpu_ptr).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* ThisCpuPtr(nint pointer) => (byte*)pointer + (nint)CurrentCpu * UnitSize;

    private int FindFit(PercpuChunk* chunk, int granules, int alignGranules)
    {
        for (int start = 0; start + granules <= _unitGranules; start += alignGranules)
        {
            int busy = FirstBusy(chunk, start, granules);
            if (busy < 0) return start;
            // Skip past the busy granule, keeping alignment.
            start = (busy / alignGranules) * alignGranules;
        }
        return -1;
    }

    private static int FirstBusy(PercpuChunk* chunk, int start, int count)
    {
        for (int i = start; i < start + count; i++)
        {
            ulong word = chunk->AllocMap[i >> 6];
            if (word == 0 && (i & 63) == 0 && i + 64 <= start + count) { i += 63; continue; }
            if ((word & (1UL << (i & 63))) != 0) return i;
        }
        return -1;
    }

    private nint Commit(PercpuChunk* chunk, int start, int size)
    {
        int granules = (size + Granule - 1) / Granule;
        for (int i = start; i < start + granules; i++) chunk->AllocMap[i >> 6] |= 1UL << (i & 63);
        chunk->Sizes[start] = (ushort)granules;
        chunk->FreeBytes -= granules * Granule;
        byte* unit0 = chunk->Base + start * Granule;
        for (int cpu = 0; cpu < PossibleCpus; cpu++)
        {
            NativeMemory.Clear(unit0 + (nint)cpu * UnitSize, (nuint)(granules * Granule));
            Kasan?.Unpoison(unit0 + (nint)cpu * UnitSize, (nuint)size); // exactly the size asked: the rest stays poisoned
        }
        return (nint)unit0;
    }

    private PercpuChunk* CreateChunk()
    {
        PageFrame* page = _pages.AllocPages(Gfp.Kernel | Gfp.Comp | Gfp.NoWarn, _chunkOrder);
        if (page == null) return null;
        var chunk = (PercpuChunk*)NativeMemory.AllocZeroed((nuint)sizeof(PercpuChunk));
        chunk->Page = page;
        chunk->Order = _chunkOrder;
        chunk->Base = _pages.AddressOf(page);
        chunk->FreeBytes = UnitSize;
        chunk->ContigHint = _unitGranules;
        chunk->AllocMap = (ulong*)NativeMemory.AllocZeroed((nuint)((_unitGranules + 63) / 64), sizeof(ulong));
        chunk->Sizes = (ushort*)NativeMemory.AllocZeroed((nuint)_unitGranules, sizeof(ushort));
        Kasan?.Poison(chunk->Base, (nuint)PageFrame.PageSize << _chunkOrder, KasanShadowCode.PercpuInvalid);
        _chunks.Add((nint)chunk);
        Volatile.Write(ref *_nrPages, *_nrPages + (1L << _chunkOrder));
        return chunk;
    }

    private void DestroyChunk(PercpuChunk* chunk)
    {
        _chunks.Remove((nint)chunk);
        _pages.FreePages(chunk->Page, chunk->Order);
        Volatile.Write(ref *_nrPages, *_nrPages - (1L << chunk->Order));
        NativeMemory.Free(chunk->AllocMap);
        NativeMemory.Free(chunk->Sizes);
        NativeMemory.Free(chunk);
    }

    /// <summary>KASAN's "the buggy address belongs to" line for an address in a chunk; null for any other address.</summary>
    private string? KasanDescribe(nuint address)
    {
        if (!_lock.TryEnter()) return null; // the report may come from inside an allocation
        try
        {
            foreach (nint c in _chunks)
            {
                var chunk = (PercpuChunk*)c;
                nuint offset = address - (nuint)chunk->Base;
                if (offset >= (nuint)PageFrame.PageSize << chunk->Order) continue;
                int cpu = (int)(offset / (nuint)UnitSize);
                int inUnit = (int)(offset % (nuint)UnitSize);
                return $"The buggy address belongs to the per-CPU chunk at {(nuint)chunk->Base:x16}, unit {cpu} (CPU {cpu}), offset {inUnit} of {UnitSize}";
            }
            return null;
        }
        finally { _lock.Exit(); }
    }

    private int CountEmpty()
    {
        int empty = 0;
        foreach (nint c in _chunks) if (((PercpuChunk*)c)->FreeBytes == UnitSize) empty++;
        return empty;
    }

    private PercpuChunk* FindChunk(nint pointer)
    {
        foreach (nint c in _chunks)
        {
            var chunk = (PercpuChunk*)c;
            if ((nuint)(pointer - (nint)chunk->Base) < (nuint)UnitSize) return chunk;
        }
        return null;
    }

    /// <summary>Gives every chunk back to the page allocator. Per-CPU pointers become invalid.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            while (_chunks.Count > 0) DestroyChunk((PercpuChunk*)_chunks[^1]);
            NativeMemory.Free(_nrPages);
        }
    }
}

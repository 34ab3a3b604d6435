using System.Runtime.CompilerServices;
using Allocators.Slab;

namespace Allocators.Workloads;

/// <summary>
/// Per-thread handles an Allocators handle variant took during one session. The headline rows never take one (they
/// call the plain API), so a test can tell the two apart by this count rather than by trusting a name.
/// </summary>
internal sealed class ThreadHandleCount
{
    private long _taken;

    /// <summary>Handles taken so far.</summary>
    public long Taken => Volatile.Read(ref _taken);

    /// <summary>Counts one more handle.</summary>
    public void Add() => Interlocked.Increment(ref _taken);
}

/// <summary>Allocators' kmalloc/kfree, called as a program calls them (<see cref="SlabAllocator.Kmalloc(nuint, Gfp)"/>): the headline row.</summary>
internal readonly unsafe struct KmallocAllocator(SlabAllocator slab) : IBlockAllocator<nint>
{
    private readonly SlabAllocator _slab = slab;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size)
    {
        void* p = _slab.Kmalloc((nuint)size);
        if (p == null) AllocatorFailure.OutOfMemory("kmalloc", size);
        return (nint)p;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => _slab.Kfree((void*)block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(nint block) => ref *(byte*)block;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(nint block) => block == 0;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<nint>
    {
        var self = this;
        run.Run(ref self);
    }
}

/// <summary>
/// Allocators' kmalloc with every thread's run going through that thread's handle (<see cref="SlabAllocator.ThisThread"/>):
/// the extra row. Outside a thread's run (a workload's set-up and clean-up) it calls the plain API.
/// </summary>
internal readonly unsafe struct KmallocThreadHandles(SlabAllocator slab, ThreadHandleCount handles) : IBlockAllocator<nint>
{
    private readonly SlabAllocator _slab = slab;
    private readonly ThreadHandleCount _handles = handles;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size) => new KmallocAllocator(_slab).Allocate(size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => _slab.Kfree((void*)block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(nint block) => ref *(byte*)block;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(nint block) => block == 0;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<nint>
    {
        _handles.Add();
        var handle = new KmallocHandleAllocator(_slab.ThisThread());
        run.Run(ref handle);
    }
}

/// <summary>An Allocators typed slab cache (<see cref="KmemCache{T}"/>) through its plain Alloc/Free: every block is one <typeparamref name="T"/>.</summary>
internal readonly unsafe struct SlabCacheAllocator<T>(KmemCache<T> cache) : IBlockAllocator<nint> where T : unmanaged
{
    private readonly KmemCache<T> _cache = cache;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size) => (nint)_cache.Alloc();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => _cache.Free((T*)block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(nint block) => ref *(byte*)block;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(nint block) => block == 0;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<nint>
    {
        var self = this;
        run.Run(ref self);
    }
}

/// <summary>
/// A typed slab cache with every thread's run going through that thread's handle (<see cref="KmemCache{T}.ThisThread"/>):
/// the extra row. Outside a thread's run it calls the plain API.
/// </summary>
internal readonly unsafe struct SlabCacheThreadHandles<T>(KmemCache<T> cache, ThreadHandleCount handles) : IBlockAllocator<nint> where T : unmanaged
{
    private readonly KmemCache<T> _cache = cache;
    private readonly ThreadHandleCount _handles = handles;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size) => (nint)_cache.Alloc();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => _cache.Free((T*)block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(nint block) => ref *(byte*)block;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(nint block) => block == 0;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<nint>
    {
        _handles.Add();
        var handle = new SlabCacheHandleAllocator<T>(_cache.ThisThread());
        run.Run(ref handle);
    }
}

/// <summary>kmalloc/kfree through the calling thread's handle (<see cref="SlabAllocator.ThisThread"/>): one thread's run.</summary>
internal unsafe ref struct KmallocHandleAllocator(KmallocThread handle) : IBlockAllocator<nint>
{
    private KmallocThread _handle = handle;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size)
    {
        void* p = _handle.Kmalloc((nuint)size);
        if (p == null) AllocatorFailure.OutOfMemory("kmalloc", size);
        return (nint)p;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => _handle.Kfree((void*)block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(nint block) => ref *(byte*)block;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(nint block) => block == 0;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<nint> => run.Run(ref this);
}

/// <summary>A typed slab cache through the calling thread's handle (<see cref="KmemCache{T}.ThisThread"/>): one thread's run.</summary>
internal unsafe ref struct SlabCacheHandleAllocator<T>(KmemCacheThread<T> handle) : IBlockAllocator<nint> where T : unmanaged
{
    private readonly KmemCacheThread<T> _handle = handle;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size) => (nint)_handle.Alloc();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => _handle.Free((T*)block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(nint block) => ref *(byte*)block;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(nint block) => block == 0;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<nint> => run.Run(ref this);
}

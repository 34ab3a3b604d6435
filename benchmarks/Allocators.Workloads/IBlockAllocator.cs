using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Peers;
using Allocators.Slab;

namespace Allocators.Workloads;

/// <summary>
/// One allocator as the workloads see it. Workloads are generic over a struct implementing this interface, so the
/// JIT specialises every workload per allocator and each call is a direct (usually inlined) call: no interface
/// dispatch on the measured path. <typeparamref name="TBlock"/> is <see cref="nint"/> for native memory and
/// <c>byte[]</c> for managed blocks (ArrayPool, GC).
/// </summary>
/// <typeparam name="TBlock">How a block is held.</typeparam>
internal interface IBlockAllocator<TBlock>
{
    /// <summary>Allocates at least <paramref name="size"/> bytes (size &gt;= 1); throws when the allocator is out of memory.</summary>
    TBlock Allocate(int size);

    /// <summary>Frees a block of this allocator (any thread).</summary>
    void Free(TBlock block);

    /// <summary>The first byte of the block.</summary>
    ref byte Data(TBlock block);

    /// <summary>True for the empty block (default value).</summary>
    bool IsNull(TBlock block);

    /// <summary>
    /// Runs <paramref name="run"/> (a run of operations on the calling thread) with this allocator as that thread
    /// uses it: as it is for every allocator but Allocators' handle variants (<see cref="KmallocThreadHandles"/>,
    /// <see cref="SlabCacheThreadHandles{T}"/>), which take the thread's handle (<see cref="SlabAllocator.ThisThread"/>,
    /// <see cref="KmemCache{T}.ThisThread"/>) and run through it.
    /// </summary>
    void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<TBlock>;
}

/// <summary>
/// A workload's per-thread loop, written once for every allocator: <see cref="Run"/> is specialised per allocator type
/// (ref structs included, so a per-thread handle can be passed in), with no interface dispatch per operation.
/// </summary>
/// <typeparam name="TBlock">How a block is held.</typeparam>
internal interface IThreadRun<TBlock>
{
    /// <summary>The loop, over <paramref name="allocator"/>.</summary>
    void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct;
}

/// <summary>Shared cold paths of the allocator structs.</summary>
internal static class AllocatorFailure
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void OutOfMemory(string who, int size) => throw new OutOfMemoryException($"{who}: allocation of {size} bytes failed.");
}

/// <summary>A native allocator's malloc/free called through its unmanaged function pointers (no GC transition).</summary>
internal readonly unsafe struct NativeLibraryAllocator(NativeAllocatorLibrary library) : IBlockAllocator<nint>
{
    private readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*> _malloc = library.Malloc;
    private readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void> _free = library.Free;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size)
    {
        void* p = _malloc((nuint)size);
        if (p == null) AllocatorFailure.OutOfMemory("malloc", size);
        return (nint)p;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => _free((void*)block);

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

/// <summary><see cref="NativeMemory.Alloc(nuint)"/> / <see cref="NativeMemory.Free"/> (the runtime's own path to the C heap).</summary>
internal readonly unsafe struct NativeMemoryAllocator : IBlockAllocator<nint>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size) => (nint)NativeMemory.Alloc((nuint)size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) => NativeMemory.Free((void*)block);

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

/// <summary><see cref="ArrayPool{T}.Shared"/>: rent and return byte arrays.</summary>
internal readonly struct ArrayPoolAllocator : IBlockAllocator<byte[]>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte[] Allocate(int size) => ArrayPool<byte>.Shared.Rent(size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(byte[] block) => ArrayPool<byte>.Shared.Return(block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(byte[] block) => ref MemoryMarshal.GetArrayDataReference(block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(byte[] block) => block is null;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<byte[]>
    {
        var self = this;
        run.Run(ref self);
    }
}

/// <summary>The garbage collector: a new (uninitialised) byte array per block; freeing drops the reference.</summary>
internal readonly struct GcAllocator : IBlockAllocator<byte[]>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte[] Allocate(int size) => GC.AllocateUninitializedArray<byte>(size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(byte[] block) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte Data(byte[] block) => ref MemoryMarshal.GetArrayDataReference(block);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsNull(byte[] block) => block is null;

    /// <inheritdoc/>
    public void OnThisThread<TRun>(ref TRun run) where TRun : struct, IThreadRun<byte[]>
    {
        var self = this;
        run.Run(ref self);
    }
}

/// <summary>
/// Not an allocator: every "allocation" returns the calling thread's own cache-line-aligned scratch line. The
/// reference run for the false-sharing workloads (what a perfect allocator would give).
/// </summary>
internal readonly unsafe struct PrivateLineAllocator : IBlockAllocator<nint>
{
    [ThreadStatic] private static nint t_line;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Allocate(int size)
    {
        nint line = t_line;
        return line != 0 ? line : NewLine();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static nint NewLine()
    {
        // 256 bytes aligned to 128, never freed (a few per thread): no neighbour shares its cache lines.
        t_line = (nint)NativeMemory.AlignedAlloc(256, 128);
        return t_line;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(nint block) { }

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

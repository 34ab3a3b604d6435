using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>
/// A kmalloc allocation or slab cache object as a plain value: <see cref="Span"/> views it, <see cref="Free"/> frees
/// it. No managed object, no pointer in the API: code without <c>AllowUnsafeBlocks</c> can hold and use it. From
/// <see cref="SlabAllocatorExtensions.AllocBuffer"/> or <see cref="KmemCacheExtensions.AllocBuffer"/>.
/// </summary>
/// <remarks>
/// A copy is the same buffer, so freeing is the raw API's business and gets its checks: a second
/// <see cref="Free"/> throws <see cref="Common.MemoryCorruptionException"/> naming the address (until the slot is
/// allocated again) and changes nothing. A span kept after the free is not checked (the struct cannot know; with KASAN
/// on, taking <see cref="Span"/> again after the free is); use <see cref="SlabMemoryOwner"/> where that matters. Free on any thread. <see cref="Dispose"/> is <see cref="Free"/>,
/// except that it does nothing once the memory system is disposed.
/// </remarks>
public readonly unsafe struct NativeBuffer : IDisposable, IEquatable<NativeBuffer>
{
    private readonly SlabAllocator? _slab;
    private readonly byte* _pointer;
    private readonly int _length;

    internal NativeBuffer(SlabAllocator slab, byte* pointer, int length)
    {
        _slab = slab;
        _pointer = pointer;
        _length = length;
    }

    /// <summary>Bytes in the buffer (what was asked for; the slot may be larger).</summary>
    public int Length => _length;

    /// <summary>The buffer's address, for diagnostics and for matching reports.</summary>
    public nuint Address => (nuint)_pointer;

    /// <summary>True for <c>default(NativeBuffer)</c>, which owns nothing.</summary>
    public bool IsDefault => _slab is null;

    /// <summary>The buffer's bytes. With KASAN on, a view of a buffer already freed is reported as a use after free.</summary>
    public Span<byte> Span
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (_slab?.Kasan is { } kasan) kasan.Check(_pointer, (nuint)_length, write: false, "NativeBuffer.Span");
            return new(_pointer, _length);
        }
    }

    /// <summary>The buffer as elements of <typeparamref name="T"/> (as many whole ones as fit).</summary>
    public Span<T> AsSpan<T>() where T : unmanaged => MemoryMarshal.Cast<byte, T>(Span);

    /// <summary>Frees the buffer (kfree). Misuse throws as <see cref="SlabAllocator.Kfree(void*)"/> does and changes nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free()
    {
        SlabAllocator? slab = _slab;
        if (slab is null) ThrowDefault();
        slab.Kfree(_pointer);
    }

    /// <summary>Frees the buffer; does nothing once the memory system is disposed.</summary>
    public void Dispose()
    {
        try
        {
            Free();
        }
        catch (ObjectDisposedException) when (_slab!.IsDisposed)
        {
            // The memory went with the arena.
        }
    }

    /// <inheritdoc/>
    public bool Equals(NativeBuffer other) => _pointer == other._pointer && _length == other._length && ReferenceEquals(_slab, other._slab);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is NativeBuffer other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => ((nuint)_pointer).GetHashCode();

    /// <summary>True when both are the same buffer.</summary>
    public static bool operator ==(NativeBuffer left, NativeBuffer right) => left.Equals(right);

    /// <summary>True when they are different buffers.</summary>
    public static bool operator !=(NativeBuffer left, NativeBuffer right) => !left.Equals(right);

    /// <inheritdoc/>
    public override string ToString() => $"{nameof(NativeBuffer)} 0x{(nuint)_pointer:x} ({_length} bytes)";

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowDefault() => throw new InvalidOperationException($"{nameof(NativeBuffer)}: default(NativeBuffer) owns no memory; nothing to free.");
}

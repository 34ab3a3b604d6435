using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>
/// One object of a <see cref="KmemCache{T}"/> as a plain value: <see cref="Value"/> is a <c>ref T</c> to it,
/// <see cref="Free"/> frees it. No managed object and no pointer in the API, so it can live in fields, arrays and
/// collections of code without <c>AllowUnsafeBlocks</c>. From <see cref="KmemCacheExtensions.AllocHandle"/>.
/// </summary>
/// <remarks>
/// A copy is the same object, so freeing is the raw API's business and gets its checks: a second <see cref="Free"/>
/// throws <see cref="Common.MemoryCorruptionException"/> naming the address (until the slot is allocated again)
/// and changes nothing. <see cref="Value"/> after the free is not checked. Free on any thread. <see cref="Dispose"/>
/// is <see cref="Free"/>, except that it does nothing once the memory system is disposed.
/// </remarks>
public readonly unsafe struct KmemHandle<T> : IDisposable, IEquatable<KmemHandle<T>> where T : unmanaged
{
    private readonly KmemCache<T>? _cache;
    private readonly T* _object;

    internal KmemHandle(KmemCache<T> cache, T* obj)
    {
        _cache = cache;
        _object = obj;
    }

    /// <summary>The object.</summary>
    /// <exception cref="InvalidOperationException">A <c>default</c> handle.</exception>
    public ref T Value
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (_object == null) ThrowDefault();
            return ref *_object;
        }
    }

    /// <summary>The cache the object belongs to; null for a <c>default</c> handle.</summary>
    public KmemCache<T>? Cache => _cache;

    /// <summary>The object's address, for diagnostics and for matching reports.</summary>
    public nuint Address => (nuint)_object;

    /// <summary>True for <c>default(KmemHandle&lt;T&gt;)</c>, which refers to nothing.</summary>
    public bool IsDefault => _cache is null;

    /// <summary>Frees the object (kmem_cache_free). Misuse throws as <see cref="KmemCache.Free"/> does and changes nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free()
    {
        KmemCache<T>? cache = _cache;
        if (cache is null) ThrowDefault();
        cache.Free(_object);
    }

    /// <summary>Frees the object; does nothing once the memory system is disposed.</summary>
    public void Dispose()
    {
        try
        {
            Free();
        }
        catch (ObjectDisposedException) when (_cache!.Cache.Owner.IsDisposed)
        {
            // The object went with the arena.
        }
    }

    /// <inheritdoc/>
    public bool Equals(KmemHandle<T> other) => _object == other._object && ReferenceEquals(_cache, other._cache);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is KmemHandle<T> other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => ((nuint)_object).GetHashCode();

    /// <summary>True when both refer to the same object.</summary>
    public static bool operator ==(KmemHandle<T> left, KmemHandle<T> right) => left.Equals(right);

    /// <summary>True when they refer to different objects.</summary>
    public static bool operator !=(KmemHandle<T> left, KmemHandle<T> right) => !left.Equals(right);

    /// <inheritdoc/>
    public override string ToString() => $"{nameof(KmemHandle<T>)}<{typeof(T).Name}> 0x{(nuint)_object:x}";

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowDefault() => throw new InvalidOperationException($"KmemHandle<{typeof(T).Name}>: a default handle refers to no object.");
}

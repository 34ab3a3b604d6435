using System.Buffers;
using Allocators.Buffers;
using Microsoft.AspNetCore.Connections;

namespace Allocators.AspNetCore;

/// <summary>
/// Kestrel's memory pool factory (.NET 10's <see cref="IMemoryPoolFactory{T}"/>) backed by Allocators: every pool it
/// creates is a <see cref="NativeMemoryPool"/> over one shared <see cref="MemorySystem"/>, with
/// <see cref="NativeMemoryPoolOptions.ExposeAsArrays"/> on whatever the options say.
/// </summary>
public sealed class NativeMemoryPoolFactory : IMemoryPoolFactory<byte>
{
    private readonly MemorySystem _system;
    private readonly NativeMemoryPoolOptions _options;
    private readonly List<NativeMemoryPool> _pools = new();
    private readonly Lock _lock = new();

    /// <summary>Creates the factory over <paramref name="system"/>.</summary>
    public NativeMemoryPoolFactory(MemorySystem system, NativeMemoryPoolOptions? options = null)
    {
        _system = system ?? throw new ArgumentNullException(nameof(system));
        // Kestrel's socket transport sends multi-segment buffers through arrays (MemoryMarshal.TryGetArray, or it throws):
        // the pool must hand out real ones.
        options ??= new NativeMemoryPoolOptions();
        _options = WithOwner(options, options.Name);
    }

    private static NativeMemoryPoolOptions WithOwner(NativeMemoryPoolOptions options, string? name) => new()
    {
        Name = name,
        DefaultBufferSize = options.DefaultBufferSize,
        MaxBufferSize = options.MaxBufferSize,
        DebugChecks = options.DebugChecks,
        MaxPooledBytes = options.MaxPooledBytes,
        ThreadCacheBytes = options.ThreadCacheBytes,
        TrimInterval = options.TrimInterval,
        ExposeAsArrays = true,
    };

    /// <summary>The pools created so far.</summary>
    public IReadOnlyList<NativeMemoryPool> Pools { get { lock (_lock) return _pools.ToArray(); } }

    /// <summary>
    /// Creates a pool for one Kestrel transport or connection owner, named after <see cref="MemoryPoolOptions.Owner"/>
    /// (unique among live pools, so Kestrel's pools stay apart in metrics and messages).
    /// </summary>
    public MemoryPool<byte> Create(MemoryPoolOptions? options = null)
    {
        string? owner = options?.Owner ?? _options.Name;
        var pool = new NativeMemoryPool(_system.Slab, owner == _options.Name ? _options : WithOwner(_options, owner));
        lock (_lock) _pools.Add(pool);
        return pool;
    }
}

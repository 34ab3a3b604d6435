using Allocators.Buffers;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Allocators.AspNetCore;

/// <summary>Registers Allocators as Kestrel's memory pool.</summary>
public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Makes Kestrel (and anything else resolving <see cref="IMemoryPoolFactory{T}"/>) rent its buffers from
    /// <paramref name="system"/> through <see cref="NativeMemoryPool"/>s.
    /// </summary>
    public static IServiceCollection AddAllocatorsMemoryPool(this IServiceCollection services, MemorySystem system, NativeMemoryPoolOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var factory = new NativeMemoryPoolFactory(system, options);
        services.RemoveAll<IMemoryPoolFactory<byte>>();
        services.AddSingleton(factory);
        services.AddSingleton<IMemoryPoolFactory<byte>>(factory);
        return services;
    }
}

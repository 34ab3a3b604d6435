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
    /// <see cref="NativeMemoryPool"/>s over <paramref name="system"/>. The pools always run with
    /// <see cref="NativeMemoryPoolOptions.ExposeAsArrays"/>, since Kestrel's socket transport needs arrays: their
    /// buffers are pooled pinned arrays, counted in the pools' statistics and metrics.
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

    /// <summary>
    /// As <see cref="AddAllocatorsMemoryPool(IServiceCollection, MemorySystem, NativeMemoryPoolOptions?)"/>, over the
    /// <see cref="MemorySystem"/> registered with dependency injection (by
    /// <see cref="AllocatorsServiceCollectionExtensions.AddAllocators(IServiceCollection, Action{AllocatorsOptions}?)"/>,
    /// called here if it was not).
    /// </summary>
    public static IServiceCollection AddAllocatorsMemoryPool(this IServiceCollection services, NativeMemoryPoolOptions? options = null)
    {
        services.AddAllocators();
        services.RemoveAll<IMemoryPoolFactory<byte>>();
        services.AddSingleton(provider => new NativeMemoryPoolFactory(provider.GetRequiredService<MemorySystem>(), options));
        services.AddSingleton<IMemoryPoolFactory<byte>>(provider => provider.GetRequiredService<NativeMemoryPoolFactory>());
        return services;
    }
}

using Allocators.Buffers;
using Allocators.Swap;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Allocators.AspNetCore;

/// <summary>
/// The one way to put Allocators into a host: <c>AddAllocators</c> registers the <see cref="MemorySystem"/> (options
/// from configuration and code, validated at startup, reports to <see cref="ILogger"/>s, disposed with the host), and
/// <c>AddAllocatorsMemoryPool</c> makes Kestrel rent from it.
/// </summary>
/// <remarks>
/// Every call may be repeated: configuration accumulates in call order and there is still one system. The system is
/// built on first resolution, from the options as they are then.
/// </remarks>
public static class AllocatorsServiceCollectionExtensions
{
    /// <summary>
    /// Registers one <see cref="MemorySystem"/> singleton built from <see cref="AllocatorsOptions"/> (on first
    /// resolution, and disposed with the service provider, so with the host) whose reports go to
    /// <see cref="ILogger"/>s. The options are validated when the host starts: a bad value stops it with an
    /// <see cref="OptionsValidationException"/> naming the key. Calling it again adds <paramref name="configure"/>
    /// and keeps the one system.
    /// </summary>
    public static IServiceCollection AddAllocators(this IServiceCollection services, Action<AllocatorsOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        OptionsBuilder<AllocatorsOptions> options = services.AddOptions<AllocatorsOptions>();
        if (configure != null) options.Configure(configure);
        options.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<AllocatorsOptions>, AllocatorsOptionsValidator>());
        services.TryAddSingleton(CreateSystem);
        return services;
    }

    /// <summary>
    /// As <see cref="AddAllocators(IServiceCollection, Action{AllocatorsOptions}?)"/>, with the options bound from
    /// <paramref name="section"/> (usually <c>configuration.GetSection(AllocatorsOptions.SectionName)</c>) and then
    /// changed by <paramref name="configure"/>. A key that names no option, or a value that does not convert, stops the
    /// host at startup too.
    /// </summary>
    public static IServiceCollection AddAllocators(this IServiceCollection services, IConfiguration section, Action<AllocatorsOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(section);
        services.AddOptions<AllocatorsOptions>().Bind(section, binder => binder.ErrorOnUnknownConfiguration = true);
        return services.AddAllocators(configure);
    }

    /// <summary>
    /// Makes Kestrel (and anything else resolving <see cref="IMemoryPoolFactory{T}"/>) rent its buffers from
    /// <see cref="NativeMemoryPool"/>s over the registered <see cref="MemorySystem"/> (registering it with
    /// <see cref="AddAllocators(IServiceCollection, Action{AllocatorsOptions}?)"/> if that was not called). The pools
    /// always run with <see cref="NativeMemoryPoolOptions.ExposeAsArrays"/>, since Kestrel's socket transport needs
    /// arrays: their buffers are pooled pinned arrays, counted in the pools' statistics and metrics.
    /// </summary>
    public static IServiceCollection AddAllocatorsMemoryPool(this IServiceCollection services, NativeMemoryPoolOptions? options = null)
    {
        services.AddAllocators();
        services.RemoveAll<IMemoryPoolFactory<byte>>();
        services.RemoveAll<NativeMemoryPoolFactory>();
        services.AddSingleton(provider => new NativeMemoryPoolFactory(provider.GetRequiredService<MemorySystem>(), options));
        services.AddSingleton<IMemoryPoolFactory<byte>>(provider => provider.GetRequiredService<NativeMemoryPoolFactory>());
        return services;
    }

    private static MemorySystem CreateSystem(IServiceProvider services)
    {
        AllocatorsOptions options = services.GetRequiredService<IOptions<AllocatorsOptions>>().Value;
        var system = new MemorySystem(options.ToMemorySystemOptions());
        MemorySystemLogging.Attach(system, services.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance);
        if (options.SwapFile is { } swapFile)
        {
            try
            {
                if (!File.Exists(swapFile)) SwapDevice.Mkswap(swapFile, (long)options.SwapFileSizeMiB << 20);
                system.Swapon(swapFile, options.SwapPriority);
            }
            catch
            {
                system.Dispose();
                throw;
            }
        }
        return system;
    }
}

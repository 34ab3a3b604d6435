using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Allocators.AspNetCore;

/// <summary>Registers a <see cref="MemorySystem"/> with dependency injection, configuration and logging.</summary>
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

    private static MemorySystem CreateSystem(IServiceProvider services)
    {
        AllocatorsOptions options = services.GetRequiredService<IOptions<AllocatorsOptions>>().Value;
        var system = new MemorySystem(options.ToMemorySystemOptions());
        MemorySystemLogging.Attach(system, services.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance);
        return system;
    }
}

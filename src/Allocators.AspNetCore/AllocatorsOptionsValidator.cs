using Allocators.Physical;
using Microsoft.Extensions.Options;

namespace Allocators.AspNetCore;

/// <summary>
/// Checks <see cref="AllocatorsOptions"/> with the core's own rules (<see cref="MemorySystemOptions.Validate"/>) and
/// names the failing configuration key, so that a bad value stops the host at startup instead of the first request.
/// </summary>
internal sealed class AllocatorsOptionsValidator : IValidateOptions<AllocatorsOptions>
{
    public ValidateOptionsResult Validate(string? name, AllocatorsOptions options)
    {
        try
        {
            options.ToMemorySystemOptions().Validate();
            return ValidateOptionsResult.Success;
        }
        catch (ArgumentException e)
        {
            if (e.ParamName is null) return ValidateOptionsResult.Fail($"{AllocatorsOptions.SectionName}: {e.Message}");
            string reason = e.Message.Replace($" (Parameter '{e.ParamName}')", "", StringComparison.Ordinal);
            return ValidateOptionsResult.Fail($"{AllocatorsOptions.SectionName}:{Key(e.ParamName)}: {reason}");
        }
        catch (PlatformNotSupportedException e)
        {
            return ValidateOptionsResult.Fail($"{AllocatorsOptions.SectionName}:{nameof(AllocatorsOptions.Backing)}: {e.Message}");
        }
    }

    /// <summary>The <see cref="AllocatorsOptions"/> key of a core option's name (sizes are renamed: they are in MiB here).</summary>
    private static string Key(string coreName) => coreName switch
    {
        nameof(PhysicalMemoryOptions.Size) => nameof(AllocatorsOptions.ArenaSizeMiB),
        nameof(PhysicalMemoryOptions.MaxSize) => nameof(AllocatorsOptions.MaxArenaSizeMiB),
        nameof(PhysicalMemoryOptions.SectionSize) => nameof(AllocatorsOptions.SectionSizeMiB),
        nameof(PhysicalMemoryOptions.LowMemoryLimit) => nameof(AllocatorsOptions.LowMemoryLimitMiB),
        _ => coreName,
    };
}

namespace Allocators.Slab;

/// <summary>
/// Whether the slab fast paths count themselves, like the kernel's <c>CONFIG_SLUB_STATS</c>: off unless the
/// <see cref="SwitchName"/> AppContext switch is set (runtimeconfig <c>configProperties</c>, or
/// <c>&lt;RuntimeHostConfigurationOption Include="Allocators.Slab.FastPathStatistics" Value="true" /&gt;</c> in the
/// app's project). Off, <see cref="KmemCacheStats.AllocFastPath"/> and <see cref="KmemCacheStats.FreeFastPath"/> stay 0;
/// every other counter (slow paths, refills, flushes, slabs, objects) counts either way.
/// </summary>
/// <remarks>
/// A count on the fast path is a read-modify-write of a per-thread counter on every allocation and free, a chain of
/// store-to-load forwards beside the fast path's own. The switch is read once per process, and the JIT compiles the fast paths with it as a
/// constant, so "off" costs nothing at all.
/// </remarks>
public static class SlabStatistics
{
    /// <summary>The AppContext switch that turns fast-path counting on.</summary>
    public const string SwitchName = "Allocators.Slab.FastPathStatistics";

    /// <summary>True when this process counts slab fast paths (see <see cref="SwitchName"/>).</summary>
    public static bool CountsFastPaths => Enabled;

    // A static readonly field of an initialised class is a constant to the JIT: SlabAllocator's constructor reads it
    // before any fast path is compiled.
    internal static readonly bool Enabled = AppContext.TryGetSwitch(SwitchName, out bool on) && on;
}

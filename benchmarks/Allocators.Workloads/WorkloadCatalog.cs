namespace Allocators.Workloads;

/// <summary>The suite's workloads in table order.</summary>
internal static class WorkloadCatalog
{
    /// <summary>Every workload.</summary>
    public static IReadOnlyList<Workload> All { get; } =
    [
        new Larson(),
        new XmallocTest(),
        new CacheScratch(),
        new CacheThrash(),
        new MStress(),
        new GlibcSimple(),
        new GlibcThread(),
        new AllocTest(),
        new BinaryTrees(),
    ];

    /// <summary>The workload called <paramref name="name"/>, or null.</summary>
    public static Workload? Find(string name) => All.FirstOrDefault(w => string.Equals(w.Name, name, StringComparison.OrdinalIgnoreCase));
}

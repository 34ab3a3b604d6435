using Allocators.Native;
using Allocators.Peers;

namespace Allocators.Benchmarks;

/// <summary>
/// Native allocators (glibc, mimalloc, jemalloc, tcmalloc) as benchmark columns that degrade gracefully: a library
/// that is not installed, or cannot be loaded, never becomes a benchmark case, so it cannot crash or fail a run.
/// </summary>
/// <remarks>
/// How to use it in a benchmark class (one column per available allocator, e.g. kmalloc vs malloc):
/// <code>
/// [ParamsSource(nameof(Allocators))] public string Allocator { get; set; } = "";
/// public static IEnumerable&lt;string&gt; Allocators => NativeAllocatorColumns.Available();
/// [GlobalSetup] public void Setup() => _lib = NativeAllocatorColumns.Get(Allocator);
/// [Benchmark] public void MallocFree() { var malloc = _lib.Malloc; var free = _lib.Free; ... }
/// </code>
/// Managed contenders (kmalloc, ArrayPool, ...) can share the same column: pass their names as
/// <c>managedFirst</c> to <see cref="Available"/> and dispatch on the name in the setup.
/// <c>[ParamsSource]</c> runs in the host process, which <see cref="StaticTls.RelaunchIfMissing"/> starts with the
/// jemalloc tunable, so host and benchmark processes agree on what is available. Program prints every library's
/// state at start (<see cref="PrintStatus"/>): <c>loaded ...</c>, or <c>skipped: absent: REASON</c> for the missing
/// ones; benchmarks/run.sh appends those lines to the saved summary.
/// </remarks>
public static class NativeAllocatorColumns
{
    /// <summary>Line prefix of <see cref="PrintStatus"/>; benchmarks/run.sh greps for it.</summary>
    public const string StatusPrefix = "native-allocator:";

    /// <summary>Every native allocator this project compares against, in display order.</summary>
    public static IReadOnlyList<string> Names { get; } = ["glibc", "mimalloc", "jemalloc", "tcmalloc"];

    /// <summary>The library of <paramref name="name"/> (loaded on first use), available or not.</summary>
    public static NativeAllocatorLibrary Library(string name) => name switch
    {
        "glibc" => NativeAllocators.Glibc,
        "mimalloc" => NativeAllocators.Mimalloc,
        "jemalloc" => NativeAllocators.Jemalloc,
        "tcmalloc" => NativeAllocators.Tcmalloc,
        _ => throw new ArgumentException($"Unknown native allocator '{name}'; known: {string.Join(", ", Names)}.", nameof(name)),
    };

    /// <summary>True when <paramref name="name"/> is a native allocator name (as opposed to a managed contender).</summary>
    public static bool IsNative(string name) => Names.Contains(name);

    /// <summary>
    /// Parameter values: <paramref name="managedFirst"/> as given, then the native allocators that are loaded in this
    /// process (all of <see cref="Names"/>, or only <paramref name="only"/> when given).
    /// </summary>
    public static IEnumerable<string> Available(IEnumerable<string>? managedFirst = null, IEnumerable<string>? only = null)
    {
        if (managedFirst is not null)
            foreach (string name in managedFirst) yield return name;
        foreach (string name in only ?? Names)
            if (Library(name).IsAvailable) yield return name;
    }

    /// <summary>The loaded library of <paramref name="name"/>; throws when it is absent (only reachable by forcing the parameter).</summary>
    public static NativeAllocatorLibrary Get(string name)
    {
        NativeAllocatorLibrary library = Library(name);
        return library.IsAvailable
            ? library
            : throw new InvalidOperationException($"{name} is not available: {library.Status}");
    }

    /// <summary>One line per native allocator: <c>loaded ...</c> or <c>skipped: absent: ...</c>.</summary>
    public static IEnumerable<string> StatusLines()
    {
        foreach (string name in Names)
        {
            NativeAllocatorLibrary library = Library(name);
            yield return library.IsAvailable
                ? $"{StatusPrefix} {name,-9} {library.Status} ({library.LibraryPath})"
                : $"{StatusPrefix} {name,-9} skipped: {library.Status}";
        }
    }

    /// <summary>Writes <see cref="StatusLines"/> to <paramref name="writer"/>.</summary>
    public static void PrintStatus(TextWriter writer)
    {
        foreach (string line in StatusLines()) writer.WriteLine(line);
    }
}

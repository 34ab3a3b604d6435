namespace Allocators;

/// <summary>Every live <see cref="MemorySystem"/> of the process, for metrics and inspection tools.</summary>
public static class MemorySystemRegistry
{
    private static readonly Lock s_lock = new();
    private static readonly List<WeakReference<MemorySystem>> s_systems = new();

    /// <summary>The live systems, oldest first.</summary>
    public static IReadOnlyList<MemorySystem> Systems
    {
        get
        {
            lock (s_lock)
            {
                var result = new List<MemorySystem>();
                foreach (var w in s_systems) if (w.TryGetTarget(out var s) && !s.IsDisposed) result.Add(s);
                return result;
            }
        }
    }

    internal static void Add(MemorySystem system)
    {
        lock (s_lock)
        {
            s_systems.RemoveAll(w => !w.TryGetTarget(out var s) || s.IsDisposed);
            s_systems.Add(new WeakReference<MemorySystem>(system));
        }
        AllocatorsMetrics.EnsureCreated();
    }

    internal static void Remove(MemorySystem system)
    {
        lock (s_lock) s_systems.RemoveAll(w => !w.TryGetTarget(out var s) || ReferenceEquals(s, system) || s.IsDisposed);
    }
}

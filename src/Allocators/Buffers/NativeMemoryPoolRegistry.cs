namespace Allocators.Buffers;

/// <summary>Live pools, for metrics.</summary>
internal static class NativeMemoryPoolRegistry
{
    private static readonly Lock s_lock = new();
    private static readonly List<WeakReference<NativeMemoryPool>> s_pools = new();

    public static void Add(NativeMemoryPool pool)
    {
        lock (s_lock)
        {
            s_pools.RemoveAll(w => !w.TryGetTarget(out _));
            s_pools.Add(new WeakReference<NativeMemoryPool>(pool));
        }
    }

    public static void Remove(NativeMemoryPool pool)
    {
        lock (s_lock) s_pools.RemoveAll(w => !w.TryGetTarget(out var p) || ReferenceEquals(p, pool));
    }

    public static List<NativeMemoryPool> Snapshot()
    {
        lock (s_lock)
        {
            var result = new List<NativeMemoryPool>();
            foreach (var w in s_pools) if (w.TryGetTarget(out var p)) result.Add(p);
            return result;
        }
    }
}

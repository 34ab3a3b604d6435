namespace Allocators.Buffers;

/// <summary>
/// Live pools, for metrics, and their names: each live pool's is unique (a taken name gets <c>-2</c>, <c>-3</c>, ...),
/// so two pools of one owner stay apart in metrics and messages. One lock; pools come and go rarely.
/// </summary>
internal static class NativeMemoryPoolRegistry
{
    private static readonly Lock s_lock = new();
    private static readonly List<WeakReference<NativeMemoryPool>> s_pools = new();
    private static readonly List<string> s_names = new(); // s_names[i] is the name of s_pools[i]

    /// <summary>Adds <paramref name="pool"/>; returns its unique name, made from <paramref name="name"/>.</summary>
    public static string Add(NativeMemoryPool pool, string name)
    {
        lock (s_lock)
        {
            for (int i = s_pools.Count - 1; i >= 0; i--)
            {
                if (s_pools[i].TryGetTarget(out _)) continue;
                s_pools.RemoveAt(i);
                s_names.RemoveAt(i);
            }
            string unique = name;
            for (int n = 2; s_names.Contains(unique); n++) unique = $"{name}-{n}";
            s_pools.Add(new WeakReference<NativeMemoryPool>(pool));
            s_names.Add(unique);
            return unique;
        }
    }

    public static void Remove(NativeMemoryPool pool)
    {
        lock (s_lock)
        {
            for (int i = s_pools.Count - 1; i >= 0; i--)
            {
                if (s_pools[i].TryGetTarget(out var p) && !ReferenceEquals(p, pool)) continue;
                s_pools.RemoveAt(i);
                s_names.RemoveAt(i);
            }
        }
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

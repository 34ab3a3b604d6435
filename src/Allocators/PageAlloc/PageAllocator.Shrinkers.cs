namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private Func<long>[] _shrinkers = [];
    private readonly Lock _shrinkerLock = new();
    [ThreadStatic] private static bool t_inShrinker;

    /// <summary>
    /// Registers a shrinker (register_shrinker): called when an allocation is about to fail so that caches above the
    /// page allocator give pages back. It returns the number of pages it freed. Shrinkers run on the allocating
    /// thread and must not allocate pages themselves.
    /// </summary>
    public void RegisterShrinker(Func<long> shrink)
    {
        lock (_shrinkerLock) _shrinkers = [.. _shrinkers, shrink];
    }

    /// <summary>Removes a shrinker added with <see cref="RegisterShrinker"/>.</summary>
    public void UnregisterShrinker(Func<long> shrink)
    {
        lock (_shrinkerLock) _shrinkers = Array.FindAll(_shrinkers, s => s != shrink);
    }

    private long RunShrinkers()
    {
        if (t_inShrinker) return 0;
        Func<long>[] shrinkers = _shrinkers;
        if (shrinkers.Length == 0) return 0;
        t_inShrinker = true;
        try
        {
            long freed = 0;
            foreach (var shrink in shrinkers) freed += shrink();
            if (freed > 0) DrainAllPages();
            return freed;
        }
        finally
        {
            t_inShrinker = false;
        }
    }
}

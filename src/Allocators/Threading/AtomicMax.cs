namespace Allocators.Threading;

/// <summary>Raises a shared maximum without a lock (Interlocked has no max): a value already at or above stays.</summary>
internal static class AtomicMax
{
    /// <summary>Sets <paramref name="location"/> to <paramref name="value"/> unless it already holds as much or more.</summary>
    public static void Raise(ref long location, long value)
    {
        long seen;
        while (value > (seen = Volatile.Read(ref location)) && Interlocked.CompareExchange(ref location, value, seen) != seen) { }
    }
}

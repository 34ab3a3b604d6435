using Allocators.Common;

namespace Allocators.PageAlloc;

/// <summary>
/// Misuse reports of the whole system: every check that refuses a call as misuse or corruption (double free, foreign,
/// interior or wrong-cache pointer, wrong order; page, slab and vmalloc layers alike) hands its exception here just
/// before throwing it, so that logs and traces see misuse even when the caller catches and swallows the exception.
/// Only throw paths come here: the checks that pass cost nothing more.
/// </summary>
public sealed unsafe partial class PageAllocator
{
    private long _misuseReports;

    /// <summary>
    /// Raised on the offending thread with each <see cref="MemoryCorruptionException"/> any layer of this system is
    /// about to throw (before it is thrown, so it has no stack trace yet). Some checks run under a slab node's lock, as
    /// <see cref="Slab.SlabAllocator.CorruptionDetected"/>'s do: handlers should record or log, not throw or allocate
    /// from this system.
    /// </summary>
    public event Action<MemoryCorruptionException>? MisuseDetected;

    /// <summary>Misuse and corruption refused with a <see cref="MemoryCorruptionException"/>, in every layer.</summary>
    public long MisuseReports => Interlocked.Read(ref _misuseReports);

    /// <summary>Counts and reports <paramref name="e"/>; the caller throws it.</summary>
    /// <returns><paramref name="e"/>.</returns>
    internal MemoryCorruptionException ReportMisuse(MemoryCorruptionException e)
    {
        Interlocked.Increment(ref _misuseReports);
        MisuseDetected?.Invoke(e);
        AllocatorsEventSource.Log.MisuseFound(Id, e);
        return e;
    }
}

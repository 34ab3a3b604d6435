namespace Allocators.Workloads.Traces;

/// <summary>
/// Belady's MIN, the offline optimum: on a miss with every frame used, evict the resident page whose next use is
/// farthest in the future (or never comes). No policy that only sees the past can fault less on the same trace and
/// memory size, so it is the denominator of the "faults against the optimum" ratio.
/// </summary>
/// <remarks>
/// L. A. Belady, "A study of replacement algorithms for a virtual-storage computer", IBM Systems Journal 5(2), 1966;
/// optimality proved by Mattson, Gecsei, Slutz and Traiger, "Evaluation techniques for storage hierarchies", IBM
/// Systems Journal 9(2), 1970. O(n log n): next-use indices are precomputed in one backward pass, and the resident
/// pages sit in a max-heap on next use with lazy deletion (a hit pushes the page again with its new next use; stale
/// entries are skipped when they surface).
/// </remarks>
internal sealed class BeladyMin : IPagedMemory
{
    private readonly int[] _trace;
    private readonly int[] _nextUse;
    private readonly int _frames;
    private readonly Dictionary<int, int> _residentNextUse = []; // page -> its current next use
    private readonly PriorityQueue<int, int> _byNextUse = new(Comparer<int>.Create((a, b) => b.CompareTo(a)));
    private int _position;

    /// <summary>MIN with <paramref name="frames"/> frames, for exactly <paramref name="trace"/> (it must know the future).</summary>
    public BeladyMin(int[] trace, int frames)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        _trace = trace;
        _frames = frames;
        _nextUse = NextUses(trace);
    }

    /// <inheritdoc/>
    public string Name => "MIN";

    /// <inheritdoc/>
    public long MajorFaults { get; private set; }

    /// <summary>Faults of MIN with <paramref name="frames"/> frames on <paramref name="trace"/>.</summary>
    public static long Faults(int[] trace, int frames)
    {
        var min = new BeladyMin(trace, frames);
        foreach (int page in trace) min.Touch(page, write: false);
        return min.MajorFaults;
    }

    /// <summary>For each position, the next position touching the same page, or <see cref="int.MaxValue"/> for never.</summary>
    public static int[] NextUses(int[] trace)
    {
        var next = new int[trace.Length];
        var seen = new Dictionary<int, int>();
        for (int i = trace.Length - 1; i >= 0; i--)
        {
            next[i] = seen.TryGetValue(trace[i], out int j) ? j : int.MaxValue;
            seen[trace[i]] = i;
        }
        return next;
    }

    /// <inheritdoc/>
    /// <exception cref="InvalidOperationException">The touches leave the trace MIN was built for.</exception>
    public void Touch(int page, bool write)
    {
        if (_position >= _trace.Length || _trace[_position] != page)
            throw new InvalidOperationException($"MIN was built for another trace: access {_position} is not page {page}");
        int next = _nextUse[_position++];
        if (!_residentNextUse.ContainsKey(page))
        {
            MajorFaults++;
            if (_residentNextUse.Count == _frames) EvictFarthest();
        }
        _residentNextUse[page] = next;
        _byNextUse.Enqueue(page, next);
    }

    private void EvictFarthest()
    {
        while (_byNextUse.TryDequeue(out int page, out int next))
        {
            // Only the entry carrying a resident page's current next use counts; older ones were superseded by a hit.
            if (_residentNextUse.TryGetValue(page, out int current) && current == next)
            {
                _residentNextUse.Remove(page);
                return;
            }
        }
        throw new InvalidOperationException("MIN lost track of its resident pages");
    }
}

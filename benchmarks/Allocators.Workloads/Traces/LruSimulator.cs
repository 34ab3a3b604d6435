namespace Allocators.Workloads.Traces;

/// <summary>
/// Plain LRU over a fixed number of frames: on a miss with every frame used, the least recently touched page goes.
/// O(1) per touch (a hash map to frames and a doubly linked recency list kept in arrays, no allocation after warm-up).
/// </summary>
/// <remarks>The reference point the reclaim issue asks to beat on the loop: Linux's two-list LRU exists because of it.</remarks>
internal sealed class LruSimulator : IPagedMemory
{
    private const int None = -1;
    private readonly Dictionary<int, int> _frameOf = [];
    private readonly int[] _page;
    private readonly int[] _prev;
    private readonly int[] _next;
    private int _used;
    private int _head = None; // most recently used
    private int _tail = None; // least recently used

    /// <summary>An empty memory of <paramref name="frames"/> frames.</summary>
    public LruSimulator(int frames)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        _page = new int[frames];
        _prev = new int[frames];
        _next = new int[frames];
    }

    /// <inheritdoc/>
    public string Name => "LRU";

    /// <inheritdoc/>
    public long MajorFaults { get; private set; }

    /// <summary>Faults of LRU with <paramref name="frames"/> frames on <paramref name="trace"/>.</summary>
    public static long Faults(int[] trace, int frames)
    {
        var lru = new LruSimulator(frames);
        foreach (int page in trace) lru.Touch(page, write: false);
        return lru.MajorFaults;
    }

    /// <inheritdoc/>
    public void Touch(int page, bool write)
    {
        if (_frameOf.TryGetValue(page, out int frame))
        {
            if (frame != _head)
            {
                Unlink(frame);
                PushHead(frame);
            }
            return;
        }
        MajorFaults++;
        if (_used < _page.Length)
        {
            frame = _used++;
        }
        else
        {
            frame = _tail;
            Unlink(frame);
            _frameOf.Remove(_page[frame]);
        }
        _page[frame] = page;
        _frameOf[page] = frame;
        PushHead(frame);
    }

    private void Unlink(int frame)
    {
        int p = _prev[frame], n = _next[frame];
        if (p == None) _head = n; else _next[p] = n;
        if (n == None) _tail = p; else _prev[n] = p;
    }

    private void PushHead(int frame)
    {
        _prev[frame] = None;
        _next[frame] = _head;
        if (_head != None) _prev[_head] = frame;
        _head = frame;
        if (_tail == None) _tail = frame;
    }
}

using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Workloads.Traces;

/// <summary>
/// The whole memory system as a paged memory: one process maps the trace's footprint as private anonymous memory on a
/// fixed arena of the given number of pages, with a real swap file beside it; every touch is a read or write through
/// the software MMU, so page faults, LRU reclaim (kswapd and direct), swap-out and swap-in all run as they would for
/// a user. Each page carries a stamp that is checked on every read.
/// </summary>
/// <remarks>
/// The arena holds <c>frames</c> pages, but the zones keep their watermark reserve free and page tables take a few, so
/// fewer pages than the simulators' frames are resident (<see cref="ResidentLimit"/>).
/// </remarks>
internal sealed class SwappingAddressSpace : IPagedMemory, IDisposable
{
    private const int PageSize = 4096;
    private readonly MemorySystem _system;
    private readonly AddressSpace _mm;
    private readonly string _swapPath;
    private readonly ulong _base;
    private readonly long[] _stamps;
    private readonly bool[] _touched;
    private long _firstTouches;

    /// <summary>An arena of <paramref name="frames"/> pages (rounded up to 4 MiB blocks) under a mapping of <paramref name="footprint"/> pages.</summary>
    public SwappingAddressSpace(int frames, int footprint)
    {
        long arena = ((long)frames * PageSize + PhysicalMemoryOptions.BlockBytes - 1) / PhysicalMemoryOptions.BlockBytes * PhysicalMemoryOptions.BlockBytes;
        _system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = arena },
            PageAllocator = new PageAllocatorOptions { AutoGrow = false, ReleaseFreeMemory = false },
        });
        _swapPath = Path.Combine(Path.GetTempPath(), $"allocators-traces-{Environment.ProcessId}-{Guid.NewGuid():N}.swap");
        SwapDevice.Mkswap(_swapPath, ((long)footprint + 1024) * PageSize);
        _system.Swapon(_swapPath);
        _mm = _system.CreateAddressSpace();
        _base = _mm.Mmap(0, (ulong)footprint * PageSize, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        _stamps = new long[footprint];
        _touched = new bool[footprint];
        long high = 0;
        foreach (var zone in _system.Pages.Zones) high += zone.WatermarkHigh;
        ResidentLimit = (int)(_system.Pages.ManagedPages - high);
    }

    /// <inheritdoc/>
    public string Name => "Allocators (reclaim + swap)";

    /// <summary>About how many pages can be resident at once: the arena less the free pages kswapd keeps.</summary>
    public int ResidentLimit { get; }

    /// <summary>
    /// Pages read from swap (pswpin: swap-in faults and readahead alike, so readahead cannot hide reads) plus first
    /// touches: a first touch is a demand-zero fault here and a cold miss in the simulators.
    /// </summary>
    public long MajorFaults => _system.Pages.ReclaimCounters.PagesSwappedIn + _firstTouches;

    /// <inheritdoc/>
    public long PagesOut => _system.Pages.ReclaimCounters.PagesSwappedOut;

    /// <summary>Reads that found another stamp than the last write left (must stay 0).</summary>
    public long StampErrors { get; private set; }

    /// <inheritdoc/>
    public void Touch(int page, bool write)
    {
        ulong va = _base + (ulong)page * PageSize;
        if (!_touched[page])
        {
            _touched[page] = true;
            _firstTouches++;
        }
        if (write)
        {
            long stamp = _stamps[page] + 1 + ((long)page << 32);
            _mm.Write(va, stamp);
            _stamps[page] = stamp;
        }
        else if (_mm.Read<long>(va) != _stamps[page])
        {
            StampErrors++;
        }
    }

    /// <summary>Tears the process and the system down and deletes the swap file.</summary>
    public void Dispose()
    {
        _mm.Dispose();
        _system.Dispose();
        File.Delete(_swapPath);
    }
}

using System.Runtime.InteropServices;
using System.Text;
using Allocators.Common;
using Allocators.Native;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Kfence;

/// <summary>
/// Guarded sampling of slab allocations (the kernel's KFENCE, mm/kfence): every <see cref="SampleInterval"/> (or one in
/// about <see cref="SampleRate"/>) one slab or kmalloc allocation of at most a page is served from a pool where each object has a data page to itself between
/// two guard pages that the host maps <c>PROT_NONE</c> (real <c>mprotect</c>), so an access past either end through a
/// raw pointer faults at the faulting instruction, and a freed object's page is made inaccessible too, so a use after
/// free faults. The object sits at the start or the end of its page at random; the rest of the page holds a canary
/// that is checked when the object is freed.
/// </summary>
/// <remarks>
/// <para><b>Sampling</b> is timed, as in the kernel (<c>kfence.sample_interval</c> in milliseconds): a timer arms the
/// pool and runs the slab layer's request, which sets <see cref="Threading.ThreadCacheHeader.SampleBit"/> in every slab
/// thread context; the word the fast paths already test then sends each thread's next allocation to its slow path,
/// where the first one to find the pool armed takes the sample. The pool sits below the slab layer and knows caches
/// only by an opaque id and name. Between samples the fast paths run exactly the code they run without KFENCE, so the
/// unsampled path costs the same. <b>Counted</b> sampling (<see cref="SampleRate"/>, GWP-ASan's 1 in N) has no timer:
/// each thread entry of a cache counts its allocations down (<see cref="Slab.SlabCpu.SampleMode"/>) and the one that
/// reaches 0 sets its own thread's sample bit; the pool is then always armed. With the rate given as a boot parameter
/// (<c>ALLOCATORS_CHECKS=kfence.sample_rate=N</c>) the fast paths count inline, a decrement per allocation, like
/// GWP-ASan; a rate given only in code counts in the hardened paths, a call per allocation and free.</para>
/// <para><b>Faults</b>: .NET turns a fault in managed code into a fatal <see cref="AccessViolationException"/> that no
/// handler can catch. On Linux x86-64 a small signal hook (<see cref="KfenceSignalHook"/>) first writes the KFENCE
/// report of the object the faulting address belongs to (prepared when the object was allocated and freed) to
/// standard error, then hands the signal to the runtime, which prints the managed stack and ends the process.</para>
/// <para><b>Lock</b>: <c>_lock</c> guards the slot metadata and the free queue; it is taken only by sampled
/// allocations, frees of pool objects and views, never by the fast paths. <b>Invariants</b>: every slot is free or
/// allocated or freed; free-queue length = slots not allocated; an allocated slot's data page is read-write, every
/// other pool page is <c>PROT_NONE</c>.</para>
/// </remarks>
public sealed unsafe class Kfence
{
    private const int PageSize = PageFrame.PageSize;
    private const int TextStride = 1024;
    private const byte StateFree = 0, StateAllocated = 1, StateFreed = 2;

    [StructLayout(LayoutKind.Sequential)]
    private struct Meta
    {
        public nuint Address;     // the object
        public int Size;
        public byte State;
        public nint Cache;        // the slab layer's id of the cache it came from
    }

    private readonly PageAllocator _pages;
    private readonly Action _requestSample;
    private readonly string[] _cacheNames;    // per slot, for reports
    private readonly PageFrame* _block;
    private readonly int _order;
    private readonly byte* _pool;          // host address of page 0 (a guard page)
    private readonly nuint _poolBytes;
    private readonly Meta* _meta;
    private readonly byte* _text;          // one report per object, TextStride bytes each, NUL-terminated
    private readonly int* _queue;          // free slots, oldest first (a ring)
    private int _queueHead, _queueCount;
    private readonly Lock _lock = new();
    private readonly Timer? _timer;
    private readonly List<KfenceReport> _reports = new();
    private int _armed;
    private long _allocations, _frees, _bugs;
    private bool _disposed;

    /// <summary>Builds the pool on <paramref name="pages"/>; <paramref name="requestSample"/> sends every thread's next allocation to the slow path.</summary>
    internal Kfence(PageAllocator pages, CheckedModeOptions checks, Action requestSample)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("KFENCE's guard pages need Linux (mprotect on the arena).");
        _pages = pages;
        _requestSample = requestSample;
        Objects = checks.KfenceObjects;
        SampleInterval = TimeSpan.FromMilliseconds(checks.KfenceSampleInterval);
        SampleRate = checks.KfenceSampleRate;
        int pages2 = 2 * Objects + 1; // guard, object 0, guard, ..., object N-1, guard
        _order = System.Numerics.BitOperations.Log2(System.Numerics.BitOperations.RoundUpToPowerOf2((uint)pages2));
        _block = pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, _order);
        if (_block == null) throw new OutOfMemoryException($"KFENCE: no order-{_order} block for a pool of {Objects} objects.");
        _pool = (byte*)pages.AddressOf(_block);
        _poolBytes = (nuint)PageSize << _order;
        _meta = (Meta*)NativeMemory.AllocZeroed((nuint)Objects, (nuint)sizeof(Meta));
        _text = (byte*)NativeMemory.AllocZeroed((nuint)Objects, TextStride);
        _queue = (int*)NativeMemory.Alloc((nuint)Objects, sizeof(int));
        for (int i = 0; i < Objects; i++) _queue[i] = i;
        _queueCount = Objects;
        _cacheNames = new string[Objects];
        Protect(_pool, _poolBytes, Libc.ProtNone);
        KfenceSignalHook.Add((nuint)_pool, _poolBytes, Objects, _text, TextStride);
        if (SampleRate == 0) _timer = new Timer(static s => ((Kfence)s!).Arm(), this, SampleInterval, SampleInterval);
    }

    /// <summary>Objects in the pool (<see cref="CheckedModeOptions.KfenceObjects"/>).</summary>
    public int Objects { get; }

    /// <summary>Time between samples (<see cref="CheckedModeOptions.KfenceSampleInterval"/> milliseconds).</summary>
    public TimeSpan SampleInterval { get; }

    /// <summary>One allocation in about this many is sampled (<see cref="CheckedModeOptions.KfenceSampleRate"/>); 0 when sampling is timed.</summary>
    public int SampleRate { get; }

    /// <summary>Allocations served from the pool so far.</summary>
    public long Allocations => Interlocked.Read(ref _allocations);

    /// <summary>Pool objects freed so far.</summary>
    public long Frees => Interlocked.Read(ref _frees);

    /// <summary>Pool objects allocated and not freed.</summary>
    public int InUse { get { lock (_lock) return Objects - _queueCount; } }

    /// <summary>Bugs found at free (canary overwritten, invalid or double free).</summary>
    public long BugsFound => Interlocked.Read(ref _bugs);

    /// <summary>Every report so far, oldest first.</summary>
    public IReadOnlyList<KfenceReport> Reports { get { lock (_reports) return _reports.ToArray(); } }

    /// <summary>Raised for every report, on the thread that found the bug.</summary>
    public event Action<KfenceReport>? BugFound;

    /// <summary>True while a timed sample is due (read by the slow path before it captures a call site).</summary>
    internal bool Armed => Volatile.Read(ref _armed) != 0;

    /// <summary>True when <paramref name="p"/> lies in the guarded pool (is_kfence_address).</summary>
    public bool Contains(void* p) => (nuint)p - (nuint)_pool < _poolBytes;

    /// <summary>
    /// Arms the pool for the next allocation now, as the timer does every <see cref="SampleInterval"/>. A counting pool
    /// (<see cref="SampleRate"/>) samples only on its counts: there this does nothing.
    /// </summary>
    public void Arm()
    {
        if (Volatile.Read(ref _disposed) || SampleRate > 0) return;
        // Requested again while still armed: a thread that registered since the last request has no bit yet.
        Volatile.Write(ref _armed, 1);
        _requestSample();
    }

    /// <summary>
    /// Serves <paramref name="size"/> bytes, aligned to <paramref name="align"/> at the page's end, for cache
    /// <paramref name="cache"/> from the pool when it is armed and has a free object (kfence_alloc); null otherwise.
    /// Called from the slab slow path once a thread saw the sample bit; <paramref name="site"/> is its caller.
    /// </summary>
    internal void* TryAlloc(nint cache, string cacheName, int size, int align, Gfp gfp, string site)
    {
        // Timed: the first thread to find the pool armed takes the sample. Counted: the count already chose this one.
        if (size > PageSize || (SampleRate == 0 && (Volatile.Read(ref _armed) == 0 || Interlocked.Exchange(ref _armed, 0) == 0))) return null;
        int slot;
        nuint obj;
        lock (_lock)
        {
            if (_disposed || _queueCount == 0) return null;
            slot = _queue[_queueHead];
            _queueHead = (_queueHead + 1) % Objects;
            _queueCount--;
            byte* page = DataPage(slot);
            Protect(page, PageSize, Libc.ProtRead | Libc.ProtWrite);
            // Left or right at random: the guard page before catches underflows, the one after overflows.
            obj = Random.Shared.Next(2) == 0 ? (nuint)page : ((nuint)page + (nuint)(PageSize - size)) & ~(nuint)(align - 1);
            FillCanary(page, obj, size);
            Meta* m = _meta + slot;
            m->Address = obj;
            m->Size = size;
            m->State = StateAllocated;
            m->Cache = cache;
            _cacheNames[slot] = cacheName;
            WriteText(slot, Describe(slot, cacheName, "allocated", site));
        }
        Interlocked.Increment(ref _allocations);
        if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear((void*)obj, (nuint)size);
        return (void*)obj;
    }

    /// <summary>
    /// Frees a pool object (kfence_free): checks it is a live object's start, checks the canary, makes its page
    /// inaccessible and queues the slot last for reuse, zeroing the object first when <paramref name="zero"/>
    /// (init_on_free). Returns the id of the cache it came from.
    /// </summary>
    /// <exception cref="MemoryCorruptionException">Not a live pool object's start; nothing changes.</exception>
    internal nint Free(void* p, string function, string site, bool zero)
    {
        nint owner;
        lock (_lock)
        {
            int slot = SlotOf(p);
            Meta* m = _meta + slot;
            if (m->State != StateAllocated || m->Address != (nuint)p)
            {
                string what = m->State == StateFreed && m->Address == (nuint)p ? "double free" : "invalid free";
                Report(slot, what, p, site, $"{function}: 0x{(nuint)p:x} is not a live KFENCE object ({what}).");
                throw new MemoryCorruptionException($"{function}: 0x{(nuint)p:x} is not a live KFENCE object ({what}).", (nuint)p);
            }
            owner = m->Cache;
            byte* page = DataPage(slot);
            nuint bad = FindCanaryDamage(page, m->Address, m->Size);
            if (bad != 0) Report(slot, "memory corruption", (void*)bad, site, $"Corrupted memory at 0x{bad:x} (canary of the object at 0x{m->Address:x}, size {m->Size})");
            if (zero) NativeMemory.Clear(p, (nuint)m->Size);
            Protect(page, PageSize, Libc.ProtNone);
            m->State = StateFreed;
            AppendText(slot, $"freed by task {Environment.CurrentManagedThreadId} ({Thread.CurrentThread.Name ?? "unnamed"}) at {site}\n");
            _queue[(_queueHead + _queueCount) % Objects] = slot;
            _queueCount++;
        }
        Interlocked.Increment(ref _frees);
        return owner;
    }

    /// <summary>The size of the live pool object at <paramref name="p"/> (ksize of a KFENCE object is its requested size).</summary>
    internal nuint Size(void* p, string function)
    {
        lock (_lock)
        {
            Meta* m = _meta + SlotOf(p);
            if (m->State != StateAllocated || m->Address != (nuint)p)
                throw new MemoryCorruptionException($"{function}: 0x{(nuint)p:x} is not a live KFENCE object.", (nuint)p);
            return (nuint)m->Size;
        }
    }

    /// <summary>The cache id of the pool object that starts at <paramref name="p"/> (live or freed), or 0.</summary>
    internal nint CacheOf(void* p)
    {
        if (!Contains(p)) return 0;
        lock (_lock)
        {
            Meta* m = _meta + SlotOf(p);
            return m->State != StateFree && m->Address == (nuint)p ? m->Cache : 0;
        }
    }

    /// <summary>The pool object that <paramref name="p"/> belongs to or guards, -1 outside the pool.</summary>
    internal int SlotOf(void* p)
    {
        if (!Contains(p)) return -1;
        nuint off = (nuint)p - (nuint)_pool;
        nuint page = off / PageSize;
        nuint slot = (page & 1) != 0 ? page / 2 : (off % PageSize < PageSize / 2 && page > 0 ? page / 2 - 1 : page / 2);
        return (int)Math.Min(slot, (nuint)(Objects - 1));
    }

    private byte* DataPage(int slot) => _pool + (nuint)(2 * slot + 1) * PageSize;

    // The kernel's KFENCE_CANARY_PATTERN_U8: 0xaa with the address's low bits mixed in.
    private static byte Canary(nuint address) => (byte)(0xaa ^ (address & 7));

    private static void FillCanary(byte* page, nuint obj, int size)
    {
        for (byte* b = page; b < page + PageSize; b++)
        {
            if ((nuint)b - obj < (nuint)size) { b = (byte*)obj + size - 1; continue; }
            *b = Canary((nuint)b);
        }
    }

    private static nuint FindCanaryDamage(byte* page, nuint obj, int size)
    {
        for (byte* b = page; b < page + PageSize; b++)
        {
            if ((nuint)b - obj < (nuint)size) { b = (byte*)obj + size - 1; continue; }
            if (*b != Canary((nuint)b)) return (nuint)b;
        }
        return 0;
    }

    private string Describe(int slot, string cache, string verb, string site)
    {
        Meta* m = _meta + slot;
        return $"kfence-#{slot}: 0x{m->Address:x}-0x{m->Address + (nuint)m->Size - 1:x}, size={m->Size}, cache={cache}\n\n" +
               $"{verb} by task {Environment.CurrentManagedThreadId} ({Thread.CurrentThread.Name ?? "unnamed"}) at {site}\n";
    }

    private void WriteText(int slot, string text)
    {
        var dest = new Span<byte>(_text + slot * TextStride, TextStride - 1);
        dest.Clear();
        Encoding.UTF8.TryGetBytes(text.AsSpan(0, Math.Min(text.Length, (TextStride - 1) / 4)), dest, out _);
    }

    private void AppendText(int slot, string more)
    {
        string text = ReportTextLocked(slot);
        WriteText(slot, text + more);
    }

    private string ReportTextLocked(int slot) => Marshal.PtrToStringUTF8((nint)(_text + slot * TextStride)) ?? "";

    private void Report(int slot, string problem, void* address, string site, string detail)
    {
        Interlocked.Increment(ref _bugs);
        string text = $"BUG: KFENCE: {problem} in {site}\n\n{detail}\n\n{ReportTextLocked(slot)}";
        var report = new KfenceReport(_cacheNames[slot] ?? "kfence", problem, (nuint)address, text);
        lock (_reports) _reports.Add(report);
        BugFound?.Invoke(report);
    }

    private static void Protect(void* address, nuint bytes, int prot)
    {
        if (Libc.Mprotect(address, bytes, prot) != 0)
            throw new InvalidOperationException($"KFENCE: mprotect(0x{(nuint)address:x}, {bytes}, {prot}) failed: errno {Marshal.GetLastPInvokeError()}.");
    }

    /// <summary>
    /// Stops sampling, makes the pool accessible again and gives it back (objects still allocated are dropped with it);
    /// the slab allocator's dispose runs it.
    /// </summary>
    internal void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _timer?.Dispose();
        KfenceSignalHook.Remove((nuint)_pool);
        Protect(_pool, _poolBytes, Libc.ProtRead | Libc.ProtWrite);
        _pages.FreePages(_block, _order);
        NativeMemory.Free(_meta);
        NativeMemory.Free(_text);
        NativeMemory.Free(_queue);
    }
}

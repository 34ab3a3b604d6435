using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Allocators.Native;

namespace Allocators.Kasan;

/// <summary>
/// Generic KASAN's shadow memory for one arena: one byte per 8-byte granule of its physical address space (sized for
/// the arena's largest size, so hotplugged sections are covered), 0 = the whole granule accessible, 1..7 = only its
/// first k bytes, a <see cref="KasanShadowCode"/> = poisoned. Every layer keeps it in step with what it hands out, and
/// every access through the library is checked against it (<see cref="Check"/>); a bad one is reported in KASAN's
/// format (<see cref="Reports"/>, <see cref="ReportAdded"/>) and throws a <see cref="KasanException"/> without being performed.
/// </summary>
/// <remarks>
/// The shadow is an anonymous mapping stored inverted (byte ^ 0xFF), so the untouched, zero-filled shadow of a page the
/// arena never handed out reads as <see cref="KasanShadowCode.PageFree"/> and costs nothing until it is written.
/// Thread-safe: shadow bytes are written by the owner of the memory they describe; reports are kept under a lock.
/// As in the kernel a bug is reported once (per address, type and access kind) unless <see cref="MultiShot"/> is set; the access throws every time.
/// </remarks>
public sealed unsafe class KasanShadow
{
    private const int GranuleShift = 3;
    private const int Granule = 1 << GranuleShift;
    private readonly byte* _shadow;
    private readonly nuint _shadowBytes;
    private readonly byte* _base;                 // host address of physical 0 when the arena is contiguous, else null
    private readonly ulong _spanBytes;            // physical bytes covered
    private readonly Func<nint, long> _virtToPhys; // any other arena: host address to physical, -1 outside
    private readonly List<KasanReport> _reports = new();
    private readonly HashSet<(nuint, string, bool)> _reported = new();
    private readonly List<Func<nuint, string?>> _describers = new();

    /// <summary>Creates the shadow of an arena of <paramref name="spanBytes"/> physical bytes.</summary>
    /// <param name="contiguousBase">Host address of physical address 0 when the arena is one host range; otherwise null.</param>
    /// <param name="spanBytes">Physical bytes the arena can ever span.</param>
    /// <param name="virtToPhys">Host address to physical address (-1 outside the arena), used when <paramref name="contiguousBase"/> is null.</param>
    /// <param name="redZone">Red zone bytes after each slab object and large kmalloc.</param>
    /// <param name="quarantineBytes">Bytes of freed memory the quarantine holds back.</param>
    internal KasanShadow(byte* contiguousBase, ulong spanBytes, Func<nint, long> virtToPhys, int redZone, long quarantineBytes)
    {
        _base = contiguousBase;
        _spanBytes = spanBytes;
        _virtToPhys = virtToPhys;
        RedZone = redZone;
        _shadowBytes = (nuint)((spanBytes + Granule - 1) >> GranuleShift);
        _shadow = (byte*)HostMemory.Reserve(_shadowBytes, HostMemory.PageSize);
        HostMemory.MapAnonymousFixed(_shadow, _shadowBytes);
        Quarantine = new KasanQuarantine(quarantineBytes);
    }

    /// <summary>Frees the shadow once nothing can reach it (a call racing the arena's dispose may still read it).</summary>
    ~KasanShadow() => HostMemory.Release(_shadow, _shadowBytes);

    /// <summary>Red zone bytes after every slab object and large kmalloc (<c>CheckedModeOptions.KasanRedZone</c>).</summary>
    public int RedZone { get; }

    /// <summary>Freed memory waiting before reuse (KASAN's quarantine).</summary>
    public KasanQuarantine Quarantine { get; }

    /// <summary>Report every bad access, not just the first at each address (kasan_multi_shot).</summary>
    public bool MultiShot { get; set; }

    /// <summary>Every report so far, oldest first.</summary>
    public IReadOnlyList<KasanReport> Reports { get { lock (_reports) return _reports.ToArray(); } }

    /// <summary>Raised after a report is added (on the thread that made the bad access).</summary>
    public event Action<KasanReport>? ReportAdded;

    /// <summary>The library's name of the code that made an access, for the report (set by the slab layer).</summary>
    internal Func<string>? Caller { get; set; }

    /// <summary>Adds a source of "the buggy address belongs to ..." text: null when the address is not its memory.</summary>
    internal void AddDescriber(Func<nuint, string?> describer)
    {
        lock (_describers) _describers.Insert(0, describer);
    }

    /// <summary>The shadow byte of the granule holding <paramref name="address"/>, or null outside the arena.</summary>
    public byte? ShadowOf(void* address)
    {
        long pa = PhysOf(address);
        return pa < 0 ? null : Get((ulong)pa >> GranuleShift);
    }

    /// <summary>Marks <paramref name="size"/> bytes from <paramref name="address"/> (granule aligned) with <paramref name="code"/>, rounded up to whole granules (kasan_poison).</summary>
    public void Poison(void* address, nuint size, byte code)
    {
        long pa = PhysOf(address);
        if (pa < 0 || size == 0) return;
        if ((pa & (Granule - 1)) != 0) throw new ArgumentException($"kasan_poison: 0x{(nuint)address:x} is not {Granule}-byte aligned.", nameof(address));
        ulong first = (ulong)pa >> GranuleShift;
        ulong count = Math.Min(((ulong)size + Granule - 1) >> GranuleShift, (_spanBytes >> GranuleShift) - first);
        Fill(first, count, (byte)(code ^ 0xFF));
    }

    /// <summary>Makes exactly <paramref name="size"/> bytes from <paramref name="address"/> (granule aligned) accessible: a partial last granule gets its length (kasan_unpoison).</summary>
    public void Unpoison(void* address, nuint size)
    {
        long pa = PhysOf(address);
        if (pa < 0 || size == 0) return;
        if ((pa & (Granule - 1)) != 0) throw new ArgumentException($"kasan_unpoison: 0x{(nuint)address:x} is not {Granule}-byte aligned.", nameof(address));
        ulong first = (ulong)pa >> GranuleShift;
        ulong whole = (ulong)size >> GranuleShift;
        Fill(first, whole, 0xFF);
        int rest = (int)((ulong)size & (Granule - 1));
        if (rest != 0) _shadow[first + whole] = (byte)(rest ^ 0xFF);
    }

    private void Fill(ulong first, ulong count, byte stored)
    {
        while (count > 0)
        {
            int n = (int)Math.Min(count, int.MaxValue);
            new Span<byte>(_shadow + first, n).Fill(stored);
            first += (ulong)n;
            count -= (ulong)n;
        }
    }

    /// <summary>
    /// Checks an access of <paramref name="size"/> bytes at <paramref name="address"/> made by <paramref name="function"/>
    /// (kasan_check_read/kasan_check_write): nothing when every byte is accessible or the address is not in the arena;
    /// otherwise reports and throws.
    /// </summary>
    /// <exception cref="KasanException">A byte of the range is poisoned; the caller must not perform the access.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Check(void* address, nuint size, bool write, string function)
    {
        if (size == 0) return;
        long pa = PhysOf(address);
        if (pa < 0) return;
        ulong bad = FirstBad((ulong)pa, Math.Min((ulong)size, _spanBytes - (ulong)pa));
        if (bad != ulong.MaxValue) Fail(address, (nuint)((ulong)address + (bad - (ulong)pa)), size, write, function, null);
    }

    /// <summary>True when every byte of the range is accessible or the range is not in the arena (<see cref="Check"/> without the report).</summary>
    internal bool IsAccessible(void* address, nuint size)
    {
        if (size == 0) return true;
        long pa = PhysOf(address);
        return pa < 0 || FirstBad((ulong)pa, Math.Min((ulong)size, _spanBytes - (ulong)pa)) == ulong.MaxValue;
    }

    /// <summary>The physical address of the first inaccessible byte of [pa, pa + size), or ulong.MaxValue.</summary>
    private ulong FirstBad(ulong pa, ulong size)
    {
        ulong end = pa + size;
        ulong g = pa >> GranuleShift;
        ulong last = (end - 1) >> GranuleShift;
        while (g <= last)
        {
            // Eight granules (64 bytes) at a time while they are whole and inside the range.
            if (g + 8 <= last && Unsafe.ReadUnaligned<ulong>(_shadow + g) == ulong.MaxValue)
            {
                g += 8;
                continue;
            }
            byte code = Get(g);
            if (code != 0)
            {
                ulong gStart = g << GranuleShift;
                ulong lastByte = Math.Min(end, gStart + Granule) - 1;
                if (code >= Granule || lastByte - gStart >= code) return Math.Max(pa, code >= Granule ? gStart : gStart + code);
            }
            g++;
        }
        return ulong.MaxValue;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte Get(ulong granule) => (byte)(_shadow[granule] ^ 0xFF);

    /// <summary>The arena's physical address of <paramref name="address"/>, or -1 outside it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long PhysOf(void* address)
    {
        if (_base != null)
        {
            ulong offset = (ulong)address - (ulong)_base;
            return offset < _spanBytes ? (long)offset : -1;
        }
        return _virtToPhys((nint)address);
    }

    /// <summary>
    /// Claims the free of the object at <paramref name="address"/> (granule aligned): its first granule goes from
    /// accessible to <paramref name="code"/> with one compare-exchange, so of two racing frees exactly one wins. False,
    /// with nothing changed, when the granule is already poisoned (a double free) or outside the arena.
    /// </summary>
    internal bool TryClaimFree(void* address, byte code)
    {
        long pa = PhysOf(address);
        if (pa < 0) return false;
        ref byte cell = ref _shadow[(ulong)pa >> GranuleShift];
        while (true)
        {
            byte stored = Volatile.Read(ref cell);
            if ((byte)(stored ^ 0xFF) >= Granule) return false;
            if (Interlocked.CompareExchange(ref cell, (byte)(code ^ 0xFF), stored) == stored) return true;
        }
    }

    /// <summary>True when the granule at <paramref name="address"/> holds a freed object or page (the free half of kasan_slab_free's check).</summary>
    internal bool IsFreed(void* address)
    {
        byte? code = ShadowOf(address);
        return code is KasanShadowCode.SlabFree or KasanShadowCode.SlabFreeTrack or KasanShadowCode.PageFree;
    }

    /// <summary>Reports and throws for a bad access whose first bad byte is <paramref name="bad"/>; <paramref name="type"/> overrides the type the shadow gives.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void Fail(void* address, nuint bad, nuint size, bool write, string function, string? type)
    {
        if (type == null)
        {
            long pa = PhysOf((void*)bad);
            byte code = pa < 0 ? (byte)0 : Get((ulong)pa >> GranuleShift);
            // A partial granule: the bytes past its length are the red zone or free memory the next granule says.
            if (code is > 0 and < Granule && ((ulong)pa >> GranuleShift) + 1 < _shadowBytes) code = Get(((ulong)pa >> GranuleShift) + 1);
            type = KasanShadowCode.BugType(code);
        }
        throw new KasanException(Report(type, bad, (long)size, write, function, access: true));
    }

    /// <summary>Reports a bad access the caller has already refused another way (e.g. a fault it turns into an oops); returns the report.</summary>
    internal KasanReport ReportAccess(string type, nuint address, long size, bool write, string function)
        => Report(type, address, size, write, function, access: true);

    /// <summary>Reports a bad free of <paramref name="pointer"/> (<c>double-free</c> or <c>invalid-free</c>) and returns the report; the caller throws.</summary>
    internal KasanReport ReportFree(string type, void* pointer, string function) => Report(type, (nuint)pointer, 0, false, function, access: false);

    private KasanReport Report(string type, nuint address, long size, bool write, string function, bool access)
    {
        var text = new StringBuilder();
        text.Append("==================================================================\n");
        text.Append(CultureInfo.InvariantCulture, $"BUG: KASAN: {type} in {function}\n");
        string task = $"{Thread.CurrentThread.Name ?? "thread"}/{Environment.CurrentManagedThreadId}";
        if (access) text.Append(CultureInfo.InvariantCulture, $"{(write ? "Write" : "Read")} of size {size} at addr {address:x16} by task {task}\n");
        else text.Append(CultureInfo.InvariantCulture, $"Free of addr {address:x16} by task {task}\n");
        if (Caller?.Invoke() is { } caller) text.Append(CultureInfo.InvariantCulture, $"\nCall site: {caller}\n");
        text.Append('\n');
        Func<nuint, string?>[] describers;
        lock (_describers) describers = _describers.ToArray();
        foreach (var describe in describers)
        {
            if (describe(address) is not { } about) continue;
            text.Append(about);
            break;
        }
        AppendShadowDump(text, address);
        text.Append("==================================================================\n");
        var report = new KasanReport(type, address, size, write, function, text.ToString());
        bool first;
        lock (_reports)
        {
            first = _reported.Add((address, type, write)) || MultiShot;
            if (first) _reports.Add(report);
        }
        if (first) ReportAdded?.Invoke(report);
        return report;
    }

    /// <summary>"Memory state around the buggy address": the shadow rows around it, the buggy granule marked.</summary>
    private void AppendShadowDump(StringBuilder text, nuint address)
    {
        long pa = PhysOf((void*)address);
        if (pa < 0) return;
        const int Row = 16;
        ulong granule = (ulong)pa >> GranuleShift;
        ulong row = granule / Row * Row;
        text.Append("\nMemory state around the buggy address:\n");
        for (long r = -2; r <= 2; r++)
        {
            long start = (long)row + r * Row;
            if (start < 0 || (ulong)(start + Row) > (ulong)_shadowBytes) continue;
            text.Append(r == 0 ? ">" : " ");
            text.Append(CultureInfo.InvariantCulture, $"{(ulong)address - (granule - (ulong)start) * Granule & ~(ulong)(Granule * Row - 1):x16}:");
            for (int i = 0; i < Row; i++) text.Append(CultureInfo.InvariantCulture, $" {Get((ulong)start + (ulong)i):x2}");
            text.Append('\n');
            if (r == 0) text.Append(' ', 19 + 3 * (int)(granule - row)).Append("^\n");
        }
    }
}

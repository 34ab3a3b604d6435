using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Native;

namespace Allocators.Physical;

/// <summary>
/// The "physical" memory of a memory system: a real native arena split into sections, each with its
/// <see cref="PageFrame"/> array. A physical address is an offset in the arena's pfn space
/// (<c>pa = pfn &lt;&lt; 12</c>); <see cref="PageAddress"/> is the direct map from a frame to its bytes.
/// </summary>
/// <remarks>
/// Conversions (pfn_to_page, page_to_pfn, page_address, virt_to_page) are O(1) and read nothing at a frame: frame
/// arrays are demand-zero host memory the page allocator writes only as it first hands memory out. Sections are
/// brought online and offline by the page allocator (memory hotplug); this type owns only the bytes and the frame
/// arrays.
/// Thread-safe: lookups are lock-free; onlining and offlining are serialised by the caller.
/// </remarks>
public sealed unsafe class PhysicalMemory : IDisposable
{
    private readonly MemSection* _sections;
    private readonly int _maxSections;
    private readonly int _sectionShift;          // log2 of the pfn-space size of one section, in bytes
    private readonly int _pagesPerSectionShift;
    private readonly long _sectionBytes;
    private readonly byte* _contiguousBase;      // non-null when all sections sit in one host range
    private readonly nuint _contiguousBytes;
    private readonly int _memFd = -1;
    private readonly PageFrame* _flatMemMap;     // the only frame array of the flat model: virt_to_page without a section walk
    private readonly nuint _flatMemMapBytes;
    private readonly ulong* _flatExt;            // the flat model's page_ext array
    private SectionLookupTable* _lookup;          // sparse NativeMemory model only
    private nint _lookupAddress;                  // _lookup, published for lock-free readers
    private readonly int _memMapShift;            // log2 of a section frame array's alignment (sparse model)
    private nint _frameLookupAddress;             // sparse model: frame arrays to their sections, for lock-free readers
    private readonly List<nint> _retiredLookups = new();
    private long _presentPages;
    private bool _disposed;

    /// <summary>Builds the arena described by <paramref name="options"/> and brings its initial sections online.</summary>
    public PhysicalMemory(PhysicalMemoryOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        Backing = options.Backing;
        Model = options.Model;
        long max = options.EffectiveMaxSize;
        _sectionBytes = Model == MemoryModel.Flat ? options.Size : options.SectionSize;
        _maxSections = (int)(max / _sectionBytes);
        _sectionShift = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((ulong)_sectionBytes));
        _pagesPerSectionShift = _sectionShift - PageFrame.PageShift;
        _sections = (MemSection*)NativeMemory.AllocZeroed((nuint)_maxSections, (nuint)sizeof(MemSection));

        if (Backing == ArenaBacking.MemFd)
        {
            _memFd = HostMemory.CreateMemFd("allocators-arena", max);
            _contiguousBytes = (nuint)max;
            _contiguousBase = (byte*)HostMemory.Reserve(_contiguousBytes, (nuint)PhysicalMemoryOptions.BlockBytes);
        }
        else if (Model == MemoryModel.Flat)
        {
            _contiguousBytes = (nuint)max;
            _contiguousBase = (byte*)NativeMemory.AlignedAlloc(_contiguousBytes, (nuint)PhysicalMemoryOptions.BlockBytes);
        }
        else
        {
            _lookup = SectionLookupTable.Create(_maxSections, _sectionShift, _sections);
            _lookupAddress = (nint)_lookup;
        }
        if (Model != MemoryModel.Flat)
        {
            _memMapShift = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((ulong)(PagesPerSection * sizeof(PageFrame))));
            _frameLookupAddress = (nint)SectionLookupTable.Create(_maxSections, _memMapShift, _sections, byMemMap: true);
        }

        int initial = (int)(options.Size / _sectionBytes);
        for (int i = 0; i < initial; i++) OnlineSection(i, node: -1);
        if (Model == MemoryModel.Flat)
        {
            _flatMemMap = _sections[0].MemMap;
            _flatMemMapBytes = (nuint)_sections[0].Pages * (nuint)sizeof(PageFrame);
            _flatExt = _sections[0].Ext;
        }
        if (options.Checks.Kasan)
        {
            Kasan = new Kasan.KasanShadow(_contiguousBase, MaxPfn << PageFrame.PageShift, a => VirtToPhys((void*)a),
                options.Checks.KasanRedZone, options.Checks.QuarantineBytes ?? max / 32);
        }
    }

    /// <summary>The KASAN shadow of this arena when <see cref="CheckedModeOptions.Kasan"/> is on; otherwise null.</summary>
    public Kasan.KasanShadow? Kasan { get; }

    internal MemSection* SectionArray => _sections;

    /// <summary>The options this arena was built with.</summary>
    public PhysicalMemoryOptions Options { get; }

    /// <summary>The checked modes every layer on this arena honours (<see cref="PhysicalMemoryOptions.Checks"/>).</summary>
    public CheckedModeOptions Checks => Options.Checks;

    /// <summary>Where the bytes come from.</summary>
    public ArenaBacking Backing { get; }

    /// <summary>Flat or Sparse.</summary>
    public MemoryModel Model { get; }

    /// <summary>Bytes per section.</summary>
    public long SectionSize => _sectionBytes;

    /// <summary>Pages per section.</summary>
    public long PagesPerSection => _sectionBytes >> PageFrame.PageShift;

    /// <summary>Most sections this arena can hold.</summary>
    public int MaxSections => _maxSections;

    /// <summary>One past the highest pfn the arena could ever hold.</summary>
    public ulong MaxPfn => (ulong)_maxSections << _pagesPerSectionShift;

    /// <summary>Pages currently online.</summary>
    public long PresentPages => Volatile.Read(ref _presentPages);

    /// <summary>The memfd behind the arena, or -1 for <see cref="ArenaBacking.NativeMemory"/>.</summary>
    public int MemFd => _memFd;

    /// <summary>Host address of pfn 0 when the arena is one contiguous host range; otherwise null.</summary>
    public byte* ContiguousBase => _contiguousBase;

    /// <summary>True when section <paramref name="index"/> is online.</summary>
    public bool IsSectionOnline(int index)
        => (uint)index < (uint)_maxSections && Volatile.Read(ref _sections[index].Online) != 0;

    /// <summary>The node that owns section <paramref name="index"/>.</summary>
    public int SectionNode(int index) => _sections[index].Node;

    /// <summary>The first pfn of section <paramref name="index"/>.</summary>
    public ulong SectionStartPfn(int index) => (ulong)index << _pagesPerSectionShift;

    /// <summary>The section that holds <paramref name="pfn"/>.</summary>
    public int PfnToSection(ulong pfn) => (int)(pfn >> _pagesPerSectionShift);

    /// <summary>The frame of <paramref name="pfn"/>, or null when no online section holds it (pfn_to_page).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* PfnToPage(ulong pfn)
    {
        ulong index = pfn >> _pagesPerSectionShift;
        if (index >= (ulong)_maxSections) return null;
        MemSection* s = _sections + index;
        ulong offset = pfn & ((1UL << _pagesPerSectionShift) - 1);
        return s->Online != 0 && offset < (ulong)s->Pages ? s->MemMap + offset : null;
    }

    /// <summary>The pfn of a frame (page_to_pfn).</summary>
    /// <exception cref="ArgumentException"><paramref name="page"/> is not a frame of an online section.</exception>
    public ulong PageToPfn(PageFrame* page)
    {
        ThrowIfNotFrame(page, "page_to_pfn");
        return FramePfn(page);
    }

    /// <summary>
    /// The pfn of a frame of an online section, from where the frame lies rather than from what it holds: a frame of a
    /// block the page allocator has not handed out yet is still zero (deferred struct page init).
    /// </summary>
    internal ulong FramePfn(PageFrame* page)
    {
        if (_flatMemMap != null) return (ulong)(page - _flatMemMap);
        MemSection* s = ((SectionLookupTable*)Volatile.Read(ref _frameLookupAddress))->Find(page);
        return SectionStartPfn((int)(s - _sections)) + (ulong)(page - s->MemMap);
    }

    /// <summary>The host address of a frame's bytes (page_address, the direct map).</summary>
    /// <exception cref="ArgumentException"><paramref name="page"/> is not a frame of an online section.</exception>
    public byte* PageAddress(PageFrame* page)
    {
        ThrowIfNotFrame(page, "page_address");
        return AddressOfPfn(FramePfn(page));
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming <paramref name="page"/> unless it is a frame of an online section; reads nothing at it.</summary>
    internal void ThrowIfNotFrame(PageFrame* page, string operation)
    {
        if (!IsValidFrame(page)) ThrowNotFrame(page, operation);
    }

    // Out of line: the message built inline would make every caller zero a string builder's stack space per call.
    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotFrame(PageFrame* page, string operation)
        => throw new ArgumentException($"{operation}: 0x{(nuint)page:x} is not a page frame of this memory.", nameof(page));

    /// <summary><see cref="PageAddress"/> for a frame the caller knows is one (no check).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* AddressOf(PageFrame* page) => AddressOfPfn(page->Pfn);

    /// <summary>The host address of <paramref name="pfn"/>, which must be online.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* AddressOfPfn(ulong pfn)
    {
        if (_contiguousBase != null) return _contiguousBase + (pfn << PageFrame.PageShift);
        MemSection* s = _sections + (pfn >> _pagesPerSectionShift);
        return s->Base + ((pfn & ((1UL << _pagesPerSectionShift) - 1)) << PageFrame.PageShift);
    }

    /// <summary>The host address of <paramref name="pfn"/>, or null when it is not online (pfn_to_virt).</summary>
    public byte* PfnToVirt(ulong pfn) => PfnToPage(pfn) == null ? null : AddressOfPfn(pfn);

    /// <summary>The flat model's frame array and its size in bytes (null and 0 in the sparse model), for callers that cache them.</summary>
    internal (nint MemMap, nuint Bytes) FlatMemMap => ((nint)_flatMemMap, _flatMemMapBytes);

    /// <summary>The flat model's page_ext array (null in the sparse model).</summary>
    internal ulong* FlatExt => _flatExt;

    /// <summary>The <see cref="PageFrame.ExtWords"/> extension words of <paramref name="page"/>, a frame of an online section (page_ext_get).</summary>
    internal ulong* ExtOf(PageFrame* page)
    {
        if (_flatMemMap != null) return _flatExt + (nuint)(page - _flatMemMap) * PageFrame.ExtWords;
        MemSection* s = _sections + (page->Pfn >> _pagesPerSectionShift);
        return s->Ext + (nuint)(page - s->MemMap) * PageFrame.ExtWords;
    }

    /// <summary>The flat model's host range (pfn 0 at <c>Base</c>); zero and 0 in the sparse model.</summary>
    internal (nint Base, nuint Bytes) FlatRange => _flatMemMap != null ? ((nint)_contiguousBase, _contiguousBytes) : (0, 0);

    /// <summary>
    /// True when <paramref name="page"/> is exactly a frame of an online section, whatever the pointer: it reads
    /// nothing at <paramref name="page"/> (a range and alignment check in the flat model; in the sparse model a lookup
    /// of the frame array that would hold it, each array being aligned to its power-of-two size).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsValidFrame(PageFrame* page)
    {
        if (_flatMemMap != null) return IsFrameOf((byte*)_flatMemMap, _flatMemMapBytes, page);
        return IsSparseFrame(page);
    }

    private bool IsSparseFrame(PageFrame* page)
    {
        var table = (SectionLookupTable*)Volatile.Read(ref _frameLookupAddress);
        MemSection* s = table->Find(page);
        return s != null && IsFrameOf((byte*)s->MemMap, (nuint)s->Pages * (nuint)sizeof(PageFrame), page);
    }

    /// <summary>True when <paramref name="page"/> is exactly one of the frames of the array at <paramref name="memMap"/> (<paramref name="bytes"/> long).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsFrameOf(byte* memMap, nuint bytes, PageFrame* page)
    {
        nuint offset = (nuint)((byte*)page - memMap);
        return offset < bytes && offset % (nuint)sizeof(PageFrame) == 0;
    }

    /// <summary>The frame of the page that holds <paramref name="address"/>, or null when the arena does not (virt_to_page).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* VirtToPage(void* address)
    {
        if (_flatMemMap != null)
        {
            nuint flat = (nuint)address - (nuint)_contiguousBase;
            return flat < _contiguousBytes ? _flatMemMap + (flat >> PageFrame.PageShift) : null;
        }
        if (_contiguousBase != null)
        {
            nuint offset = (nuint)address - (nuint)_contiguousBase;
            return offset < _contiguousBytes ? PfnToPage(offset >> PageFrame.PageShift) : null;
        }
        return SparseVirtToPage(address);
    }

    private PageFrame* SparseVirtToPage(void* address)
    {
        SectionLookupTable* table = (SectionLookupTable*)Volatile.Read(ref _lookupAddress);
        MemSection* s = table->Find(address);
        if (s == null) return null;
        return s->MemMap + (((nuint)address - (nuint)s->Base) >> PageFrame.PageShift);
    }

    /// <summary>Physical address (offset in pfn space) of a host address inside the arena, or -1.</summary>
    public long VirtToPhys(void* address)
    {
        PageFrame* page = VirtToPage(address);
        return page == null ? -1 : (long)(((ulong)page->Pfn << PageFrame.PageShift) | ((nuint)address & (PageFrame.PageSize - 1)));
    }

    /// <summary>True when <paramref name="address"/> lies in an online section.</summary>
    public bool Contains(void* address) => VirtToPage(address) != null;

    /// <summary>Brings section <paramref name="index"/> online: backs it with host memory and builds its frame array.</summary>
    /// <returns>The section's frames, zero (never written here) until the page allocator takes them.</returns>
    internal PageFrame* OnlineSection(int index, int node)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((uint)index >= (uint)_maxSections) throw new ArgumentOutOfRangeException(nameof(index));
        MemSection* s = _sections + index;
        if (s->Online != 0) throw new InvalidOperationException($"Section {index} is already online.");
        long pages = _sectionBytes >> PageFrame.PageShift;
        byte* bytes;
        if (_memFd >= 0)
        {
            bytes = _contiguousBase + index * _sectionBytes;
            HostMemory.MapSharedFixed(bytes, (nuint)_sectionBytes, _memFd, index * _sectionBytes);
        }
        else if (_contiguousBase != null)
        {
            bytes = _contiguousBase + index * _sectionBytes;
        }
        else
        {
            bytes = (byte*)NativeMemory.AlignedAlloc((nuint)_sectionBytes, (nuint)_sectionBytes);
        }

        // Aligned to its power-of-two size in the sparse model: the frame lookup keys an array by its address.
        var memMap = (PageFrame*)AllocZeroed((nuint)(pages * sizeof(PageFrame)), Model == MemoryModel.Flat ? Threading.CacheLines.Size : (nuint)1 << _memMapShift);
        ulong* ext = (ulong*)AllocZeroed(ExtBytes(pages), Threading.CacheLines.Size);

        s->Base = bytes;
        s->MemMap = memMap;
        s->Ext = ext;
        s->Pages = pages;
        s->Node = node;
        Volatile.Write(ref s->Online, 1);
        RebuildLookup();
        Interlocked.Add(ref _presentPages, pages);
        return memMap;
    }

    /// <summary>Takes section <paramref name="index"/> offline and gives its bytes and frames back to the host.</summary>
    internal void OfflineSection(int index)
    {
        MemSection* s = _sections + index;
        if (s->Online == 0) throw new InvalidOperationException($"Section {index} is not online.");
        Volatile.Write(ref s->Online, 0);
        RebuildLookup();
        if (_memFd >= 0)
        {
            HostMemory.PunchHole(_memFd, index * _sectionBytes, _sectionBytes);
            void* r = Libc.Mmap(s->Base, (nuint)_sectionBytes, Libc.ProtNone,
                Libc.MapPrivate | Libc.MapAnonymous | Libc.MapFixed | Libc.MapNoReserve, -1, 0);
            if (r == Libc.MapFailed) throw new HostMemoryException("mmap", Marshal.GetLastPInvokeError(), $"0x{(nuint)s->Base:x}, {_sectionBytes}, PROT_NONE, MAP_FIXED");
        }
        else if (_contiguousBase == null)
        {
            NativeMemory.AlignedFree(s->Base);
        }
        FreeZeroed(s->MemMap, (nuint)(s->Pages * sizeof(PageFrame)));
        FreeZeroed(s->Ext, ExtBytes(s->Pages));
        Interlocked.Add(ref _presentPages, -s->Pages);
        s->Base = null;
        s->MemMap = null;
        s->Ext = null;
        s->Pages = 0;
    }

    /// <summary>
    /// Gives the bytes of a free block back to the host while keeping it usable: the next touch sees zeroes.
    /// Returns false when the platform cannot do it.
    /// </summary>
    internal bool Discard(PageFrame* page, int order)
    {
        if (!OperatingSystem.IsLinux()) return false;
        nuint length = (nuint)PageFrame.PageSize << order;
        if (_memFd >= 0)
        {
            HostMemory.PunchHole(_memFd, (long)page->Pfn << PageFrame.PageShift, (long)length);
            return true;
        }
        return Libc.Madvise(AddressOf(page), length, Libc.MadvDontNeed) == 0;
    }

    private void RebuildLookup()
    {
        // Readers may still hold the old tables: they are freed on Dispose.
        if (_lookup != null)
        {
            SectionLookupTable* old = _lookup;
            _lookup = SectionLookupTable.Create(_maxSections, _sectionShift, _sections);
            Volatile.Write(ref _lookupAddress, (nint)_lookup);
            _retiredLookups.Add((nint)old);
        }
        if (_frameLookupAddress != 0)
        {
            _retiredLookups.Add(_frameLookupAddress);
            Volatile.Write(ref _frameLookupAddress, (nint)SectionLookupTable.Create(_maxSections, _memMapShift, _sections, byMemMap: true));
        }
    }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed);

    /// <summary>
    /// Gives the arena's memory back to the host: its bytes read as zero from here on. The address ranges and the frame
    /// arrays stay until nothing references this object (its finalizer frees them), so a call that races the dispose,
    /// or a stale one on a disposed layer, reads and writes only memory that is still there and fails with
    /// <see cref="ObjectDisposedException"/> instead of touching freed memory.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        Volatile.Write(ref _disposed, true);
        if (!OperatingSystem.IsLinux()) return;
        if (_memFd >= 0)
        {
            HostMemory.PunchHole(_memFd, 0, (long)_contiguousBytes);
            return;
        }
        if (_contiguousBase != null)
        {
            Libc.Madvise(_contiguousBase, _contiguousBytes, Libc.MadvDontNeed);
            return;
        }
        for (int i = 0; i < _maxSections; i++)
        {
            MemSection* s = _sections + i;
            if (s->Online != 0) Libc.Madvise(s->Base, (nuint)_sectionBytes, Libc.MadvDontNeed);
        }
    }

    /// <summary>Frame and page_ext arrays at least this large come from anonymous mappings rather than the C heap.</summary>
    private const nuint LazyMinBytes = 64 * 1024;

    /// <summary>
    /// Zeroed bytes for a section's frames or page_ext words. Large arrays are anonymous mappings the host zero-fills on
    /// first touch, and nothing writes them here: a frame is written when the page allocator first hands out the
    /// max-order block that holds it (deferred struct page init), page_ext words when a slab uses them, so an arena
    /// little of which is used pays for little of its 4 MiB of frames and 4 MiB of words per 256 MiB. Page-aligned,
    /// or to <paramref name="alignment"/> when that is larger.
    /// </summary>
    private static void* AllocZeroed(nuint bytes, nuint alignment)
    {
        if (IsMapped(bytes))
        {
            void* mapped = HostMemory.Reserve(bytes, Math.Max(alignment, HostMemory.PageSize));
            HostMemory.MapAnonymousFixed(mapped, bytes);
            return mapped;
        }
        void* block = NativeMemory.AlignedAlloc(bytes, alignment);
        NativeMemory.Clear(block, bytes);
        return block;
    }

    /// <summary>Frees what <see cref="AllocZeroed"/> gave for <paramref name="bytes"/>.</summary>
    private static void FreeZeroed(void* block, nuint bytes)
    {
        if (IsMapped(bytes)) HostMemory.Release(block, bytes);
        else NativeMemory.AlignedFree(block);
    }

    private static nuint ExtBytes(long pages) => (nuint)(pages * PageFrame.ExtWords * sizeof(ulong));

    /// <summary>Whether arrays of <paramref name="bytes"/> are anonymous mappings (else heap blocks).</summary>
    private static bool IsMapped(nuint bytes) => OperatingSystem.IsLinux() && bytes >= LazyMinBytes;

    /// <summary>
    /// Frees the arena and all metadata once no caller can reach a disposed arena. One never disposed stays: threads'
    /// caches (process-wide) may still hold pointers into it.
    /// </summary>
    ~PhysicalMemory()
    {
        if (!_disposed) return;
        for (int i = 0; i < _maxSections; i++)
        {
            MemSection* s = _sections + i;
            if (s->Online == 0) continue;
            if (_memFd < 0 && _contiguousBase == null) NativeMemory.AlignedFree(s->Base);
            FreeZeroed(s->MemMap, (nuint)(s->Pages * sizeof(PageFrame)));
            FreeZeroed(s->Ext, ExtBytes(s->Pages));
        }
        if (_memFd >= 0)
        {
            HostMemory.Release(_contiguousBase, _contiguousBytes);
            HostMemory.CloseFd(_memFd);
        }
        else if (_contiguousBase != null)
        {
            NativeMemory.AlignedFree(_contiguousBase);
        }
        if (_lookup != null) NativeMemory.Free(_lookup);
        if (_frameLookupAddress != 0) NativeMemory.Free((void*)_frameLookupAddress);
        foreach (nint p in _retiredLookups) NativeMemory.Free((void*)p);
        NativeMemory.Free(_sections);
    }
}

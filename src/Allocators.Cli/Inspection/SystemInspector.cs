using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.Kasan;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Allocators.Vmalloc;

namespace Allocators.Cli.Inspection;

/// <summary>
/// Reads the memory systems of a target from its native registry (<see cref="NativeRegistry.Root"/>) with the
/// library's own struct definitions, and renders them the way /proc does. Runs nothing in the target; refuses a
/// layout it does not know (magic, version and struct sizes in every <see cref="SystemDescriptor"/>).
/// </summary>
internal sealed unsafe class SystemInspector(TargetReader reader)
{
    private const int MaxSystems = 4096;
    private const int MaxCaches = 100_000;
    private const int MaxSectionsAllowed = 1 << 22;
    private const long MaxSlabsWalked = 10_000_000;
    private const int MaxVmapAreas = 10_000_000;
    private const int MaxAreaPages = 1 << 24;

    /// <summary>Inspects every registered system (or only <paramref name="onlyId"/>).</summary>
    public IReadOnlyList<SystemReport> InspectAll(ulong root, bool leaks, int? onlyId = null)
    {
        var result = new List<SystemReport>();
        if (root == 0) return result;
        var r = reader.Read<RegistryRoot>(root);
        if (r.Magic != RegistryRoot.MagicValue)
            throw new TargetException($"the registry root at 0x{root:x} has magic 0x{r.Magic:x16}, expected 0x{RegistryRoot.MagicValue:x16}: not a compatible Allocators registry");
        if (r.Version != SystemDescriptor.CurrentVersion)
            throw new TargetException($"the target's registry has layout version {r.Version}; this inspector reads version {SystemDescriptor.CurrentVersion}");
        if (r.Count < 0 || r.Count > r.Capacity || r.Capacity > MaxSystems)
            throw new TargetException($"the target's registry looks corrupt (count {r.Count}, capacity {r.Capacity})");
        ulong[] descriptors = reader.ReadArray<ulong>((ulong)r.Systems, r.Count);
        foreach (ulong address in descriptors)
        {
            if (address == 0) continue;
            var d = reader.Read<SystemDescriptor>(address);
            if (d.Magic == 0) continue; // unregistered while we read
            CheckLayout(d, address);
            if (onlyId is { } id && d.Id != id) continue;
            result.Add(Inspect(d, leaks));
        }
        return result;
    }

    private static void CheckLayout(in SystemDescriptor d, ulong address)
    {
        if (d.Magic != SystemDescriptor.MagicValue)
            throw new TargetException($"system descriptor at 0x{address:x} has magic 0x{d.Magic:x16}, expected 0x{SystemDescriptor.MagicValue:x16}");
        if (d.Version != SystemDescriptor.CurrentVersion)
            throw new TargetException($"system {d.Id} has metadata layout version {d.Version}; this inspector reads version {SystemDescriptor.CurrentVersion}");
        var mismatches = new List<string>();
        void Check(string name, int theirs, int ours)
        {
            if (theirs != ours) mismatches.Add($"{name} is {theirs} bytes in the target, {ours} here");
        }
        Check("PageFrame", d.PageFrameSize, sizeof(PageFrame));
        Check("ZoneData", d.ZoneDataSize, sizeof(ZoneData));
        Check("KmemCacheData", d.KmemCacheDataSize, sizeof(KmemCacheData));
        Check("KmemCacheNode", d.KmemCacheNodeSize, sizeof(KmemCacheNode));
        Check("MemSection", d.MemSectionSize, sizeof(MemSection));
        if (mismatches.Count > 0)
            throw new TargetException($"system {d.Id} uses an incompatible version of the library: {string.Join("; ", mismatches)}");
        if (d.NodeCount < 1 || d.ZoneCount != d.NodeCount * ZoneTypeExtensions.Count || d.MaxSections < 1 || d.MaxSections > MaxSectionsAllowed)
            throw new TargetException($"system {d.Id} has an implausible descriptor (nodes {d.NodeCount}, zones {d.ZoneCount}, sections {d.MaxSections})");
    }

    private SystemReport Inspect(in SystemDescriptor d, bool withLeaks)
    {
        ZoneData[] zones = reader.ReadArray<ZoneData>((ulong)d.Zones, d.ZoneCount);
        MemSection[] sections = reader.ReadArray<MemSection>((ulong)d.Sections, d.MaxSections);
        var memory = new TargetPhysical(sections);
        var caches = ReadCaches((ulong)d.SlabCaches);

        var zoneReports = new List<ZoneReport>();
        foreach (var z in zones)
        {
            var blocks = new long[PageAllocator.MaxOrder + 1];
            for (int o = 0; o <= PageAllocator.MaxOrder; o++) blocks[o] = z.FreeAreas[o].Count;
            zoneReports.Add(new ZoneReport(z.Node, z.Type.KernelName(), z.FreePages, z.ManagedPages, z.PresentPages, z.SpannedPages,
                z.WatermarkMin, z.WatermarkLow, z.WatermarkHigh, blocks));
        }

        var cacheReports = new List<CacheReport>();
        var values = new MeminfoValues { HighMem = d.HighMem != 0 };
        foreach (var z in zones)
        {
            values.TotalPages += z.ManagedPages;
            values.FreePages += z.FreePages;
            values.PageTablePages += z.PageTablePages;
            values.AddZone(z);
        }
        foreach (var c in caches)
        {
            long active = 0, total = 0, slabs = 0;
            foreach (var n in c.Nodes)
            {
                // As the process counts them: objects of the node's partial slabs' free and remote lists are free.
                active += n.TotalObjects - n.FreeObjects - RemoteFreesOnPartialList((ulong)n.Partial, c.Data, memory);
                total += n.TotalObjects;
                slabs += n.NrSlabs;
            }
            values.SlabUnreclaimablePages += slabs << c.Data.Order;
            cacheReports.Add(new CacheReport(c.Name, active, total, c.Data.ObjectSize, c.Data.Size, c.Data.Objects, 1 << c.Data.Order, slabs,
                ((SlabFlags)c.Data.Flags).ToString()));
        }
        string? vmallocInfo = null;
        if (d.Vmalloc != 0)
        {
            var stats = reader.Read<VmallocStats>((ulong)d.Vmalloc);
            if (stats.Magic != VmallocStats.MagicValue || stats.VmapAreaSize != sizeof(VmapArea))
                throw new TargetException($"vmalloc state at 0x{d.Vmalloc:x} has an unknown layout (magic 0x{stats.Magic:x}, vmap_area {stats.VmapAreaSize} bytes, {sizeof(VmapArea)} here).");
            values.VmallocPages = stats.VmallocPages;
            vmallocInfo = RenderVmallocInfo(stats, d.NodeCount);
        }
        if (d.PercpuPages != null) values.PercpuPages = reader.Read<long>((ulong)d.PercpuPages);
        var meminfo = MeminfoFormat.Items(values);

        List<CacheLeaks>? leaks = null;
        if (withLeaks)
        {
            var sites = new CallSiteNames(reader, (ulong)d.CallSites);
            leaks = [];
            foreach (var c in caches)
            {
                if ((c.Data.Flags & (int)SlabFlags.StoreUser) != 0) leaks.Add(ScanCache(c, memory, sites));
            }
        }

        return new SystemReport(d.Id, d.NodeCount, d.PagesPerSection, sections.Count(s => s.Online != 0), zoneReports, cacheReports,
            meminfo.Select(i => new MeminfoItem(i.Name, i.Kb)).ToArray(),
            RenderBuddyInfo(zones), RenderSlabInfo(cacheReports), Common.MeminfoText.Format(meminfo), leaks, vmallocInfo);
    }

    /// <summary>Exactly what <see cref="PageAllocator.BuddyInfo"/> prints.</summary>
    internal static string RenderBuddyInfo(IEnumerable<ZoneData> zones)
    {
        var sb = new StringBuilder();
        foreach (var zone in zones) BuddyInfoFormat.AppendZone(sb, zone);
        return sb.ToString();
    }

    /// <summary>Exactly what <see cref="SlabAllocator.SlabInfo"/> prints.</summary>
    internal static string RenderSlabInfo(IEnumerable<CacheReport> caches)
        => SlabInfoFormat.Render(caches.Select(c => new SlabInfoRow(c.Name, c.ActiveObjects, c.TotalObjects, c.SlotSize, c.ObjectsPerSlab,
            c.PagesPerSlab, c.Slabs)));

    /// <summary>
    /// /proc/vmallocinfo of the target: walks its busy-area tree in address order (bounded, loop-checked) and, for
    /// vmalloc areas, reads the page array and each frame's zone to count pages per node; exactly what
    /// <see cref="VmallocAllocator.VmallocInfo"/> prints.
    /// </summary>
    private string RenderVmallocInfo(in VmallocStats stats, int nodeCount)
    {
        var sb = new StringBuilder();
        var names = new CallSiteNames(reader, (ulong)stats.CallSites);
        var perNode = new int[nodeCount];
        var seen = new HashSet<ulong>();
        var stack = new Stack<ulong>();
        ulong n = (ulong)stats.BusyRoot;
        while (n != 0 || stack.Count > 0)
        {
            while (n != 0)
            {
                if (!seen.Add(n) || seen.Count > MaxVmapAreas) throw new TargetException($"the target's vmap area tree loops at 0x{n:x} or is implausibly large");
                stack.Push(n);
                n = (ulong)reader.Read<VmapArea>(n).Left;
            }
            ulong address = stack.Pop();
            var area = reader.Read<VmapArea>(address);
            if (area.End <= area.Start || area.NrPages < 0 || area.NrPages > MaxAreaPages)
                throw new TargetException($"the vmap area at 0x{address:x} is implausible (0x{area.Start:x}-0x{area.End:x}, {area.NrPages} pages)");
            Array.Clear(perNode);
            bool counts = (area.Flags & (VmAreaFlags.Alloc | VmAreaFlags.Unpurged)) == VmAreaFlags.Alloc && area.NrPages > 0 && area.Pages != null;
            if (counts)
            {
                foreach (ulong frame in reader.ReadArray<ulong>((ulong)area.Pages, area.NrPages))
                {
                    int node = reader.Read<PageFrame>(frame).ZoneId / PageAllocator.ZonesPerNode;
                    if ((uint)node >= (uint)nodeCount) throw new TargetException($"the vmap area at 0x{address:x} maps frame 0x{frame:x} of node {node}");
                    perNode[node]++;
                }
            }
            VmallocInfoFormat.AppendArea(sb, area, area.CallSite != 0 ? names.Name(area.CallSite) : null, counts ? perNode : []);
            n = (ulong)area.Right;
        }
        return sb.ToString();
    }

    /// <summary>Objects in the remote bitmaps of the slabs of a node's partial list (never more than the list's implausible-length limit).</summary>
    private long RemoteFreesOnPartialList(ulong head, in KmemCacheData d, TargetPhysical memory)
    {
        if (d.FastPath == 0) return 0;
        long remote = 0;
        int walked = 0;
        var words = new byte[d.Words * sizeof(ulong)];
        for (ulong slab = head; slab != 0 && walked++ < MaxSlabsWalked;)
        {
            var frame = reader.Read<PageFrame>(slab);
            if (d.BitmapInFrame != 0)
            {
                remote += System.Numerics.BitOperations.PopCount(frame.Data0);
            }
            else
            {
                ulong ext = memory.ExtAddress(slab);
                if (ext != 0)
                {
                    reader.ReadExactly(ext + (ulong)words.Length, words, $"remote bitmap of slab frame 0x{slab:x}");
                    foreach (ulong w in System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(words)) remote += System.Numerics.BitOperations.PopCount(w);
                }
            }
            slab = (ulong)frame.Next;
        }
        return remote;
    }

    private sealed record TargetCache(ulong Address, KmemCacheData Data, string Name, KmemCacheNode[] Nodes);

    /// <summary>The native cache list, oldest first (the list is pushed at its head, so it is read backwards).</summary>
    private List<TargetCache> ReadCaches(ulong listCell)
    {
        var caches = new List<TargetCache>();
        ulong p = reader.ReadPointer(listCell);
        var seen = new HashSet<ulong>();
        while (p != 0)
        {
            if (!seen.Add(p) || caches.Count >= MaxCaches) throw new TargetException("the target's slab cache list loops or is implausibly long");
            var data = reader.Read<KmemCacheData>(p);
            if (data.NodeCount < 1 || data.NodeCount > 1024 || data.Size < 1 || data.Objects < 1 || data.Order is < 0 or > PageAllocator.MaxOrder)
                throw new TargetException($"the slab cache at 0x{p:x} has an implausible record (nodes {data.NodeCount}, size {data.Size}, objects {data.Objects}, order {data.Order})");
            string name = reader.ReadUtf8((ulong)data.Name, 256);
            var nodes = reader.ReadArray<KmemCacheNode>((ulong)data.Nodes, data.NodeCount);
            caches.Add(new TargetCache(p, data, name, nodes));
            p = (ulong)data.NextCache;
        }
        caches.Reverse();
        return caches;
    }

    /// <summary>
    /// kmemleak-style scan of one StoreUser cache: walks every slab on the node partial and full lists, decodes each
    /// slab's free bitmap, and counts the allocation track of every object that is not free by call site. With KASAN on,
    /// an object whose quarantine link names this cache and the object itself was freed and waits in the quarantine
    /// (the link is cleared when it leaves): it is counted as quarantined, not live.
    /// </summary>
    private CacheLeaks ScanCache(TargetCache cache, TargetPhysical memory, CallSiteNames names)
    {
        KmemCacheData d = cache.Data;
        var problems = new List<string>();
        var bySite = new Dictionary<int, SiteAccumulator>();
        long live = 0, quarantined = 0, slabsWalked = 0;
        bool hasLink = d.KasanOffset >= 0 && d.KasanOffset + sizeof(QuarantineLink) <= d.Size - d.RedLeftPad;
        int slabBytes = PageFrame.PageSize << d.Order;
        var bytes = new byte[slabBytes];
        var free = new bool[d.Objects];
        if (d.TrackOffset < 0 || d.TrackOffset + 2 * sizeof(Track) > d.Size)
        {
            problems.Add($"track offset {d.TrackOffset} does not fit a {d.Size}-byte slot");
            return new CacheLeaks(cache.Name, d.ObjectSize, 0, 0, [], problems);
        }
        for (int node = 0; node < cache.Nodes.Length; node++)
        {
            foreach (var (head, list) in new[] { ((ulong)cache.Nodes[node].Partial, "partial"), ((ulong)cache.Nodes[node].Full, "full") })
            {
                var seen = new HashSet<ulong>();
                for (ulong slab = head; slab != 0;)
                {
                    if (!seen.Add(slab) || ++slabsWalked > MaxSlabsWalked)
                    {
                        problems.Add($"node {node} {list} list loops at slab 0x{slab:x}");
                        break;
                    }
                    var frame = reader.Read<PageFrame>(slab);
                    if ((ulong)frame.Private != cache.Address || !frame.Has(PageFlags.Slab))
                    {
                        problems.Add($"node {node} {list} list: frame 0x{slab:x} (pfn 0x{frame.Pfn:x}) is not a slab of this cache");
                        break;
                    }
                    ulong baseAddress = memory.PageAddress(slab);
                    if (baseAddress == 0)
                    {
                        problems.Add($"slab frame 0x{slab:x} lies in no online section");
                        break;
                    }
                    reader.ReadExactly(baseAddress, bytes, $"slab at 0x{baseAddress:x}");
                    var bitmap = new byte[d.Words * sizeof(ulong)];
                    if (d.BitmapInFrame != 0)
                    {
                        // The local bitmap is the frame's RefCount and MapCount words (see SlabPage).
                        BitConverter.TryWriteBytes(bitmap, (uint)frame.RefCount);
                        BitConverter.TryWriteBytes(bitmap.AsSpan(4), (uint)frame.MapCount);
                    }
                    else
                    {
                        ulong ext = memory.ExtAddress(slab);
                        if (ext == 0)
                        {
                            problems.Add($"slab frame 0x{slab:x} has no page_ext words");
                            break;
                        }
                        reader.ReadExactly(ext, bitmap, $"bitmap of slab 0x{baseAddress:x}");
                    }
                    DecodeBitmap(d, baseAddress, bitmap, free, problems);
                    for (int i = 0; i < d.Objects; i++)
                    {
                        if (free[i]) continue;
                        long objOffset = (long)i * d.Size + d.RedLeftPad;
                        if (hasLink && IsQuarantined(bytes.AsSpan((int)(objOffset + d.KasanOffset)), cache.Address, baseAddress + (ulong)objOffset))
                        {
                            quarantined++;
                            continue;
                        }
                        Track track = System.Runtime.InteropServices.MemoryMarshal.Read<Track>(bytes.AsSpan((int)(objOffset + d.TrackOffset)));
                        live++;
                        if (!bySite.TryGetValue(track.CallSite, out var acc)) bySite[track.CallSite] = acc = new SiteAccumulator();
                        acc.Add(baseAddress + (ulong)objOffset, track);
                    }
                    slab = (ulong)frame.Next;
                }
            }
        }
        var sites = bySite
            .Select(kv => new LeakSite(names.Name(kv.Key), kv.Value.Count, kv.Value.Count * d.ObjectSize, Ranges(kv.Value.Threads), Ranges(kv.Value.Cpus),
                kv.Value.Samples.Select(a => $"0x{a:x}").ToArray()))
            .OrderByDescending(s => s.Count).ThenBy(s => s.Site, StringComparer.Ordinal)
            .ToArray();
        return new CacheLeaks(cache.Name, d.ObjectSize, live, slabsWalked, sites, problems, quarantined);
    }

    /// <summary>True when the quarantine link at the start of <paramref name="link"/> holds the object at <paramref name="obj"/> for the cache at <paramref name="cache"/>.</summary>
    private static bool IsQuarantined(ReadOnlySpan<byte> link, ulong cache, ulong obj)
    {
        var q = System.Runtime.InteropServices.MemoryMarshal.Read<QuarantineLink>(link);
        return (ulong)q.Owner == cache && (ulong)q.Object == obj;
    }

    /// <summary>
    /// Marks the free objects of one slab of a debug cache from its local bitmap (its bits of free objects; a debug
    /// cache frees under the node lock, so it has no remote bits). Bits past the slab's last object are reported: the
    /// process never sets them.
    /// </summary>
    internal static void DecodeBitmap(in KmemCacheData d, ulong slabBase, ReadOnlySpan<byte> bitmap, bool[] free, List<string> problems)
    {
        for (int i = 0; i < d.Objects; i++) free[i] = (bitmap[i >> 3] & (1 << (i & 7))) != 0;
        int stray = 0;
        for (int i = d.Objects; i < bitmap.Length * 8; i++) if ((bitmap[i >> 3] & (1 << (i & 7))) != 0) stray++;
        if (stray != 0) problems.Add($"slab 0x{slabBase:x}: its free bitmap marks {stray} objects past its last ({d.Objects} objects)");
    }

    private static string Ranges(SortedSet<int> values)
    {
        if (values.Count == 0) return "";
        var parts = new List<string>();
        int start = values.Min, prev = start;
        foreach (int v in values.Skip(1))
        {
            if (v == prev + 1) { prev = v; continue; }
            parts.Add(start == prev ? $"{start}" : $"{start}-{prev}");
            start = prev = v;
        }
        parts.Add(start == prev ? $"{start}" : $"{start}-{prev}");
        return string.Join(",", parts);
    }

    private sealed class SiteAccumulator
    {
        public long Count;
        public readonly SortedSet<int> Threads = [];
        public readonly SortedSet<int> Cpus = [];
        public readonly List<ulong> Samples = [];

        public void Add(ulong address, in Track track)
        {
            Count++;
            Threads.Add(track.ThreadId);
            Cpus.Add(track.Cpu);
            if (Samples.Count < 4) Samples.Add(address);
        }
    }

    /// <summary>The target's section table: page frame address to page address (page_address).</summary>
    private sealed class TargetPhysical(MemSection[] sections)
    {
        public ulong PageAddress(ulong frame)
        {
            foreach (var s in sections)
            {
                if (s.Online == 0 || s.MemMap == null) continue;
                ulong first = (ulong)s.MemMap;
                ulong end = first + (ulong)s.Pages * (ulong)sizeof(PageFrame);
                if (frame >= first && frame < end && (frame - first) % (ulong)sizeof(PageFrame) == 0)
                    return (ulong)s.Base + (frame - first) / (ulong)sizeof(PageFrame) * PageFrame.PageSize;
            }
            return 0;
        }

        /// <summary>The address of a frame's page_ext words in the target, or 0 when the frame lies in no online section.</summary>
        public ulong ExtAddress(ulong frame)
        {
            foreach (var s in sections)
            {
                if (s.Online == 0 || s.MemMap == null || s.Ext == null) continue;
                ulong first = (ulong)s.MemMap;
                ulong end = first + (ulong)s.Pages * (ulong)sizeof(PageFrame);
                if (frame >= first && frame < end && (frame - first) % (ulong)sizeof(PageFrame) == 0)
                    return (ulong)s.Ext + (frame - first) / (ulong)sizeof(PageFrame) * PageFrame.ExtWords * sizeof(ulong);
            }
            return 0;
        }
    }

    /// <summary>The target's native call-site table, read on demand.</summary>
    private sealed class CallSiteNames(TargetReader reader, ulong table)
    {
        private readonly Dictionary<int, string> _cache = new() { [0] = "<none>" };
        private NativeStringTable? _header;

        public string Name(int id)
        {
            if (_cache.TryGetValue(id, out var name)) return name;
            try
            {
                _header ??= table == 0 ? new NativeStringTable() : reader.Read<NativeStringTable>(table);
                var t = _header.Value;
                name = id > 0 && id < t.Count && t.Items != null ? reader.ReadUtf8(reader.ReadPointer((ulong)t.Items + (ulong)id * 8), 1024) : "";
            }
            catch (TargetException)
            {
                name = "";
            }
            if (name.Length == 0) name = $"<call site #{id}>";
            _cache[id] = name;
            return name;
        }
    }
}

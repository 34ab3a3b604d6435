using System.Globalization;
using System.Text;
using Allocators.Filemap;

namespace Allocators.Mmu;

public sealed unsafe partial class AddressSpace
{
    /// <summary>A snapshot of the process counters.</summary>
    public AddressSpaceStatistics Statistics
    {
        get
        {
            ThrowIfDisposed();
            long vmPages = 0;
            int count;
            _mmapLock.EnterReadLock();
            try
            {
                for (VmArea? v = _vmas.First; v != null; v = v.Next) vmPages += (long)(v.Length >> VirtualAddress.PageShift);
                count = _vmas.Count;
            }
            finally { _mmapLock.ExitReadLock(); }
            return new AddressSpaceStatistics(Interlocked.Read(ref _minFlt), Interlocked.Read(ref _majFlt),
                Interlocked.Read(ref _cowFaults), Interlocked.Read(ref _cowReuses), Interlocked.Read(ref _rssAnon),
                Interlocked.Read(ref _rssShmem), PageTablePages, vmPages, count, Interlocked.Read(ref _rssFile));
        }
    }

    /// <summary>The memory lines of /proc/&lt;pid&gt;/status.</summary>
    public string Status()
    {
        var s = Statistics;
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"Name:\t{Name}\nPid:\t{Pid}\nPPid:\t{ParentPid}\n");
        void Kb(string name, long pages) => sb.Append(CultureInfo.InvariantCulture, $"{name + ":",-10}{pages * 4,8} kB\n");
        Kb("VmSize", s.VmSizePages);
        Kb("VmRSS", s.Rss);
        Kb("RssAnon", s.RssAnon);
        Kb("RssFile", s.RssFile);
        Kb("RssShmem", s.RssShmem);
        Kb("VmPTE", s.PageTablePages);
        Kb("VmSwap", SwapEntries);
        return sb.ToString();
    }

    /// <summary>
    /// The /proc/&lt;pid&gt;/stat line: pid, (comm), state, ppid, ..., minflt (field 10), majflt (12), vsize (23),
    /// rss (24); fields the model has no value for are 0.
    /// </summary>
    public string Stat()
    {
        var s = Statistics;
        var fields = new string[52];
        Array.Fill(fields, "0");
        fields[0] = Pid.ToString(CultureInfo.InvariantCulture);
        fields[1] = "(" + Name + ")";
        fields[2] = "R";
        fields[3] = ParentPid.ToString(CultureInfo.InvariantCulture);
        fields[9] = s.MinorFaults.ToString(CultureInfo.InvariantCulture);
        fields[11] = s.MajorFaults.ToString(CultureInfo.InvariantCulture);
        fields[19] = "1";
        fields[22] = (s.VmSizePages * VirtualAddress.PageSize).ToString(CultureInfo.InvariantCulture);
        fields[23] = s.Rss.ToString(CultureInfo.InvariantCulture);
        fields[24] = ulong.MaxValue.ToString(CultureInfo.InvariantCulture);
        fields[27] = StackTop.ToString(CultureInfo.InvariantCulture);
        fields[44] = _startBrk.ToString(CultureInfo.InvariantCulture);
        return string.Join(' ', fields) + "\n";
    }

    /// <summary>
    /// The areas as /proc/&lt;pid&gt;/maps prints them: <c>start-end perms offset dev inode path</c>. A file area shows
    /// its byte offset in the file, the file's device and inode number (<see cref="FileMapping.Device"/>,
    /// <see cref="FileMapping.Inode"/>) and its full path.
    /// </summary>
    public string Maps()
    {
        ThrowIfDisposed();
        var sb = new StringBuilder();
        _mmapLock.EnterReadLock();
        try
        {
            for (VmArea? v = _vmas.First; v != null; v = v.Next) AppendMapsLine(sb, v);
        }
        finally { _mmapLock.ExitReadLock(); }
        return sb.ToString();
    }

    private static void AppendMapsLine(StringBuilder sb, VmArea v)
    {
        sb.Append(CultureInfo.InvariantCulture, $"{v.Start:x8}-{v.End:x8} ");
        sb.Append((v.Flags & VmFlags.Read) != 0 ? 'r' : '-');
        sb.Append((v.Flags & VmFlags.Write) != 0 ? 'w' : '-');
        sb.Append((v.Flags & VmFlags.Exec) != 0 ? 'x' : '-');
        sb.Append((v.Flags & VmFlags.Shared) != 0 ? 's' : 'p');
        ulong offset = v.File != null ? v.PgOff << VirtualAddress.PageShift : 0;
        string inode = v.File != null ? v.File.Inode.ToString(CultureInfo.InvariantCulture) : "0";
        sb.Append(CultureInfo.InvariantCulture, $" {offset:x8} {v.File?.Device ?? "00:00"} {inode}");
        string name = v.File?.Path ?? v.Name;
        if (name.Length > 0) sb.Append(' ', Math.Max(1, 20 - inode.Length)).Append(name);
        sb.Append('\n');
    }

    /// <summary>
    /// /proc/&lt;pid&gt;/smaps: each area's maps line followed by its resident memory in kB — <c>Rss</c>, and the
    /// resident pages split as the kernel's smaps_account does: shared when more than one page table maps the page
    /// (another process, or a forked child still sharing it), private otherwise; dirty when the entry or the page is
    /// dirty — then <c>Anonymous</c> (anonymous pages, a private file mapping's copies included). The shared zero page
    /// is not counted.
    /// </summary>
    public string Smaps()
    {
        ThrowIfDisposed();
        var sb = new StringBuilder();
        _mmapLock.EnterReadLock();
        try
        {
            for (VmArea? v = _vmas.First; v != null; v = v.Next)
            {
                AppendMapsLine(sb, v);
                SmapsUsage u = AreaUsage(v);
                void Kb(string field, long pages) => sb.Append(CultureInfo.InvariantCulture, $"{field + ":",-16}{pages * 4,8} kB\n");
                Kb("Size", (long)(v.Length >> VirtualAddress.PageShift));
                Kb("Rss", u.SharedClean + u.SharedDirty + u.PrivateClean + u.PrivateDirty);
                Kb("Shared_Clean", u.SharedClean);
                Kb("Shared_Dirty", u.SharedDirty);
                Kb("Private_Clean", u.PrivateClean);
                Kb("Private_Dirty", u.PrivateDirty);
                Kb("Anonymous", u.Anonymous);
                Kb("Swap", u.Swap);
            }
        }
        finally { _mmapLock.ExitReadLock(); }
        return sb.ToString();
    }

    private struct SmapsUsage
    {
        public long SharedClean, SharedDirty, PrivateClean, PrivateDirty, Anonymous, Swap;

        public void Account(bool shared, bool dirty, long pages)
        {
            if (shared && dirty) SharedDirty += pages;
            else if (shared) SharedClean += pages;
            else if (dirty) PrivateDirty += pages;
            else PrivateClean += pages;
        }
    }

    /// <summary>smap_gather_stats for one area: walks its entries under the ptl (pages, not entries, decide shared and dirty).</summary>
    private unsafe SmapsUsage AreaUsage(VmArea v)
    {
        var u = new SmapsUsage();
        lock (_ptl)
        {
            WalkPmds(v.Start, v.End, (pmdSlot, s, e) =>
            {
                ulong pmd = *pmdSlot;
                if ((pmd & (ulong)PteFlags.Huge) != 0)
                {
                    // Huge pages are exclusive and anonymous.
                    long pages = (long)((e - s) >> VirtualAddress.PageShift);
                    u.Account(shared: false, (pmd & (ulong)PteFlags.Dirty) != 0, pages);
                    u.Anonymous += pages;
                    return;
                }
                ulong* table = TableOf(pmd);
                for (ulong va = s; va < e; va += VirtualAddress.PageSize)
                {
                    ulong pte = Volatile.Read(ref table[VirtualAddress.PteIndex(va)]);
                    if (Swap.SwapEntry.IsSwapPte(pte)) u.Swap++;
                    if (!IsMapped(pte) || (pte & (ulong)PteFlags.Special) != 0) continue;
                    Physical.PageFrame* page = _memory.PfnToPage(PageTableEntry.PfnOf(pte));
                    bool dirty = (pte & (ulong)PteFlags.Dirty) != 0 || page->Has(Physical.PageFlags.Dirty);
                    u.Account(Volatile.Read(ref page->_mapcount) >= 2, dirty, 1);
                    if (page->Has(Physical.PageFlags.Anon)) u.Anonymous++;
                }
            }, null);
        }
        return u;
    }
}

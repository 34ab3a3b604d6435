using System.Globalization;
using System.Text;

namespace Allocators.Mmu;

public sealed partial class AddressSpace
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
                Interlocked.Read(ref _rssShmem), PageTablePages, vmPages, count);
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
        Kb("RssFile", 0);
        Kb("RssShmem", s.RssShmem);
        Kb("VmPTE", s.PageTablePages);
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

    /// <summary>The areas as /proc/&lt;pid&gt;/maps prints them.</summary>
    public string Maps()
    {
        var sb = new StringBuilder();
        foreach (VmaInfo v in Vmas)
        {
            sb.Append(CultureInfo.InvariantCulture, $"{v.Start:x8}-{v.End:x8} ");
            sb.Append((v.Flags & VmFlags.Read) != 0 ? 'r' : '-');
            sb.Append((v.Flags & VmFlags.Write) != 0 ? 'w' : '-');
            sb.Append((v.Flags & VmFlags.Exec) != 0 ? 'x' : '-');
            sb.Append((v.Flags & VmFlags.Shared) != 0 ? 's' : 'p');
            sb.Append(" 00000000 00:00 0");
            if (v.Name.Length > 0) sb.Append(' ', 19).Append(v.Name);
            sb.Append('\n');
        }
        return sb.ToString();
    }
}

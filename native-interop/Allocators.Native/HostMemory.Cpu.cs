namespace Allocators.Native;

public static partial class HostMemory
{
    private static readonly Lazy<int> s_possibleCpus = new(DetectPossibleCpus);

    /// <summary>
    /// The CPU the calling thread runs on (<c>sched_getcpu</c>), falling back to
    /// <see cref="Thread.GetCurrentProcessorId"/> when that is unavailable. The answer may be stale
    /// as soon as it is returned; use it only as a hint (for example to pick a per-CPU cache).
    /// The result is in [0, <see cref="PossibleCpus"/>).
    /// </summary>
    /// <returns>A CPU number.</returns>
    public static int CurrentCpu()
    {
        int cpu = Libc.IsLinux ? Libc.SchedGetCpu() : -1;
        if (cpu < 0)
        {
            cpu = Thread.GetCurrentProcessorId();
        }

        int possible = PossibleCpus;
        return (uint)cpu < (uint)possible ? cpu : cpu % possible;
    }

    /// <summary>
    /// An upper bound on CPU numbers: one more than the largest CPU id the kernel may ever use
    /// (from <c>/sys/devices/system/cpu/possible</c>), and at least <c>get_nprocs_conf()</c> and
    /// <see cref="Environment.ProcessorCount"/>. Size per-CPU arrays with this.
    /// </summary>
    public static int PossibleCpus => s_possibleCpus.Value;

    /// <summary>The number of processors currently online (<c>get_nprocs</c>), or <see cref="Environment.ProcessorCount"/> off Linux.</summary>
    public static int OnlineCpus => Libc.IsLinux ? Math.Max(1, Libc.GetNprocs()) : Environment.ProcessorCount;

    private static int DetectPossibleCpus()
    {
        int count = Environment.ProcessorCount;
        if (Libc.IsLinux)
        {
            count = Math.Max(count, Libc.GetNprocsConf());
            count = Math.Max(count, OnlineCpus);
            count = Math.Max(count, ReadPossibleCpuList());
        }

        return Math.Max(1, count);
    }

    /// <summary>Parses a kernel CPU list such as <c>0-3,8-11</c> and returns its highest id plus one, or 0 when unreadable.</summary>
    private static int ReadPossibleCpuList()
    {
        try
        {
            string text = File.ReadAllText("/sys/devices/system/cpu/possible").Trim();
            int max = -1;
            foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                string last = part[(part.IndexOf('-') + 1)..];
                if (int.TryParse(last, out int id))
                {
                    max = Math.Max(max, id);
                }
            }

            return max + 1;
        }
        catch (IOException)
        {
            return 0;
        }
        catch (UnauthorizedAccessException)
        {
            return 0;
        }
    }
}

namespace Allocators.Cli.Inspection;

/// <summary>Entry points of the out-of-process inspector: a live process or a core dump.</summary>
internal static class Inspector
{
    /// <summary>Attaches to <paramref name="pid"/>, reads its memory systems and detaches.</summary>
    public static InspectReport InspectProcess(int pid, bool leaks, int? systemId = null, bool suspend = true, string? dacPath = null)
    {
        using var target = ClrmdTarget.Attach(pid, suspend, dacPath);
        return Inspect(target, leaks, systemId);
    }

    /// <summary>Reads the memory systems of a core dump.</summary>
    public static InspectReport InspectDump(string path, bool leaks, int? systemId = null, string? dacPath = null)
    {
        using var target = ClrmdTarget.LoadDump(path, dacPath);
        return Inspect(target, leaks, systemId);
    }

    private static InspectReport Inspect(ClrmdTarget target, bool leaks, int? systemId)
    {
        ulong root = target.FindRegistryRoot();
        var systems = new SystemInspector(new TargetReader(target)).InspectAll(root, leaks, systemId);
        return new InspectReport(target.Description, systems);
    }
}

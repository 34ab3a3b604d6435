using System.Diagnostics;

namespace Allocators.Benchmarks;

/// <summary>
/// jemalloc as Debian packages it uses static TLS, and glibc lets dlopen find room for it only when
/// <c>GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384</c> was set before the process started.
/// </summary>
/// <remarks>
/// The benchmark processes BenchmarkDotNet launches get the variable from <see cref="BenchConfig"/>'s job. The host
/// process needs it too, because <c>[ParamsSource]</c> members (which decide which native allocators are available)
/// run in the host; <see cref="RelaunchIfMissing"/> therefore starts the program once more with the variable set.
/// </remarks>
public static class StaticTls
{
    public const string Name = "GLIBC_TUNABLES";
    public const string Tunable = "glibc.rtld.optional_static_tls";
    public const string Value = Tunable + "=16384";

    /// <summary>Marks the relaunched process, so that a glibc that ignores the tunable cannot cause a loop.</summary>
    private const string RelaunchedMarker = "ALLOCATORS_BENCH_RELAUNCHED";

    /// <summary>True when the tunable was in this process's environment at start.</summary>
    public static bool IsSet => Environment.GetEnvironmentVariable(Name)?.Contains(Tunable, StringComparison.Ordinal) == true;

    /// <summary>
    /// When the tunable is missing, runs this program again with it (same arguments, same console) and returns its
    /// exit code; returns null when this process already has it or relaunching is not possible.
    /// </summary>
    public static int? RelaunchIfMissing(string[] args)
    {
        if (IsSet || !OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable(RelaunchedMarker) is not null) return null;
        string? processPath = Environment.ProcessPath;
        if (processPath is null) return null;

        var start = new ProcessStartInfo(processPath) { UseShellExecute = false };
        // Under 'dotnet Allocators.Benchmarks.dll' the process is the muxer: pass the entry assembly first.
        if (Path.GetFileNameWithoutExtension(processPath) == "dotnet")
            start.ArgumentList.Add(typeof(StaticTls).Assembly.Location);
        foreach (string arg in args) start.ArgumentList.Add(arg);
        string? existing = Environment.GetEnvironmentVariable(Name);
        start.Environment[Name] = string.IsNullOrEmpty(existing) ? Value : existing + ":" + Value;
        start.Environment[RelaunchedMarker] = "1";

        using Process child = Process.Start(start) ?? throw new InvalidOperationException($"Could not relaunch {processPath}.");
        child.WaitForExit();
        return child.ExitCode;
    }
}

using System.Diagnostics;
using System.Text.Json;
using Allocators.Workloads;

namespace Allocators.Cli.Bench;

/// <summary>
/// Isolated runs (<c>bench --isolate</c>): every measured run in a fresh child process (the hidden <c>bench-run</c>
/// command), so no allocator starts with what an earlier run left in it (native allocators keep their arenas, caches
/// and partly used pages for the life of the process) and native allocators' own footprint statistics mean "this run".
/// </summary>
internal static class BenchIsolation
{
    /// <summary>The line prefix a child writes its result after.</summary>
    public const string ResultPrefix = "BENCH-RESULT ";

    /// <summary>The hidden command a child runs.</summary>
    public const string ChildCommand = "bench-run";

    /// <summary>True in a child process (<see cref="AllocatorUnderTest.InFreshProcess"/>).</summary>
    public static bool InFreshProcess => AllocatorUnderTest.InFreshProcess;

    /// <summary>How long a child may run before it is killed: far above the longest run (binary-trees at depth 21).</summary>
    public static readonly TimeSpan ChildTimeout = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Runs one measurement in a fresh process. A child that fails, hangs past <see cref="ChildTimeout"/> (it is
    /// killed) or writes no readable result becomes an unverified result that says why.
    /// </summary>
    public static BenchResult RunInChild(Workload workload, AllocatorUnderTest allocator, int threads, BenchScale scale)
    {
        var start = CliProcess.StartInfo(ChildArguments(workload, allocator, threads, scale));
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        using var child = Process.Start(start) ?? throw new InvalidOperationException("could not start a bench child process");
        var output = child.StandardOutput.ReadToEndAsync();
        var errors = child.StandardError.ReadToEndAsync();
        if (!child.WaitForExit(ChildTimeout))
        {
            child.Kill(entireProcessTree: true);
            return Failed($"child process still running after {ChildTimeout.TotalMinutes:0} minutes: killed");
        }
        child.WaitForExit();
        string? line = output.Result.Split('\n').LastOrDefault(l => l.StartsWith(ResultPrefix, StringComparison.Ordinal));
        if (line is not null)
        {
            try
            {
                if (JsonSerializer.Deserialize<BenchResult>(line[ResultPrefix.Length..]) is { } parsed) return parsed;
            }
            catch (JsonException ex)
            {
                return Failed($"unreadable result from the child process: {ex.Message}");
            }
        }
        return Failed($"child process exited with {child.ExitCode} and no result: {errors.Result.Trim()}");

        BenchResult Failed(string why) => new(workload.Name, allocator.Name, threads, 0, TimeSpan.Zero, 0, 0, 0, null, false, why);
    }

    /// <summary>The child's command line after the program.</summary>
    public static IEnumerable<string> ChildArguments(Workload workload, AllocatorUnderTest allocator, int threads, BenchScale scale)
        => [ChildCommand, workload.Name, allocator.Name, threads.ToString(System.Globalization.CultureInfo.InvariantCulture), scale.Name];

    /// <summary>
    /// The child's side: one measured run with no warm-up, then the result line; the exit code says whether it was
    /// verified. A warm-up on a native allocator would leave its arenas and caches holding memory that the measured
    /// run's footprint then reuses or adds to, so the run starts cold: its throughput includes compiling its loops and,
    /// for Allocators, the library's own code (the in-process suite is the one to read throughput from).
    /// </summary>
    public static int RunHere(Workload workload, AllocatorUnderTest allocator, int threads, BenchScale scale, TextWriter output)
    {
        AllocatorUnderTest.InFreshProcess = true;
        var result = new BenchRunner(new BenchPlan([workload], [allocator], [threads], scale)).RunOnce(workload, allocator, threads, scale);
        output.WriteLine(ResultPrefix + JsonSerializer.Serialize(result));
        return result.Verified ? 0 : 1;
    }

    /// <summary>A scale by its name (quick, full, tiny).</summary>
    public static BenchScale? ScaleNamed(string name)
        => new[] { BenchScale.Quick, BenchScale.Full, BenchScale.Tiny }.FirstOrDefault(s => s.Name == name);
}

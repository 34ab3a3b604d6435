using System.Diagnostics;
using System.Text.Json;

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

    /// <summary>
    /// True in a child process: the process ran nothing else, so native allocators' statistics are read for the
    /// footprint column (see <see cref="NativeFootprint"/>).
    /// </summary>
    public static bool InFreshProcess { get; set; }

    /// <summary>Runs one measurement in a fresh process; a child that fails or says nothing becomes an unverified result.</summary>
    public static BenchResult RunInChild(Workload workload, AllocatorUnderTest allocator, int threads, BenchScale scale)
    {
        var start = new ProcessStartInfo
        {
            FileName = Environment.ProcessPath ?? "dotnet",
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // Under `dotnet x.dll` (and in a test host) the process is the dotnet host: name the CLI assembly.
        if (Path.GetFileNameWithoutExtension(start.FileName) == "dotnet") start.ArgumentList.Add(typeof(BenchIsolation).Assembly.Location);
        foreach (string arg in ChildArguments(workload, allocator, threads, scale)) start.ArgumentList.Add(arg);

        using var child = Process.Start(start) ?? throw new InvalidOperationException("could not start a bench child process");
        var errors = child.StandardError.ReadToEndAsync();
        string? line, result = null;
        while ((line = child.StandardOutput.ReadLine()) is not null)
        {
            if (line.StartsWith(ResultPrefix, StringComparison.Ordinal)) result = line[ResultPrefix.Length..];
        }
        child.WaitForExit();
        if (result is not null && JsonSerializer.Deserialize<BenchResult>(result) is { } parsed) return parsed;
        string why = $"child process exited with {child.ExitCode} and no result: {errors.Result.Trim()}";
        return new BenchResult(workload.Name, allocator.Name, threads, 0, TimeSpan.Zero, 0, 0, 0, null, false, why);
    }

    /// <summary>The child's command line after the program.</summary>
    public static IEnumerable<string> ChildArguments(Workload workload, AllocatorUnderTest allocator, int threads, BenchScale scale)
        => [ChildCommand, workload.Name, allocator.Name, threads.ToString(System.Globalization.CultureInfo.InvariantCulture), scale.Name];

    /// <summary>The child's side: measure once (cold, see <see cref="BenchRunner.MeasureOnce"/>), write the result line; the exit code says whether it was verified.</summary>
    public static int RunHere(Workload workload, AllocatorUnderTest allocator, int threads, BenchScale scale, TextWriter output)
    {
        InFreshProcess = true;
        var result = new BenchRunner(new BenchPlan([workload], [allocator], [threads], scale)).MeasureOnce(workload, allocator, threads);
        output.WriteLine(ResultPrefix + JsonSerializer.Serialize(result));
        return result.Verified ? 0 : 1;
    }

    /// <summary>A scale by its name (quick, full, tiny).</summary>
    public static BenchScale? ScaleNamed(string name)
        => new[] { BenchScale.Quick, BenchScale.Full, BenchScale.Tiny }.FirstOrDefault(s => s.Name == name);
}

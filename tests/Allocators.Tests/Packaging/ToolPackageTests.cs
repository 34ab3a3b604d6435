using System.Diagnostics;
using System.Reflection;
using Allocators.Tests.Cli;
using Xunit.Abstractions;

namespace Allocators.Tests.Packaging;

/// <summary>
/// <c>dotnet tool install</c> of the packed Allocators.Cli from the local feed alone (an isolated NuGet cache and a
/// config that lists no other source, so it works offline), then runs of the installed <c>allocators</c>.
/// </summary>
[Collection(PackagingCollection.Name)]
[Trait("Category", "Packaging")]
public sealed class ToolPackageTests(PackedFeed packages, ITestOutputHelper output)
{
    /// <summary>
    /// The most the tool package and the installed tool may take: they were 80 MB and 315 MB with a charting library's
    /// native binaries for 15 platforms; without them about 3 MB and 13 MB.
    /// </summary>
    internal const long MaxBytes = 20L << 20;

    [Fact]
    public void PackedToolInstallsFromTheLocalFolderAndRuns()
    {
        output.WriteLine($"pack: {packages.PackTime.TotalSeconds:0.0} s");
        string work = packages.NewFolder("tool-");
        string config = packages.WriteNugetConfig(work, onlyTheFeed: true);
        string toolPath = Path.Combine(work, "tool");
        var clock = Stopwatch.StartNew();
        DotnetCli.Run(work, Path.Combine(work, "nuget-cache"), "tool", "install", "--tool-path", toolPath, "--add-source", packages.Feed,
            "--configfile", config, "Allocators.Cli", "--version", packages.Version);
        output.WriteLine($"install: {clock.Elapsed.TotalSeconds:0.0} s");

        long installed = new DirectoryInfo(toolPath).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
        output.WriteLine($"installed: {installed / 1048576.0:0.0} MiB");
        Assert.True(installed < MaxBytes, $"the installed tool takes {installed / 1048576.0:0.0} MiB");

        var (code, stdout, stderr) = Allocators(toolPath, "stat");
        Assert.True(code == 0, stderr);
        Assert.Contains("/proc/buddyinfo:", stdout);
        Assert.Contains("/proc/slabinfo:", stdout);
        Assert.Contains("MemTotal:         262144 kB", stdout);

        (code, stdout, stderr) = Allocators(toolPath, "--version");
        Assert.True(code == 0, stderr);
        // The pack reused the test build, so the tool reports the version that build gave it.
        string built = typeof(Allocators.Cli.ExitCodes).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
        Assert.Equal(built, stdout.Trim());
    }

    private (int Code, string Stdout, string Stderr) Allocators(string toolPath, params string[] args)
    {
        var psi = new ProcessStartInfo(Path.Combine(toolPath, "allocators")) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        var result = CliRunner.RunProcess(psi, DotnetCli.Limit);
        output.WriteLine($"$ allocators {string.Join(' ', args)}\n{result.Stdout}");
        return result;
    }
}

using System.Diagnostics;
using System.IO.Compression;
using Xunit.Abstractions;

namespace Allocators.Tests.Cli;

/// <summary>
/// <c>dotnet pack</c> of the library, its native-interop package and the CLI tool into a local folder, then
/// <c>dotnet tool install</c> from that folder alone (an isolated NuGet cache and a config that lists no other
/// source, so it works offline) and a run of the installed <c>allocators stat</c>. Builds into a temporary artifacts
/// folder, never into the repository's bin/obj. Takes 30-60 s.
/// </summary>
[Trait("Category", "Packaging")]
public sealed class PackagingTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(5);

    [Fact]
    public void PackedToolInstallsFromTheLocalFolderAndRuns()
    {
        string repo = RepositoryRoot();
        string work = Path.Combine(Path.GetTempPath(), $"allocators-pack-{Guid.NewGuid():N}");
        string feed = Path.Combine(work, "feed");
        string version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}";
        try
        {
            Directory.CreateDirectory(work);
            var clock = Stopwatch.StartNew();
            Dotnet(work, null, "pack", Path.Combine(repo, "Allocators.Packages.slnf"), "-c", "Release",
                "--artifacts-path", Path.Combine(work, "artifacts"), "-o", feed, $"-p:Version={version}", "-p:RestoreIgnoreFailedSources=true", "-nologo");
            output.WriteLine($"pack: {clock.Elapsed.TotalSeconds:0.0} s");

            foreach (string id in new[] { "Allocators.Native", "Allocators", "Allocators.Cli" })
            {
                Assert.True(File.Exists(Path.Combine(feed, $"{id}.{version}.nupkg")), $"{id}.{version}.nupkg missing");
                Assert.True(File.Exists(Path.Combine(feed, $"{id}.{version}.snupkg")), $"{id}.{version}.snupkg missing");
            }
            using (var lib = ZipFile.OpenRead(Path.Combine(feed, $"Allocators.{version}.nupkg")))
            {
                var names = lib.Entries.Select(e => e.FullName).ToArray();
                Assert.Contains("README.md", names);
                Assert.Contains("lib/net10.0/Allocators.dll", names);
                Assert.Contains("lib/net10.0/Allocators.xml", names);
                using var nuspec = new StreamReader(lib.GetEntry("Allocators.nuspec")!.Open());
                Assert.Contains($"<dependency id=\"Allocators.Native\" version=\"{version}\"", nuspec.ReadToEnd());
            }
            using (var native = ZipFile.OpenRead(Path.Combine(feed, $"Allocators.Native.{version}.nupkg")))
            {
                Assert.Contains("lib/net10.0/Allocators.Native.xml", native.Entries.Select(e => e.FullName));
            }
            using (var tool = ZipFile.OpenRead(Path.Combine(feed, $"Allocators.Cli.{version}.nupkg")))
            {
                var names = tool.Entries.Select(e => e.FullName).ToArray();
                Assert.Contains("README.md", names);
                Assert.Contains("tools/net10.0/any/DotnetToolSettings.xml", names);
                Assert.Contains("tools/net10.0/any/Microsoft.Diagnostics.Runtime.dll", names);
            }

            string config = Path.Combine(work, "nuget.config");
            File.WriteAllText(config, $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                  </packageSources>
                </configuration>
                """);
            string toolPath = Path.Combine(work, "tool");
            clock.Restart();
            Dotnet(work, Path.Combine(work, "nuget-cache"), "tool", "install", "--tool-path", toolPath, "--add-source", feed,
                "--configfile", config, "Allocators.Cli", "--version", version);
            output.WriteLine($"install: {clock.Elapsed.TotalSeconds:0.0} s");

            var psi = new ProcessStartInfo(Path.Combine(toolPath, "allocators")) { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add("stat");
            var (code, stdout, stderr) = CliRunner.RunProcess(psi, Limit);
            output.WriteLine(stdout);
            Assert.True(code == 0, stderr);
            Assert.Contains("/proc/buddyinfo:", stdout);
            Assert.Contains("/proc/slabinfo:", stdout);
            Assert.Contains("MemTotal:         262144 kB", stdout);
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
        }
    }

    private void Dotnet(string workingDirectory, string? nugetCache, params string[] args)
    {
        var psi = new ProcessStartInfo(CliRunner.DotnetHost)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        // The test host's MSBuild variables would leak into the child build.
        foreach (string name in new[] { "MSBuildExtensionsPath", "MSBUILD_EXE_PATH", "MSBuildSDKsPath", "MSBuildLoadMicrosoftTargetsReadOnly" })
            psi.Environment.Remove(name);
        if (nugetCache is not null) psi.Environment["NUGET_PACKAGES"] = nugetCache;
        var (code, stdout, stderr) = CliRunner.RunProcess(psi, Limit);
        Assert.True(code == 0, $"dotnet {string.Join(' ', args)} failed ({code}):\n{stdout}\n{stderr}");
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Allocators.Packages.slnf"))) return dir.FullName;
        }
        throw new InvalidOperationException($"no Allocators.Packages.slnf above {AppContext.BaseDirectory}");
    }
}

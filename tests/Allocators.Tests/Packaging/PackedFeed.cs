using System.Diagnostics;
using System.Reflection;

namespace Allocators.Tests.Packaging;

/// <summary>
/// The tests that pack the repository and use the packages: one <c>dotnet pack</c> for all of them, and they run alone,
/// after the rest of the suite, so their builds take no cores from timing-sensitive tests (nor theirs).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class PackagingCollection : ICollectionFixture<PackedFeed>
{
    public const string Name = "Packaging";
}

/// <summary>
/// <c>dotnet pack --no-build</c> of Allocators.Packages.slnf (Allocators.Native, Allocators, Allocators.AspNetCore and
/// the Allocators.Cli tool) at a version no earlier run used, into a local folder feed under a temporary directory
/// that is deleted when the tests are done. It packs what building this test project built (it references all four):
/// a build of its own took two of the suite's minutes. So the packages carry the version in their metadata, while the
/// assemblies keep the version they were built with.
/// </summary>
public sealed class PackedFeed : IDisposable
{
    /// <summary>The configuration this test assembly, and so the projects it references, was built in.</summary>
    private static readonly string Configuration
        = typeof(PackedFeed).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";

    public PackedFeed()
    {
        Repository = RepositoryRoot();
        Work = Path.Combine(Path.GetTempPath(), $"allocators-pack-{Guid.NewGuid():N}");
        Feed = Path.Combine(Work, "feed");
        Version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}";
        Directory.CreateDirectory(Work);
        var clock = Stopwatch.StartNew();
        try
        {
            DotnetCli.Run(Work, null, "pack", Path.Combine(Repository, "Allocators.Packages.slnf"), "-c", Configuration, "--no-build",
                "-o", Feed, $"-p:Version={Version}", "-nologo");
        }
        catch
        {
            Dispose();
            throw;
        }
        PackTime = clock.Elapsed;
    }

    /// <summary>The repository's root folder.</summary>
    public string Repository { get; }

    /// <summary>A temporary folder for everything the tests build; the feed is in it.</summary>
    public string Work { get; }

    /// <summary>The folder holding the .nupkg and .snupkg files.</summary>
    public string Feed { get; }

    /// <summary>The version every package was packed at.</summary>
    public string Version { get; }

    public TimeSpan PackTime { get; }

    /// <summary>A new empty folder in <see cref="Work"/>, named PREFIX and a unique suffix.</summary>
    public string NewFolder(string prefix) => Directory.CreateDirectory(Path.Combine(Work, $"{prefix}{Guid.NewGuid():N}")).FullName;

    /// <summary>The path of a package in the feed.</summary>
    public string Package(string id, string extension = "nupkg") => Path.Combine(Feed, $"{id}.{Version}.{extension}");

    /// <summary>A nuget.config in <paramref name="directory"/> that adds the feed to the sources the machine already has.</summary>
    /// <param name="directory">Where the file goes.</param>
    /// <param name="onlyTheFeed">True for the feed alone (a tool package needs nothing else).</param>
    /// <param name="fallbackFolder">A packages folder read in place before any source is asked.</param>
    public string WriteNugetConfig(string directory, bool onlyTheFeed, string? fallbackFolder = null)
    {
        string path = Path.Combine(directory, "nuget.config");
        string fallback = fallbackFolder is null ? "" : $"""
              <fallbackPackageFolders>
                <add key="machine" value="{fallbackFolder}" />
              </fallbackPackageFolders>
            """;
        File.WriteAllText(path, $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                {(onlyTheFeed ? "<clear />" : "")}
                <add key="allocators-local" value="{Feed}" />
              </packageSources>
            {fallback}
            </configuration>
            """);
        return path;
    }

    public void Dispose()
    {
        try { Directory.Delete(Work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
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

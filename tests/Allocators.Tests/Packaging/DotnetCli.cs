using System.Diagnostics;
using Allocators.Tests.Cli;

namespace Allocators.Tests.Packaging;

/// <summary>Runs the <c>dotnet</c> command-line interface as a child process, as a user's shell would.</summary>
internal static class DotnetCli
{
    public static readonly TimeSpan Limit = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Runs <c>dotnet ARGS</c> in <paramref name="workingDirectory"/> and returns its standard output; fails the test
    /// when it exits non-zero. <paramref name="nugetCache"/>, when given, is the NuGet packages folder it uses.
    /// </summary>
    public static string Run(string workingDirectory, string? nugetCache, params string[] args)
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
        return stdout;
    }

    /// <summary>The NuGet packages folder this machine's restores fill (NUGET_PACKAGES, else ~/.nuget/packages).</summary>
    public static string GlobalPackagesFolder
        => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } set
            ? set
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
}

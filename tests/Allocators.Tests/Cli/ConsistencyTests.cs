using System.Reflection;
using Xunit.Abstractions;

namespace Allocators.Tests.Cli;

/// <summary>What every command shares: <c>--json</c> in its options, and <c>--version</c> instead of the default command.</summary>
[Trait("Category", "Cli")]
public sealed class ConsistencyTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("demo")]
    [InlineData("stat")]
    [InlineData("stress")]
    [InlineData("inspect")]
    [InlineData("bench")]
    public void EveryCommandHasJson(string command)
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), command, "--help");
        Assert.True(code == 0, stderr);
        Assert.Contains("--json", stdout);
    }

    [Theory]
    [InlineData("--version")]
    [InlineData("-v")]
    public void VersionPrintsTheVersionAndRunsNothing(string option)
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), option);
        output.WriteLine(stdout);
        Assert.True(code == 0, stderr);
        string expected = typeof(Allocators.Cli.ExitCodes).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
        Assert.Equal(expected, stdout.Trim());
    }
}

using Xunit.Abstractions;

namespace Allocators.Tests.Cli;

/// <summary>
/// Every command refuses an option it does not have (exit 2), naming it and listing the ones it has, instead of
/// ignoring it and running with defaults.
/// </summary>
[Trait("Category", "Cli")]
public sealed class UnknownOptionTests(ITestOutputHelper output)
{
    // The valid arguments keep each run short should an unknown option ever be ignored again.
    [Theory]
    [InlineData("stress", "--thread", "stress --thread 5 --seconds 0.2 --arena-mib 16", "-t|--threads <N>", "--arena-mib <MIB>")]
    [InlineData("demo", "--second", "demo --threads 2 --second 0.2", "-s|--seconds <S>", "--json")]
    [InlineData("demo", "--thread", "--thread 2 --seconds 0.2", "-t|--threads <N>", "-h|--help")]
    [InlineData("stat", "--arena", "stat buddyinfo --arena 64", "--arena-mib <MIB>", "--json")]
    [InlineData("inspect", "--leak", "inspect 999999999 --leak", "-l|--leaks", "-d|--dump <FILE>")]
    [InlineData("bench", "--quik", "bench --quik -w no-such-workload", "--quick", "-w|--workload <LIST>")]
    [InlineData("stress", "-x", "stress -x --seconds 0.2 --arena-mib 16", "-s|--seconds <S>", "--seed <N>")]
    public void UnknownOptionIsAUsageErrorThatListsTheValidOnes(string command, string bad, string commandLine, string valid1, string valid2)
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), commandLine.Split(' '));
        output.WriteLine(stderr);
        Assert.True(code == 2, $"exit {code}: {stderr}{stdout}");
        Assert.Contains($"{command}: unknown option '{bad}'", stderr);
        Assert.Contains("valid options:", stderr);
        Assert.Contains(valid1, stderr);
        Assert.Contains(valid2, stderr);
        Assert.Contains($"allocators {command} --help", stderr);
    }

    [Fact]
    public void KnownOptionsInEveryFormStillParse()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "stress", "-t", "2", "--seconds=0.2", "--arena-mib", "16", "--json", "--seed", "3");
        Assert.True(code == 0, stderr + stdout);
    }
}

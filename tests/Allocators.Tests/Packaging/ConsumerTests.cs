using System.Diagnostics;
using System.Runtime.InteropServices;
using Allocators.Tests.Cli;
using Xunit.Abstractions;

namespace Allocators.Tests.Packaging;

/// <summary>
/// tests/Consumer, an app that references Allocators and Allocators.AspNetCore by package, restored from the local
/// feed plus the machine's own NuGet sources, built and run under the JIT, then published with NativeAOT and run.
/// The app exits 0 only when every layer worked and its debug cache named the allocating method; warnings are errors
/// in its build, so a trim or AOT warning from the packages fails the publish.
/// </summary>
[Collection(PackagingCollection.Name)]
[Trait("Category", "Packaging")]
public sealed class ConsumerTests(PackedFeed packages, ITestOutputHelper output)
{
    [Fact]
    public void ConsumerAppBuiltFromThePackagesRunsUnderTheJit()
    {
        string app = CopyConsumer();
        Dotnet(app, "build", "-c", "Release");
        string stdout = Run(CliRunner.DotnetHost, Path.Combine(app, "bin", "Release", "net10.0", "Consumer.dll"));
        Assert.Contains("consumer: ok (jit)", stdout);
        Assert.Contains("allocation site: Program.AllocateTracked+0x", stdout);
    }

    /// <summary>
    /// Published with NativeAOT: with stack trace data (the default) the site names the method, at a machine-code
    /// offset; without it the site is marked unknown and lists image offsets.
    /// </summary>
    [Theory]
    [InlineData(true, "allocation site: Program.AllocateTracked+0x")]
    [InlineData(false, "allocation site: <unknown, AOT> image+0x")]
    public void ConsumerAppPublishedWithNativeAotRuns(bool stackTraceSupport, string expectedSite)
    {
        string linker = NativeLinker()
            ?? throw new InvalidOperationException("NativeAOT needs clang or gcc on PATH to link (apt-get install clang zlib1g-dev); neither was found");
        output.WriteLine($"linker: {linker}");
        string app = CopyConsumer();
        string published = Path.Combine(app, "aot");
        string log = Dotnet(app, "publish", "-c", "Release", "-r", RuntimeInformation.RuntimeIdentifier, "-p:PublishAot=true",
            $"-p:StackTraceSupport={stackTraceSupport}", "-o", published);
        Assert.DoesNotContain("warning", log, StringComparison.OrdinalIgnoreCase);
        string stdout = Run(Path.Combine(published, "Consumer"));
        Assert.Contains("consumer: ok (aot)", stdout);
        Assert.Contains(expectedSite, stdout);
    }

    /// <summary>The linker NativeAOT will use: clang, else gcc (its fallback on Linux); null when neither is on PATH.</summary>
    private static string? NativeLinker()
        => new[] { "clang", "gcc" }
            .SelectMany(name => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Select(dir => Path.Combine(dir, name)))
            .FirstOrDefault(File.Exists);

    /// <summary>
    /// A copy of tests/Consumer outside the repository (so none of its Directory.Build files apply) with a nuget.config
    /// that adds the local feed to the machine's sources and reads the machine's packages folder in place (the AOT
    /// compiler and runtime packs are large); the test's own packages folder holds only what that lacks.
    /// </summary>
    private string CopyConsumer()
    {
        string app = packages.NewFolder("consumer-");
        foreach (string file in Directory.GetFiles(Path.Combine(packages.Repository, "tests", "Consumer")))
            File.Copy(file, Path.Combine(app, Path.GetFileName(file)));
        packages.WriteNugetConfig(app, onlyTheFeed: false, fallbackFolder: DotnetCli.GlobalPackagesFolder);
        return app;
    }

    private string Dotnet(string app, params string[] args)
    {
        var clock = Stopwatch.StartNew();
        string stdout = DotnetCli.Run(app, Path.Combine(packages.Work, "consumer-nuget-cache"), [.. args, $"-p:AllocatorsVersion={packages.Version}", "-nologo"]);
        output.WriteLine($"dotnet {args[0]}: {clock.Elapsed.TotalSeconds:0.0} s");
        return stdout;
    }

    private string Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        var (code, stdout, stderr) = CliRunner.RunProcess(psi, DotnetCli.Limit);
        output.WriteLine(stdout);
        Assert.True(code == 0, $"{program} exited {code}:\n{stdout}\n{stderr}");
        return stdout;
    }
}

using System.Diagnostics;
using System.Text.Json;
using Allocators.Cli.Commands;
using Allocators.Cli.Output;

namespace Allocators.Tests.Cli;

/// <summary>Runs the <c>allocators</c> CLI (copied next to the tests by the project reference) as a child process.</summary>
internal static class CliRunner
{
    public static string CliDll => Path.Combine(AppContext.BaseDirectory, "Allocators.Cli.dll");

    public static string DotnetHost => Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";

    public static ProcessStartInfo StartInfo(params string[] args)
    {
        var psi = new ProcessStartInfo(DotnetHost)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        return psi;
    }

    public static (int ExitCode, string Stdout, string Stderr) Run(TimeSpan timeout, params string[] args)
        => RunProcess(StartInfo(args), timeout);

    public static (int ExitCode, string Stdout, string Stderr) RunProcess(ProcessStartInfo psi, TimeSpan timeout)
    {
        using var process = Process.Start(psi)!;
        if (psi.RedirectStandardInput) process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{psi.FileName} {string.Join(' ', psi.ArgumentList)} did not finish within {timeout}");
        }
        process.WaitForExit();
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>
/// A child process running the hidden <c>allocators selftest-target</c>: it builds a known state, reports its own
/// view of it and waits. Shared by the tests of one class; ended when they are done.
/// </summary>
public sealed class SelftestTargetFixture : IDisposable
{
    private readonly Process _process;

    public SelftestTargetFixture() : this([]) { }

    internal SelftestTargetFixture(string[] extraArgs)
    {
        ProcessStartInfo psi = CliRunner.StartInfo(["selftest-target", .. extraArgs]);
        // The inspector does not read KASAN's quarantine yet (it would count quarantined objects as live).
        psi.Environment.Remove(Allocators.Physical.CheckedModeOptions.EnvironmentVariable);
        _process = Process.Start(psi)!;
        var clock = Stopwatch.StartNew();
        string? json = null;
        while (true)
        {
            var line = _process.StandardOutput.ReadLineAsync();
            if (!line.Wait(TimeSpan.FromSeconds(60)))
            {
                Dispose();
                throw new TimeoutException("selftest-target did not report READY within 60 s");
            }
            if (line.Result is null)
            {
                string err = _process.StandardError.ReadToEnd();
                throw new InvalidOperationException($"selftest-target exited before READY: {err}");
            }
            if (line.Result == "READY") break;
            if (line.Result.StartsWith('{')) json = line.Result;
        }
        StartupTime = clock.Elapsed;
        Report = json is null ? null : JsonSerializer.Deserialize(json, CliJsonContext.Default.SelftestReport);
    }

    public int Pid => _process.Id;

    internal SelftestReport? Report { get; }

    public TimeSpan StartupTime { get; }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.StandardInput.WriteLine("done");
                _process.StandardInput.Flush();
                if (!_process.WaitForExit(10_000)) _process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
    }
}

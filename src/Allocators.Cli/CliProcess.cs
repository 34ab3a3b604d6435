using System.Diagnostics;

namespace Allocators.Cli;

/// <summary>Starts this CLI again as a child process (bench's jemalloc re-exec, isolated bench runs).</summary>
internal static class CliProcess
{
    /// <summary>
    /// A start description for this CLI with <paramref name="args"/>: its own apphost when it runs as one, otherwise
    /// the dotnet host with the CLI assembly (under <c>dotnet Allocators.Cli.dll</c>, and in a test host).
    /// </summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> args)
    {
        string cli = typeof(CliProcess).Assembly.Location;
        string? process = Environment.ProcessPath;
        bool apphost = process is not null
            && string.Equals(Path.GetFileNameWithoutExtension(process), Path.GetFileNameWithoutExtension(cli), StringComparison.Ordinal);
        var start = new ProcessStartInfo { FileName = apphost ? process! : DotnetHost(process), UseShellExecute = false };
        if (!apphost) start.ArgumentList.Add(cli);
        foreach (string arg in args) start.ArgumentList.Add(arg);
        return start;
    }

    private static string DotnetHost(string? process)
        => process is not null && Path.GetFileNameWithoutExtension(process) == "dotnet" ? process : "dotnet";
}

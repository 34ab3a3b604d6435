using Allocators.Cli.Commands;
using Spectre.Console.Cli;

if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 240;

var app = new CommandApp<DemoCommand>();
app.Configure(config =>
{
    config.SetApplicationName("allocators");
    config.AddCommand<DemoCommand>("demo")
        .WithDescription("Build the default memory system, run a short mixed workload and print its statistics (default).");
    config.AddCommand<StatCommand>("stat")
        .WithDescription("Print buddyinfo, zoneinfo and vmstat of a freshly built demo system.");
    config.AddCommand<BenchCommand>("bench")
        .WithDescription("Comparative workload suite (larson, xmalloc-test, cache-scratch/thrash, mstress, glibc-simple/thread, alloc-test, binary-trees) on Allocators vs glibc, NativeMemory, mimalloc, jemalloc, tcmalloc, ArrayPool, GC; writes bench-results/.");
});
return app.Run(args);

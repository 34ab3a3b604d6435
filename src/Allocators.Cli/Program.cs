using Allocators.Cli;
using Allocators.Cli.Commands;
using Spectre.Console.Cli;

if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 240;

var app = new CommandApp<DemoCommand>();
var commands = new OptionCatalog();
app.Configure(config =>
{
    config.SetApplicationName("allocators");
    config.UseAssemblyInformationalVersion();
    // An option a command does not have is a usage error, not something to ignore while running with the defaults.
    config.UseStrictParsing();
    config.SetExceptionHandler((exception, _) => CliErrors.Handle(exception, args, commands));
    config.AddExample("demo", "--threads", "4", "--seconds", "5");
    config.AddExample("stat", "buddyinfo", "meminfo");
    config.AddExample("stress", "--threads", "8", "--seconds", "10");
    config.AddExample("inspect", "1234", "--leaks");
    commands.AddCommand<DemoCommand>(config, "demo", isDefault: true)
        .WithDescription("Build the default memory system, run a short mixed workload and print its statistics (default).")
        .WithExample("demo")
        .WithExample("demo", "--threads", "4", "--seconds", "5")
        .WithExample("demo", "--json");
    commands.AddCommand<StatCommand>(config, "stat")
        .WithDescription("Print buddyinfo, zoneinfo, slabinfo, vmallocinfo (when the library has vmalloc), meminfo and vmstat of a freshly built demo system.")
        .WithExample("stat")
        .WithExample("stat", "buddyinfo", "meminfo")
        .WithExample("stat", "--json");
    commands.AddCommand<StressCommand>(config, "stress")
        .WithDescription("Run a mixed multi-threaded workload over every layer with cross-thread frees, then audit that every object "
            + "is accounted for and the free lists are back to the start (exit 1 when not).")
        .WithExample("stress")
        .WithExample("stress", "--threads", "8", "--seconds", "10")
        .WithExample("stress", "--threads", "2", "--seconds", "1", "--json");
    commands.AddCommand<InspectCommand>(config, "inspect")
        .WithDescription("Read the memory systems of a running .NET process or of a core dump without running code in it, and print "
            + "buddyinfo, slabinfo and meminfo like /proc (exit 3 when the target is missing, unreadable or incompatible).")
        .WithExample("inspect", "1234")
        .WithExample("inspect", "1234", "--leaks")
        .WithExample("inspect", "--dump", "core.1234", "--json");
    commands.AddCommand<SelftestTargetCommand>(config, "selftest-target")
        .WithDescription("A process with a known state for the inspector's tests: prints its own view, then READY, then waits for a line.")
        .IsHidden();
    commands.AddCommand<KfenceFaultCommand>(config, "kfence-fault")
        .WithDescription("A process for KFENCE's tests: gets a guarded kmalloc and makes a bad access to it through a raw pointer.")
        .IsHidden();
    commands.AddCommand<BenchRunCommand>(config, Allocators.Cli.Bench.BenchIsolation.ChildCommand)
        .WithDescription("One isolated bench run (what bench --isolate starts per measurement); prints its result as JSON.")
        .IsHidden();
    commands.AddCommand<BenchCommand>(config, "bench")
        .WithDescription("Comparative workload suite (larson, xmalloc-test, cache-scratch/thrash, mstress, glibc-simple/thread, alloc-test, binary-trees) on Allocators vs glibc, NativeMemory, mimalloc, jemalloc, tcmalloc, ArrayPool, GC; writes bench-results/.")
        .WithExample("bench", "--quick")
        .WithExample("bench", "--full")
        .WithExample("bench", "--full", "-w", "larson", "--isolate")
        .WithExample("bench", "-w", "traces", "--pages", "4096");
});
return app.Run(args);

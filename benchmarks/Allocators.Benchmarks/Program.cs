using Allocators.Benchmarks;
using BenchmarkDotNet.Running;

// jemalloc needs a glibc tunable set before the process starts; see StaticTls.
if (StaticTls.RelaunchIfMissing(args) is int exitCode) return exitCode;

NativeAllocatorColumns.PrintStatus(Console.Out);
BenchmarkSwitcher.FromAssembly(typeof(PageAllocBenchmarks).Assembly).Run(args);
return 0;

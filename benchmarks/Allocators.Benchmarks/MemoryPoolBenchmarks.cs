using System.Buffers;
using Allocators.Buffers;
using Allocators.Physical;
using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;

namespace Allocators.Benchmarks;

/// <summary>
/// One Rent(-1) + Dispose pair of a 4 KiB block, the way Kestrel uses its pool, on one thread or on two threads
/// sharing one pool. Kestrel's own pool is the real PinnedBlockMemoryPool (internal to Kestrel), created through the
/// <see cref="IMemoryPoolFactory{T}"/> that a Kestrel web application registers, as Kestrel itself creates it.
/// Mean is the wall time per pair of one thread (both threads do <see cref="Pairs"/> pairs each, concurrently).
/// </summary>
[Config(typeof(BenchConfig))]
public class MemoryPoolBenchmarks
{
    private const int Pairs = 100_000;

    /// <summary>Kestrel's pool.</summary>
    public const string Kestrel = "Kestrel PinnedBlockMemoryPool";

    /// <summary>Ours with pinned arrays, as AddAllocatorsMemoryPool sets it up for Kestrel.</summary>
    public const string OursArrays = "NativeMemoryPool arrays";

    /// <summary>Ours with native buffers.</summary>
    public const string OursNative = "NativeMemoryPool native";

    private MemorySystem? _system;
    private WebApplication? _app;
    private MemoryPool<byte> _pool = null!;
    private WorkerCrew _crew = null!;

    /// <summary>Whose pool.</summary>
    [Params(Kestrel, OursArrays, OursNative)]
    public string Pool { get; set; } = "";

    /// <summary>Threads renting and returning at once, on one shared pool.</summary>
    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        if (Pool == Kestrel)
        {
            _app = WebApplication.CreateSlimBuilder().Build();
            _pool = _app.Services.GetRequiredService<IMemoryPoolFactory<byte>>().Create();
        }
        else
        {
            _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 256L << 20 } });
            _pool = new NativeMemoryPool(_system.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = Pool == OursArrays });
        }
        _crew = new WorkerCrew(Threads, "pool", WorkerLoop);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _crew.Dispose();
        _pool.Dispose();
        _system?.Dispose();
        (_app as IDisposable)?.Dispose();
    }

    /// <summary>Pairs of Rent(-1) and Dispose per thread.</summary>
    [Benchmark(OperationsPerInvoke = Pairs)]
    public void RentReturn() => _crew.RunOnce();

    private void WorkerLoop(int id)
    {
        MemoryPool<byte> pool = _pool;
        for (int i = 0; i < Pairs; i++)
        {
            IMemoryOwner<byte> owner = pool.Rent(-1);
            owner.Dispose();
        }
    }
}

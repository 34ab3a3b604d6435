using System.Buffers;
using System.Runtime.CompilerServices;
using Allocators;
using Allocators.AspNetCore;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;

namespace Consumer;

/// <summary>
/// Every layer a user reaches first, checked: kmalloc, pages, a typed cache, a debug cache's allocation site (which
/// must name this method under the JIT and under NativeAOT) and Kestrel's pool factory. Prints one line per check and
/// "consumer: ok" at the end; exits 1 at the first check that fails.
/// </summary>
public static unsafe class Program
{
    public static int Main()
    {
        string mode = RuntimeFeature.IsDynamicCodeSupported ? "jit" : "aot";
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 32L << 20 } });

        byte* p = (byte*)system.Slab.Kmalloc(100);
        Check(p != null, "kmalloc(100) returned null");
        p[99] = 42;
        system.Slab.Kfree(p);

        PageFrame* page = system.Pages.AllocPages(Gfp.Kernel, order: 2);
        Check(page != null, "AllocPages(order 2) returned null");
        system.Pages.FreePages(page, 2);

        var points = system.Slab.CreateCache<Point>("consumer-point");
        Point* point = points.Alloc();
        point->X = 1;
        point->Y = 2;
        points.Free(point);
        Console.WriteLine("slab and pages: ok");

        KmemCache tracked = system.Slab.CreateCache("consumer-tracked", 64, 0, SlabFlags.Debug);
        void* live = AllocateTracked(tracked);
        string? site = tracked.AllocationSite(live);
        Console.WriteLine($"allocation site: {site}");
        // Published with StackTraceSupport off, NativeAOT keeps no method names: the site says so and lists image offsets.
        string expected = StackTraceHasNames() ? "Program.AllocateTracked+0x" : CallSiteTable.UnknownUnderAot + " image+0x";
        Check(site is not null && site.StartsWith(expected, StringComparison.Ordinal), $"the allocation site does not start with {expected}");
        tracked.Free(live);

        var services = new ServiceCollection();
        services.AddAllocators().AddAllocatorsMemoryPool();
        using (var provider = services.BuildServiceProvider())
        {
            var factory = provider.GetRequiredService<IMemoryPoolFactory<byte>>();
            using var pool = factory.Create();
            using (IMemoryOwner<byte> owner = pool.Rent(4096))
            {
                Check(owner.Memory.Length >= 4096, $"rented {owner.Memory.Length} bytes for 4096");
                owner.Memory.Span.Fill(7);
                Check(owner.Memory.Span[4095] == 7, "the rented buffer did not keep its bytes");
            }
        }
        Console.WriteLine("kestrel pool factory: ok");

        Console.WriteLine($"consumer: ok ({mode})");
        return 0;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* AllocateTracked(KmemCache cache) => cache.Alloc();

    private static bool StackTraceHasNames()
        => !AppContext.TryGetSwitch("System.Diagnostics.StackTrace.IsSupported", out bool supported) || supported;

    private static void Check(bool condition, string failure)
    {
        if (condition) return;
        Console.Error.WriteLine($"consumer: FAILED: {failure}");
        Environment.Exit(1);
    }

    private struct Point
    {
        public long X;
        public long Y;
    }
}

using Allocators.Mmu;

namespace Allocators.Cli.Commands;

/// <summary>
/// A memory system brought to the state a freshly booted kernel is in, so every /proc view <c>stat</c> prints has the
/// lines a real one has: vmalloc'd kernel-thread stacks (VMAP_STACK) and a large hash table in vmallocinfo, populated
/// slab caches, the first per-CPU chunk, and an init process whose faulted pages own page tables (meminfo's PageTables).
/// </summary>
internal static unsafe class KernelBoot
{
    /// <summary>THREAD_SIZE on x86-64 without KASAN: 16 KiB (order 2).</summary>
    private const ulong ThreadSize = 16 * 1024;

    /// <summary>The per-CPU kernel threads a boot starts (cpuhp, migration, ksoftirqd, kworker/N:0, kworker/N:0H).</summary>
    private const int ThreadsPerCpu = 5;

    /// <summary>kthreadd, rcu_gp, rcu_sched, kswapd0, khugepaged.</summary>
    private const int GlobalThreads = 5;

    /// <summary>Per-CPU event counters set up at boot (a few of vm_event_states' items).</summary>
    private const int PerCpuCounters = 16;

    /// <summary>Pages init touches: its text, data, heap and stack before it forks anything.</summary>
    private const int InitPages = 48;

    /// <summary>Builds the system with the given arena and boots it; the caller disposes it.</summary>
    public static MemorySystem Boot(int arenaMiB)
    {
        var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new Physical.PhysicalMemoryOptions { Size = (long)arenaMiB << 20 },
        });
        try
        {
            int cpus = Environment.ProcessorCount;
            for (int i = 0; i < GlobalThreads + ThreadsPerCpu * cpus; i++) AllocThreadStackNode(system);
            AllocLargeSystemHash(system, entries: 4096);
            SetupPerCpuAreas(system);
            StartInit(system);
            return system;
        }
        catch
        {
            system.Dispose();
            throw;
        }
    }

    /// <summary>A kernel thread's stack: vmalloc'd with a guard page (alloc_thread_stack_node).</summary>
    private static void AllocThreadStackNode(MemorySystem system)
    {
        if (system.Vmalloc.Vzalloc(ThreadSize) == 0) throw new OutOfMemoryException("boot: no memory for a kernel thread stack.");
    }

    /// <summary>A hash table sized at boot (alloc_large_system_hash), vmalloc'd as with hashdist.</summary>
    private static void AllocLargeSystemHash(MemorySystem system, int entries)
    {
        if (system.Vmalloc.Vzalloc((ulong)entries * sizeof(ulong)) == 0) throw new OutOfMemoryException("boot: no memory for a system hash table.");
    }

    /// <summary>The first per-CPU chunk and the per-CPU statistics it holds (setup_per_cpu_areas, vm_event_states).</summary>
    private static void SetupPerCpuAreas(MemorySystem system)
    {
        for (int i = 0; i < PerCpuCounters; i++) system.Percpu.AllocPercpu<long>();
    }

    /// <summary>pid 1: an address space with anonymous memory it has written, and the slab objects a task owns.</summary>
    private static void StartInit(MemorySystem system)
    {
        var init = new AddressSpace(system.Kernel, "init");
        ulong length = InitPages * (ulong)VirtualAddress.PageSize;
        ulong va = init.Mmap(0, length, MemoryProtection.Read | MemoryProtection.Write, MapFlags.Private | MapFlags.Anonymous);
        for (ulong off = 0; off < length; off += VirtualAddress.PageSize) init.Write(va + off, off);
        // The task's kernel objects: its files table, signal handlers and credentials.
        foreach (nuint size in (ReadOnlySpan<nuint>)[704, 2072, 176, 1152]) system.Slab.Kmalloc(size);
    }
}

using System.Runtime.CompilerServices;

namespace Allocators.Percpu;

/// <summary>Visits one CPU's copy of a per-CPU variable.</summary>
public delegate void PercpuVisitor<T>(int cpu, ref T value) where T : unmanaged;

/// <summary>A typed per-CPU variable: one <typeparamref name="T"/> per possible CPU, <see cref="PercpuAllocator.UnitSize"/> apart.</summary>
public readonly unsafe struct Percpu<T> where T : unmanaged
{
    private readonly PercpuAllocator _owner;

    internal Percpu(PercpuAllocator owner, nint pointer)
    {
        _owner = owner;
        Pointer = pointer;
    }

    /// <summary>The unit-0 address (the kernel's __percpu pointer).</summary>
    public nint Pointer { get; }

    /// <summary>The current CPU's copy (this_cpu_ptr). The thread may migrate right after; use atomics for updates.</summary>
    public ref T ThisCpu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref Checked((T*)_owner.ThisCpuPtr(Pointer), "this_cpu_ptr");
    }

    /// <summary>CPU <paramref name="cpu"/>'s copy (per_cpu_ptr).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T PerCpu(int cpu) => ref Checked((T*)_owner.PerCpuPtr(Pointer, cpu), "per_cpu_ptr");

    /// <summary>The copy at <paramref name="p"/>; with KASAN on, a copy freed or wider than the allocation is reported first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref T Checked(T* p, string function)
    {
        // The caller may read or write through the reference; KASAN's report names it a read.
        _owner.Kasan?.Check(p, (nuint)sizeof(T), write: false, function);
        return ref *p;
    }

    /// <summary>Runs <paramref name="visit"/> on every possible CPU's copy (for_each_possible_cpu).</summary>
    public void ForEachPossibleCpu(PercpuVisitor<T> visit)
    {
        for (int cpu = 0; cpu < _owner.PossibleCpus; cpu++) visit(cpu, ref PerCpu(cpu));
    }

    /// <summary>Frees the variable (free_percpu).</summary>
    public void Free() => _owner.FreePercpu(Pointer);
}

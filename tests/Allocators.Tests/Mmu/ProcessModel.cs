using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

/// <summary>A page's value in a model: shared mappings share the cell across forks, private ones get a copy.</summary>
internal sealed class Cell
{
    public long Value;
}

/// <summary>What a model knows of one mapped page.</summary>
internal sealed record PageModel(MemoryProtection Prot, Cell Cell, bool Shared);

/// <summary>
/// The processes of a model-based test (at most three) and, for each, a dictionary model of its pages by page number
/// from <see cref="Base"/>: fork, exit and a one-page mremap done on both at once.
/// </summary>
internal sealed class ProcessModel(ulong @base, AddressSpace first)
{
    public const int MaxProcesses = 3;

    public ulong Base { get; } = @base;

    public List<AddressSpace> Processes { get; } = [first];

    public List<Dictionary<int, PageModel>> Models { get; } = [new()];

    public ulong Va(int page) => Base + (ulong)page * 4096;

    /// <summary>Process <paramref name="index"/> forks, unless there are three already.</summary>
    public void Fork(int index)
    {
        if (Processes.Count >= MaxProcesses) return;
        Processes.Add(Processes[index].Fork());
        Models.Add(Models[index].ToDictionary(kv => kv.Key,
            kv => kv.Value.Shared ? kv.Value : kv.Value with { Cell = new Cell { Value = kv.Value.Cell.Value } }));
    }

    /// <summary>Process <paramref name="index"/> exits, unless it is the last.</summary>
    public void Exit(int index)
    {
        if (Processes.Count <= 1) return;
        Processes[index].Dispose();
        Processes.RemoveAt(index);
        Models.RemoveAt(index);
    }

    /// <summary>Moves one mapped page of process <paramref name="index"/> to <paramref name="target"/> (MREMAP_FIXED).</summary>
    public void MremapPage(int index, int page, int target)
    {
        Dictionary<int, PageModel> model = Models[index];
        if (target == page || !model.ContainsKey(page)) return;
        Processes[index].Mremap(Va(page), 4096, 4096, MremapFlags.MayMove | MremapFlags.Fixed, Va(target));
        model[target] = model[page];
        model.Remove(page);
    }

    /// <summary>Process <paramref name="index"/> maps pages [<paramref name="page"/>, <paramref name="end"/>) anonymously at fixed addresses.</summary>
    public void Mmap(int index, int page, int end, MemoryProtection prot, bool shared, MapFlags extra = 0)
    {
        Processes[index].Mmap(Va(page), (ulong)(end - page) * 4096, prot,
            (shared ? MapFlags.Shared : MapFlags.Private) | MapFlags.Anonymous | MapFlags.Fixed | extra);
        for (int p = page; p < end; p++) Models[index][p] = new PageModel(prot, new Cell(), shared);
    }

    /// <summary>Process <paramref name="index"/> unmaps pages [<paramref name="page"/>, <paramref name="end"/>).</summary>
    public void Munmap(int index, int page, int end)
    {
        Processes[index].Munmap(Va(page), (ulong)(end - page) * 4096);
        for (int p = page; p < end; p++) Models[index].Remove(p);
    }

    /// <summary>
    /// Reads page <paramref name="page"/> of process <paramref name="index"/>: the model's value, or the fault the
    /// model expects (an access error for a page mapped without access, a map error for one not mapped).
    /// </summary>
    public void CheckPage(int index, int page)
    {
        ulong va = Va(page) + 64;
        Dictionary<int, PageModel> model = Models[index];
        if (model.TryGetValue(page, out PageModel? m) && m.Prot != MemoryProtection.None)
        {
            Assert.Equal(m.Cell.Value, Processes[index].Read<long>(va));
            return;
        }
        var ex = Assert.Throws<SegmentationFaultException>(() => Processes[index].Read<long>(va));
        Assert.Equal(model.ContainsKey(page) ? SegvCode.AccessError : SegvCode.MapError, ex.Code);
    }

    /// <summary>Every process's page tables are consistent and every <paramref name="step"/>-th page of the window reads as its model says.</summary>
    public void CheckAll(int window, int step = 1)
    {
        for (int i = 0; i < Processes.Count; i++)
        {
            Processes[i].CheckConsistency();
            for (int p = 0; p < window; p += step) CheckPage(i, p);
        }
    }

    /// <summary>Every process exits.</summary>
    public void DisposeAll()
    {
        foreach (AddressSpace p in Processes) p.Dispose();
    }
}

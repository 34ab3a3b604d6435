using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Native;

namespace Allocators.Threading;

/// <summary>
/// The calling thread's record, found from its stack pointer with no thread-local read: the plain API's fast paths
/// (<c>Kmalloc</c>, <c>Kfree</c>, <c>KmemCache.Alloc</c>, <c>AllocPages</c>) start here instead of at a
/// <c>[ThreadStatic]</c>, which on linux-x64 under the JIT is a call to glibc's <c>__tls_get_addr</c> (the runtime is a
/// shared library, so its thread-local block has no fixed offset from the thread pointer) and spills the caller's
/// registers around it. The lookup is a handful of instructions with no call: one table slot chosen by the stack
/// address, and the record's stack bounds to confirm it.
/// </summary>
/// <remarks>
/// <para><b>How a record is found.</b> A process-wide table has <see cref="TableSize"/> slots, one per 64 KiB chunk of
/// address space modulo the table size; a thread that misses writes its record into the slot of the chunk its stack
/// pointer is in. A slot is only a hint: the record it names is the caller's only if the caller's stack pointer lies
/// in the record's stack, [<see cref="Low"/>, <see cref="Low"/> + <see cref="Size"/>), and live threads' stacks never
/// overlap. Two threads whose chunks share a slot overwrite each other's hint and take the slow path (the
/// thread-locals) more often; neither ever gets the other's record.</para>
/// <para><b>Why a dead thread's record is never found.</b> glibc reuses a dead thread's stack for a new thread, whose
/// stack pointer then lies in the old bounds. Each thread that claims a record registers it under a pthread key whose
/// destructor, a few bytes of machine code (<see cref="ExitCode"/>), sets <see cref="Size"/> to 0 and then
/// <see cref="Dead"/> to 1 on the exiting thread, before glibc releases the stack; from then on no stack pointer
/// passes the bounds test, and the record may be claimed again. A claimer writes <see cref="Low"/> and the payload
/// first and <see cref="Size"/> last, and a reader loads <see cref="Size"/> first, so a reader sees new bounds only
/// with everything written before them (x86-64 keeps stores in order and loads in order).</para>
/// <para><b>Invariants</b>: records are never freed (a stale hint always points at a record); a record with
/// <see cref="Size"/> ≠ 0 belongs to one live thread, and only that thread writes it; <see cref="Dead"/> = 1 ⇒
/// <see cref="Size"/> = 0. The thread-locals stay the authority: a record carries copies the owner keeps in step.
/// Linux x86-64 only (<see cref="Enabled"/>); elsewhere every caller reads its thread-locals as before.</para>
/// </remarks>
[StructLayout(LayoutKind.Sequential, Size = 2 * CacheLines.Size)]
internal unsafe struct ThreadRecord
{
    /// <summary>Lowest address of the owner's stack.</summary>
    public nuint Low;

    /// <summary>Bytes of the owner's stack; 0 while the record has no live owner.</summary>
    public nuint Size;

    /// <summary>1 once the owner has exited (or before the first claim): the record may be claimed.</summary>
    public int Dead;

    /// <summary>The owner's slab context (<c>SlabCpus</c>' thread-local), or null.</summary>
    public void* SlabContext;

    /// <summary>The owner's registry slot table (<see cref="ThreadCacheRegistry"/>'s thread-local), or null.</summary>
    public void* Slots;

    /// <summary>Key of the address space whose TLB <see cref="Tlb"/> is (the software MMU's CR3-like cursor); 0: none.</summary>
    public long TlbKey;

    /// <summary>The owner's most recently used software TLB.</summary>
    public void* Tlb;

    /// <summary>
    /// (id, cache) of registry slots 0 .. <see cref="InlineSlots"/> - 1, copies of the slot table's entries: a lookup
    /// of a low slot reads them right after the bounds, one dependent load fewer than through <see cref="Slots"/>.
    /// </summary>
    public fixed long Inline[2 * InlineSlots];

    /// <summary>Registry slots whose entries the record carries itself.</summary>
    public const int InlineSlots = 4;

    /// <summary>Table slots; a power of two. 8192 slots of 64 KiB span 512 MiB before two chunks share a slot.</summary>
    public const int TableSize = 8192;

    private const int ChunkShift = 16;
    private const int RecordsPerBlock = 64;

    // mov qword [rdi+8], 0 (Size); mov dword [rdi+16], 1 (Dead); ret. glibc passes the key's value, the record, in rdi.
    private static ReadOnlySpan<byte> ExitCode => [0x48, 0xC7, 0x47, 0x08, 0x00, 0x00, 0x00, 0x00, 0xC7, 0x47, 0x10, 0x01, 0x00, 0x00, 0x00, 0xC3];

    /// <summary>True where the lookup runs: Linux x86-64 with the exit stub mapped and its pthread key created.</summary>
    public static readonly bool Enabled;

    private static readonly ThreadRecord** s_table;
    private static readonly uint s_key;
    private static readonly ThreadRecord* s_nobody; // what every empty slot names: Size 0, so no bounds test passes
    private static readonly Lock s_lock = new();
    private static readonly List<nint> s_blocks = new();

    /// <summary>The calling thread's record; null before <see cref="Claim"/>, while it has none, or off Linux x86-64.</summary>
    [ThreadStatic] private static ThreadRecord* t_record;
    [ThreadStatic] private static bool t_refused;

#pragma warning disable CA1810 // the fields depend on each other and on the stub's success
    static ThreadRecord()
    {
        s_nobody = (ThreadRecord*)CacheLines.AllocIsolated((nuint)sizeof(ThreadRecord));
        *s_nobody = default;
        s_table = (ThreadRecord**)NativeMemory.AlignedAlloc(TableSize * (nuint)sizeof(nint), CacheLines.Size);
        for (int i = 0; i < TableSize; i++) s_table[i] = s_nobody;
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return;
        byte* code = HostMemory.MapCode(ExitCode);
        uint key;
        if (code == null || Libc.PthreadKeyCreate(&key, code) != 0) return;
        s_key = key;
        Enabled = true;
    }
#pragma warning restore CA1810

    /// <summary>
    /// The calling thread's record when the table's hint for its stack chunk names it; null otherwise (then
    /// <see cref="Publish"/>, and the thread-locals, give the answer).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ThreadRecord* Current()
    {
        byte probe;
        nuint sp = (nuint)(&probe);
        ThreadRecord* r = s_table[(sp >> ChunkShift) & (TableSize - 1)];
        nuint size = Volatile.Read(ref r->Size);
        return sp - r->Low < size ? r : null;
    }

    /// <summary>
    /// After a miss: the calling thread's record (claimed on first use), written into the slot of its current stack
    /// chunk so the next lookup from this depth finds it; null where there is none (off Linux x86-64, a stack glibc
    /// cannot tell, or the key refused).
    /// </summary>
    public static ThreadRecord* Publish()
    {
        ThreadRecord* r = Mine();
        if (r == null) return null;
        byte probe;
        nuint sp = (nuint)(&probe);
        Debug.Assert(sp - r->Low < r->Size, "a thread's stack pointer lies in its own record's bounds");
        s_table[(sp >> ChunkShift) & (TableSize - 1)] = r;
        return r;
    }

    /// <summary>The calling thread's record, claimed on first use; null where there is none.</summary>
    public static ThreadRecord* Mine()
    {
        ThreadRecord* r = t_record;
        return r != null ? r : Claim();
    }

    /// <summary>Takes a dead or fresh record for the calling thread and registers it under the exit key.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ThreadRecord* Claim()
    {
        if (!Enabled || t_refused) return null;
        if (!HostMemory.TryGetThreadStack(out nuint low, out nuint high))
        {
            t_refused = true;
            return null;
        }
        ThreadRecord* r = TakeDead();
        r->Low = low;
        r->SlabContext = null;
        r->Slots = null;
        r->TlbKey = 0;
        r->Tlb = null;
        for (int i = 0; i < 2 * InlineSlots; i++) r->Inline[i] = 0; // the dead owner's caches are not this thread's
        if (Libc.PthreadSetspecific(s_key, r) != 0)
        {
            Volatile.Write(ref r->Dead, 1);
            t_refused = true;
            return null;
        }
        Volatile.Write(ref r->Size, high - low);
        t_record = r;
        return r;
    }

    private static ThreadRecord* TakeDead()
    {
        lock (s_lock)
        {
            foreach (nint block in s_blocks)
            {
                var records = (ThreadRecord*)block;
                for (int i = 0; i < RecordsPerBlock; i++)
                {
                    if (Volatile.Read(ref records[i].Dead) == 1 && Interlocked.CompareExchange(ref records[i].Dead, 0, 1) == 1)
                        return records + i;
                }
            }
            var fresh = (ThreadRecord*)CacheLines.AllocIsolated((nuint)(RecordsPerBlock * sizeof(ThreadRecord)));
            for (int i = 0; i < RecordsPerBlock; i++) fresh[i] = new ThreadRecord { Dead = 1 };
            s_blocks.Add((nint)fresh);
            fresh[0].Dead = 0;
            return fresh;
        }
    }

    /// <summary>Records made so far (each 128 bytes, never freed).</summary>
    internal static int Capacity
    {
        get { lock (s_lock) return s_blocks.Count * RecordsPerBlock; }
    }
}

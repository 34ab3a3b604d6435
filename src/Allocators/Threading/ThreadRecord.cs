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
/// in the record's stack (<see cref="Bounds"/>: first page and page count in one word, so a reader never pairs one
/// owner's base with another's length), and live threads' stacks never overlap. Two threads whose chunks share a slot
/// overwrite each other's hint and take the slow path (the thread-locals) more often; neither ever gets the other's
/// record.</para>
/// <para><b>Why a dead thread's record is never found.</b> glibc reuses a dead thread's stack for a new thread, whose
/// stack pointer then lies in the old bounds. Each thread that claims a record registers it under a pthread key whose
/// destructor, a few bytes of machine code (<see cref="ExitCode"/>), sets <see cref="Bounds"/> to 0 and then
/// <see cref="Dead"/> to 1 on the exiting thread, before glibc releases the stack; from then on no stack pointer
/// passes the bounds test, and the record may be claimed again. A claimer writes the payload first and
/// <see cref="Bounds"/> last, so a thread that passes the test is the record's live owner and reads what it wrote
/// itself. The bounds cover at most the top 16 MiB of a stack (glibc derives the main thread's from its rlimit, which
/// may be unlimited and then reaches down past the heap); deeper frames take the thread-locals.</para>
/// <para><b>Limit</b>: a record lives as long as its pthread, the thread-locals as long as the managed thread. If native
/// code called back into .NET on a pthread whose managed thread had ended (from a thread-exit destructor that runs
/// before this key's), the lookup would still return the old record, whose slab context the registries may have
/// retired or handed on; its first slow path takes the record back (<see cref="Claim"/>).</para>
/// <para><b>Invariants</b>: records are never freed (a stale hint always points at a record); a record with
/// <see cref="Bounds"/> ≠ 0 belongs to one live thread, and only that thread writes it; <see cref="Dead"/> = 1 ⇒
/// <see cref="Bounds"/> = 0. The thread-locals stay the authority: a record carries copies the owner keeps in step.
/// Linux x86-64 only (<see cref="Enabled"/>); elsewhere every caller reads its thread-locals as before.</para>
/// </remarks>
[StructLayout(LayoutKind.Sequential, Size = 2 * CacheLines.Size)]
internal unsafe struct ThreadRecord
{
    /// <summary>Lowest address of the owner's stack the bounds cover (for diagnostics; lookups read <see cref="Bounds"/>).</summary>
    public nuint Low;

    /// <summary>
    /// The owner's stack as one word, (first page number &lt;&lt; 16) | pages, so a reader loads it whole: it can never
    /// pair one owner's base with another's length. 0 while the record has no live owner.
    /// </summary>
    public ulong Bounds;

    /// <summary>1 once the owner has exited (or before the first claim): the record may be claimed.</summary>
    public int Dead;

    /// <summary>The owner's slab context (<c>SlabCpus</c>' thread-local), or null.</summary>
    public void* SlabContext;

    /// <summary>The owner's registry slot table (<see cref="ThreadCacheRegistry"/>'s thread-local), or null.</summary>
    public void* Slots;

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
    private const int PageShift = 12;
    private const ulong PagesMask = 0xFFFF;
    private const nuint MaxSpan = 16 << 20; // 4096 pages: fits PagesMask

    /// <summary>Bytes of the owner's stack the bounds cover (at most the top 16 MiB); 0 while it has no live owner.</summary>
    public readonly nuint Size => (nuint)((Bounds & PagesMask) << PageShift);

    /// <summary>True when <paramref name="sp"/> lies in the bounds <paramref name="bounds"/> (one word, read once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool InBounds(ulong bounds, nuint sp) => ((ulong)sp >> PageShift) - (bounds >> 16) < (bounds & PagesMask);

    private const int RecordsPerBlock = 64;

    // mov qword [rdi+8], 0 (Bounds); mov dword [rdi+16], 1 (Dead); ret. glibc passes the key's value, the record, in rdi.
    private static ReadOnlySpan<byte> ExitCode => [0x48, 0xC7, 0x47, 0x08, 0x00, 0x00, 0x00, 0x00, 0xC7, 0x47, 0x10, 0x01, 0x00, 0x00, 0x00, 0xC3];

    /// <summary>True where the lookup runs: Linux x86-64 with the exit stub mapped and its pthread key created.</summary>
    public static readonly bool Enabled;

    private static readonly ThreadRecord** s_table;
    private static readonly uint s_key;
    private static readonly ThreadRecord* s_nobody; // what every empty slot names: Bounds 0, so no bounds test passes
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
        return InBounds(Volatile.Read(ref r->Bounds), sp) ? r : null;
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
        // Below the bounds' cap (MaxSpan) the thread keeps taking the thread-locals: no hint to write there.
        if (InBounds(r->Bounds, sp)) s_table[(sp >> ChunkShift) & (TableSize - 1)] = r;
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
        // At most the top MaxSpan of the stack: glibc reports the main thread's stack from its rlimit, which with an
        // unlimited rlimit reaches down past the heap, where other mappings (and thread stacks) can lie.
        low = (low + ((1u << PageShift) - 1)) & ~(nuint)((1u << PageShift) - 1);
        high &= ~(nuint)((1u << PageShift) - 1);
        if (high - low > MaxSpan) low = high - MaxSpan;
        // A pthread that already has a record (native code called back into .NET during its exit, after its managed
        // thread ended, so its thread-locals are new) takes it back rather than leaving it live under the key forever.
        var r = (ThreadRecord*)Libc.PthreadGetspecific(s_key);
        if (r != null) Volatile.Write(ref r->Bounds, 0);
        else r = TakeDead();
        r->Low = low;
        r->SlabContext = null;
        r->Slots = null;
        for (int i = 0; i < 2 * InlineSlots; i++) r->Inline[i] = 0; // the dead owner's caches are not this thread's
        if (Libc.PthreadSetspecific(s_key, r) != 0)
        {
            Volatile.Write(ref r->Dead, 1);
            t_refused = true;
            return null;
        }
        Volatile.Write(ref r->Bounds, ((ulong)low >> PageShift << 16) | ((ulong)(high - low) >> PageShift));
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

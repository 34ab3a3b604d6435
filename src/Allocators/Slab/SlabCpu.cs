using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

/// <summary>
/// One thread's state for one cache (the kernel's <c>struct kmem_cache_cpu</c>, per thread instead of per CPU): the
/// slab it allocates from (<see cref="Slab"/>, <see cref="Word"/>) and the slabs it owns besides. Only the owner
/// thread reads or writes it, inside <see cref="ThreadCacheHeader.TryEnter"/>/<see cref="ThreadCacheHeader.Exit"/>,
/// except a drainer that holds the whole context (see <see cref="ThreadCacheRegistry"/>).
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 704)]
internal unsafe struct SlabCpu
{
    // First line: what the fast paths read and the thread's slab lists.

    /// <summary>
    /// The word of the current slab's local bitmap this thread allocates from once its stack is empty (its lowest set
    /// bit first), or null; a free into the current slab sets bits in the same words.
    /// </summary>
    public ulong* Word;

    /// <summary>Address of the object that bit 0 of <see cref="Word"/> stands for.</summary>
    public byte* WordBase;

    /// <summary>Objects on <see cref="Stack"/>.</summary>
    public int Count;

    /// <summary>
    /// The cache's hardening modes (<see cref="InitOnAllocMode"/>, <see cref="InitOnFreeMode"/>, <see cref="RandomMode"/>,
    /// <see cref="SampleMode"/>), copied here when the entry is bound to its cache: beside <see cref="Count"/>, so the fast paths test them in a
    /// line they read anyway, and take the hardened paths only when one is set.
    /// </summary>
    public int Modes;

    /// <summary>The slab this thread allocates from (owned by it), or null.</summary>
    public PageFrame* Slab;

    /// <summary>
    /// Slabs this thread owns with free objects (in either bitmap), newest first, a stack linked through
    /// <see cref="PageFrame.Next"/> (SLUB's per-CPU partial list): pushing and popping touch no other slab's frame.
    /// </summary>
    public PageFrame* Partial;

    /// <summary>
    /// Slabs this thread owns whose objects it had all handed out, linked through <c>Data0</c>: a chain other threads'
    /// frees are looked for in when the cache's hint for this thread says so (<see cref="KmemCacheData.RemoteHints"/>).
    /// A slab that got a free from this thread since (<see cref="SlabPage.Exhausted"/> clear) stays linked until the
    /// chain is next walked, so moving a slab off it touches no other slab's frame.
    /// </summary>
    public PageFrame* Full;

    /// <summary>Slabs on <see cref="Partial"/>.</summary>
    public int NrPartial;

    /// <summary>Slabs linked on <see cref="Full"/> (some may have left it already).</summary>
    public int NrFull;

    // Second and third lines: what the slow paths read, and counters (per thread, folded into the cache when the
    // thread's context retires).

    /// <summary>The current slab's local bitmap (its first word).</summary>
    public ulong* Bitmap;

    /// <summary>The current slab's first object.</summary>
    public byte* SlabObjects;

    /// <summary>The <see cref="KmemCacheData.LiveKey"/> of the cache this entry serves; <see cref="FreshKey"/> before its first use.</summary>
    public long Key;

    /// <summary>The cache this entry serves.</summary>
    public KmemCacheData* Cache;

    public long AllocFastPath;
    public long FreeFastPath;
    public long AllocSlowPath;
    public long FreeSlowPath;
    public long Refills;
    public long Flushes;
    public long RemoteFrees;
    public long Claims;

    /// <summary>Objects on the stack at most.</summary>
    public const int StackCapacity = 32;

    /// <summary><see cref="Modes"/>: zero each object as it is handed out (init_on_alloc).</summary>
    public const int InitOnAllocMode = 1;

    /// <summary><see cref="Modes"/>: zero each object as it is freed (init_on_free).</summary>
    public const int InitOnFreeMode = 2;

    /// <summary><see cref="Modes"/>: take a uniformly random free object of the current slab, and keep no stack of recent frees (CONFIG_SLAB_FREELIST_RANDOM).</summary>
    public const int RandomMode = 4;

    /// <summary>
    /// <see cref="Modes"/>: count allocations down in <see cref="SampleCountdown"/> and send the one that reaches 0 to
    /// KFENCE (<see cref="CheckedModeOptions.KfenceSampleRate"/>). Alone, it is counted inline when the rate is a boot
    /// parameter (<see cref="CheckedModeOptions.KfenceCountedAtBoot"/>, folded by the JIT); otherwise it sends operations
    /// through the hardened paths like the other modes, so the fast paths of other processes test nothing more.
    /// </summary>
    public const int SampleMode = 8;

    /// <summary>The entry's random state (xorshift64*) for <see cref="RandomMode"/> and <see cref="SampleMode"/>: no thread-local lookup per pick.</summary>
    public ulong Rng;

    /// <summary>
    /// Allocations through this entry until the next KFENCE sample (<see cref="SampleMode"/>). In the third line: the
    /// inline count (a boot parameter) touches one line more than the plain path.
    /// </summary>
    public long SampleCountdown;

    /// <summary>The mean of the counts drawn for <see cref="SampleCountdown"/> (<see cref="CheckedModeOptions.KfenceSampleRate"/>).</summary>
    public long SampleRate;

    private fixed long _pad2[2];

    /// <summary>
    /// The objects this thread freed last into its own slabs (free in their bitmaps too), newest on top, <see cref="Count"/>
    /// of them: its next allocations take them back first, so frees and allocations scattered over many slabs (a
    /// server's working set) reuse objects without moving from slab to slab. Entry i is the object (element 2i) and its
    /// bit (2i + 1: the local bitmap word's address shifted left by <see cref="BitShift"/>, plus the bit number), so
    /// taking one back clears its bit without finding its slab again. At offset 192: lines of its own.
    /// </summary>
    public fixed long Stack[2 * StackCapacity];

    /// <summary>How a stack entry packs a bitmap word's address and a bit number.</summary>
    public const int BitShift = 16;

    /// <summary>The key of an entry no cache has used yet: never equal to a cache's key (those are 0 or positive).</summary>
    public const long FreshKey = -1;

    /// <summary>
    /// An entry that serves nothing (fresh key, empty lists), for handles of caches without per-thread slabs (debug)
    /// or taken while a drainer held the context: every operation through it takes the slow path.
    /// </summary>
    public static readonly SlabCpu* Refusing = CreateRefusing();

    private static SlabCpu* CreateRefusing()
    {
        var c = (SlabCpu*)NativeMemory.AlignedAlloc((nuint)sizeof(SlabCpu), CacheLines.Size);
        *c = default;
        c->Key = FreshKey;
        return c;
    }
}

/// <summary>
/// A thread's slab context (one per thread for every slab allocator in the process): the drain header, the id the
/// thread's slabs record as their owner, and one <see cref="SlabCpu"/> per cache index (<see cref="KmemCacheData.CpuIndex"/>),
/// the first <see cref="InlineEntries"/> inline, the rest in chunks made on first use.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SlabThreadContext
{
    public ThreadCacheHeader Header;

    /// <summary>The owner id this thread's slabs carry (<see cref="SlabPage.Owner"/>); unique among live contexts.</summary>
    public int Id;

    /// <summary>Entries of <see cref="Chunks"/> (each <see cref="ChunkEntries"/> entries long, for indices past the inline ones).</summary>
    public int ChunkCount;

    /// <summary>Chunk table for indices from <see cref="InlineEntries"/> on; null entries are chunks not made yet.</summary>
    public SlabCpu** Chunks;

    private fixed long _pad[6];

    /// <summary>Entries held inline, enough for every cache of a system or two.</summary>
    public const int InlineEntries = 64;

    /// <summary>Entries per chunk beyond the inline ones.</summary>
    public const int ChunkEntries = 64;

    /// <summary>Bytes of a context block.</summary>
    public static int BlockSize => sizeof(SlabThreadContext) + InlineEntries * sizeof(SlabCpu);

    /// <summary>The inline entries, right after the header.</summary>
    public SlabCpu* Inline
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (SlabCpu*)((byte*)Unsafe.AsPointer(ref this) + sizeof(SlabThreadContext));
    }

    /// <summary>The entry for cache <paramref name="index"/>, or null when it lies in a chunk not made yet.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SlabCpu* Entry(SlabThreadContext* ctx, int index)
    {
        if ((uint)index < InlineEntries) return ctx->Inline + index;
        return ChunkEntry(ctx, index);
    }

    private static SlabCpu* ChunkEntry(SlabThreadContext* ctx, int index)
    {
        int chunk = (index - InlineEntries) / ChunkEntries;
        if ((uint)chunk >= (uint)ctx->ChunkCount || ctx->Chunks[chunk] == null) return null;
        return ctx->Chunks[chunk] + (index - InlineEntries) % ChunkEntries;
    }

    /// <summary>Calls <paramref name="visit"/> on every entry that exists (inline and in chunks).</summary>
    public static void ForEachEntry(SlabThreadContext* ctx, delegate*<SlabCpu*, void> visit)
    {
        for (int i = 0; i < InlineEntries; i++) visit(ctx->Inline + i);
        for (int k = 0; k < ctx->ChunkCount; k++)
        {
            SlabCpu* chunk = ctx->Chunks[k];
            if (chunk == null) continue;
            for (int i = 0; i < ChunkEntries; i++) visit(chunk + i);
        }
    }
}

/// <summary>
/// The process's slab thread contexts: the registry that finds, drains, adopts and retires them, the thread-local
/// pointer to the calling thread's one, and the allocation of cache indices and owner ids.
/// </summary>
/// <remarks>
/// One context per thread serves every cache of every slab allocator in the process, so the fast paths find the
/// thread's entry for any cache with one thread-local read (which the JIT hoists out of loops) and one index.
/// A cache index (<see cref="KmemCacheData.CpuIndex"/>) is reused only after every thread's entry for it was flushed.
/// </remarks>
internal static unsafe class SlabCpus
{
    [ThreadStatic] private static SlabThreadContext* t_ctx;

    private static readonly Owner s_owner = new();
    private static readonly ThreadCacheRegistry s_registry = new(s_owner, SlabThreadContext.BlockSize);

    private static readonly Lock s_indexLock = new();
    private static readonly List<bool> s_indexUsed = new();
    private static readonly Stack<int> s_freeIds = new();
    private static int s_lastId;
    private static long s_lastKey;

    /// <summary>
    /// Sets <see cref="ThreadCacheHeader.SampleBit"/> in every thread's context, so each thread's next slab allocation
    /// takes its slow path, where KFENCE can take it (<see cref="Kfence.Kfence.Arm"/>).
    /// </summary>
    public static void RequestSample()
        => s_registry.ForEach(static p => Interlocked.Or(ref ((ThreadCacheHeader*)p)->DrainRequested, ThreadCacheHeader.SampleBit));

    /// <summary>The calling thread's context, or null before its first slow path (from its <see cref="ThreadRecord"/>).</summary>
    public static SlabThreadContext* Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (!ThreadRecord.Enabled) return t_ctx;
            ThreadRecord* r = ThreadRecord.Current();
            return r != null ? (SlabThreadContext*)r->SlabContext : CurrentAfterMiss();
        }
    }

    /// <summary>The thread-local, after the record lookup missed; the record is published for the next lookup.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static SlabThreadContext* CurrentAfterMiss()
    {
        ThreadRecord.Publish();
        return t_ctx;
    }

    /// <summary>The calling thread's context, registered on first use.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SlabThreadContext* GetOrCreateCurrent()
    {
        SlabThreadContext* ctx = Current;
        return ctx != null ? ctx : Register();
    }

    /// <summary>
    /// First use on this thread. Out of line: inlined, the registry's lookup and growth spend the JIT's inlining budget
    /// of a caller's fast path (the managed faces' rent and dispose lost their pool and kfree inlining to it).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static SlabThreadContext* Register()
    {
        var ctx = (SlabThreadContext*)s_registry.GetOrCreateCurrent();
        t_ctx = ctx;
        ThreadRecord* r = ThreadRecord.Mine();
        if (r != null) r->SlabContext = ctx;
        return ctx;
    }

    /// <summary>
    /// The calling thread's entry for <paramref name="index"/>, making its chunk when it has none. The thread must be
    /// inside its context (a drainer reads the chunk table only while it holds the context).
    /// </summary>
    public static SlabCpu* EntryMaking(SlabThreadContext* ctx, int index)
    {
        SlabCpu* c = SlabThreadContext.Entry(ctx, index);
        if (c != null) return c;
        int chunk = (index - SlabThreadContext.InlineEntries) / SlabThreadContext.ChunkEntries;
        if (chunk >= ctx->ChunkCount)
        {
            int count = Math.Max(chunk + 1, Math.Max(4, ctx->ChunkCount * 2));
            var table = (SlabCpu**)NativeMemory.AllocZeroed((nuint)count, (nuint)sizeof(nint));
            for (int i = 0; i < ctx->ChunkCount; i++) table[i] = ctx->Chunks[i];
            NativeMemory.Free(ctx->Chunks);
            ctx->Chunks = table;
            ctx->ChunkCount = count;
        }
        var entries = (SlabCpu*)CacheLines.AllocIsolated((nuint)(SlabThreadContext.ChunkEntries * sizeof(SlabCpu)));
        InitEntries(entries, SlabThreadContext.ChunkEntries);
        ctx->Chunks[chunk] = entries;
        return entries + (index - SlabThreadContext.InlineEntries) % SlabThreadContext.ChunkEntries;
    }

    private static void InitEntries(SlabCpu* entries, int count)
    {
        NativeMemory.Clear(entries, (nuint)(count * sizeof(SlabCpu)));
        for (int i = 0; i < count; i++) entries[i].Key = SlabCpu.FreshKey;
    }

    /// <summary>A key no cache has had (see <see cref="KmemCacheData.Key"/>).</summary>
    public static long NewKey() => Interlocked.Increment(ref s_lastKey);

    /// <summary>Reserves <paramref name="count"/> consecutive cache indices (kmalloc's classes take one block).</summary>
    public static int AllocateIndices(int count)
    {
        lock (s_indexLock)
        {
            int run = 0;
            for (int i = 0; i < s_indexUsed.Count; i++)
            {
                run = s_indexUsed[i] ? 0 : run + 1;
                if (run == count)
                {
                    int start = i - count + 1;
                    for (int j = start; j <= i; j++) s_indexUsed[j] = true;
                    return start;
                }
            }
            // Extend from the free run at the end, if any.
            int first = s_indexUsed.Count - run;
            for (int j = first; j < s_indexUsed.Count; j++) s_indexUsed[j] = true;
            while (s_indexUsed.Count < first + count) s_indexUsed.Add(true);
            return first;
        }
    }

    /// <summary>Gives cache indices back; every thread's entries for them must have been flushed.</summary>
    public static void FreeIndices(int start, int count)
    {
        lock (s_indexLock)
        {
            for (int i = start; i < start + count; i++) s_indexUsed[i] = false;
        }
    }

    /// <summary>Indices in use (for leak tests).</summary>
    internal static int IndicesInUse
    {
        get { lock (s_indexLock) return s_indexUsed.Count(u => u); }
    }

    /// <summary>
    /// Flushes every thread's entry for cache <paramref name="index"/> (kmem_cache_shrink's flush_all): each thread's
    /// slabs of that cache go back to the node lists, with the thread held off its context meanwhile.
    /// </summary>
    public static void DrainIndex(int index) => s_registry.DrainAll(cache =>
    {
        SlabCpu* c = SlabThreadContext.Entry((SlabThreadContext*)cache, index);
        if (c != null) KmemCache.FlushEntry(c);
    }, cache => Holds(SlabThreadContext.Entry((SlabThreadContext*)cache, index)));
    // Threads that hold nothing of this cache are left alone: a shrink of one cache must not stall every thread's fast
    // paths for every cache.

    /// <summary>
    /// Closes cache indices for good: every thread's entry for them is flushed (when <paramref name="flush"/>; a
    /// system going away with its arena skips that), its counters folded into its cache, and made fresh, with the
    /// thread held off its context meanwhile, so no operation of theirs is still inside those caches afterwards. The
    /// caches' keys must be 0 already: after a process-wide barrier, a thread that is idle and holds nothing of them
    /// can only see the closed key from then on, and is left alone (a dispose must not stall every other system).
    /// </summary>
    public static void RetireIndices(int[] indices, bool flush)
    {
        Interlocked.MemoryBarrierProcessWide();
        s_registry.DrainAll(cache =>
        {
            foreach (int index in indices)
            {
                SlabCpu* c = SlabThreadContext.Entry((SlabThreadContext*)cache, index);
                if (c == null) continue;
                if (flush) KmemCache.FlushEntry(c);
                KmemCache.RetireEntry(c);
            }
        }, cache =>
        {
            if (Volatile.Read(ref ((ThreadCacheHeader*)cache)->Busy) != 0) return true;
            foreach (int index in indices)
            {
                if (Holds(SlabThreadContext.Entry((SlabThreadContext*)cache, index))) return true;
            }
            return false;
        });
    }

    /// <summary>True when an entry (read without holding its thread) holds slabs or objects.</summary>
    private static bool Holds(SlabCpu* c)
        => c != null && (Volatile.Read(ref *(nint*)&c->Slab) != 0 || Volatile.Read(ref *(nint*)&c->Partial) != 0 ||
            Volatile.Read(ref *(nint*)&c->Full) != 0);

    /// <summary>Runs <paramref name="visit"/> on every live thread's entry for <paramref name="index"/> (counters; reads only).</summary>
    public static void ForEachEntry(int index, Action<nint> visit) => s_registry.ForEach(cache =>
    {
        SlabCpu* c = SlabThreadContext.Entry((SlabThreadContext*)cache, index);
        if (c != null) visit((nint)c);
    });

    /// <summary>
    /// Retires the contexts of threads that have exited (their slabs go to the nodes), at most once per millisecond;
    /// true when one was retired. A thread about to grow a slab calls it first: a thread that takes over another's
    /// objects (larson's successor threads) then reuses the exited thread's slabs instead of growing its own.
    /// </summary>
    public static bool RetireExited() => s_registry.RetireExited();

    /// <summary>Contexts retired so far (<see cref="ThreadCacheRegistry.Retirements"/>).</summary>
    public static long Retirements => s_registry.Retirements;

    /// <summary>Live thread contexts (tests).</summary>
    internal static int ContextCount => s_registry.Count;

    /// <summary>Thread contexts adopted by a registering thread so far (tests).</summary>
    internal static long Adoptions => s_registry.Adoptions;

    /// <summary>The registry's callbacks: set up, flush, adopt and retire a context.</summary>
    private sealed class Owner : IThreadCacheOwner
    {
        public void InitCache(ThreadCacheHeader* cache)
        {
            var ctx = (SlabThreadContext*)cache;
            lock (s_indexLock) ctx->Id = s_freeIds.Count > 0 ? s_freeIds.Pop() : ++s_lastId;
            InitEntries(ctx->Inline, SlabThreadContext.InlineEntries);
        }

        public void FlushCache(ThreadCacheHeader* cache)
            => SlabThreadContext.ForEachEntry((SlabThreadContext*)cache, &KmemCache.FlushEntry);

        // The exited thread's slabs, free objects and counters carry on in the new thread: its owner id stays on them.
        public bool AdoptCache(ThreadCacheHeader* cache) => true;

        public void RetireCache(ThreadCacheHeader* cache)
        {
            var ctx = (SlabThreadContext*)cache;
            SlabThreadContext.ForEachEntry(ctx, &KmemCache.RetireEntry);
            for (int k = 0; k < ctx->ChunkCount; k++)
            {
                if (ctx->Chunks[k] != null) CacheLines.Free(ctx->Chunks[k]);
            }
            NativeMemory.Free(ctx->Chunks);
            ctx->Chunks = null;
            ctx->ChunkCount = 0;
            lock (s_indexLock) s_freeIds.Push(ctx->Id);
        }
    }
}

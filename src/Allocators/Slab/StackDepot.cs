using System.Runtime.ConstrainedExecution;
using System.Runtime.InteropServices;

namespace Allocators.Slab;

/// <summary>
/// The call-site table's stack depot (the kernel's lib/stackdepot.c): each distinct stack, as the return addresses a
/// <see cref="FrameUnwinder"/> walk reads, stored once in native memory with the site id the managed stack trace gave
/// it, so a known stack is named by a hash lookup instead of a trace.
/// </summary>
/// <remarks>
/// <para>An open-addressing table of record pointers, linear probing, at most half full. A record holds the 64-bit hash,
/// the frame count, the id and the frames; lookups compare all of them, so a hash collision costs a probe, never a
/// wrong id. Records are immutable once published and never removed.</para>
/// <para>Lock: readers take none and allocate nothing. Writers are serialised by the owner's lock; a record is filled
/// before the slot that publishes it is written. The table doubles by building a new bucket array and publishing it;
/// the old one stays valid for readers still probing it and is freed with the depot. It stops at
/// <see cref="MaxRecords"/>: past that, stacks not yet stored take the managed trace every time (the kernel's depot
/// also has a fixed pool). The slots never move, so no reader needs a grace period.</para>
/// </remarks>
internal sealed unsafe class StackDepot : CriticalFinalizerObject
{
    /// <summary>
    /// Distinct stacks kept: sites times their callers' chains times the JIT tiers each method went through, far more
    /// than a program has in practice; the bound keeps a runaway (deep recursion reaching allocations from every level)
    /// at a few megabytes.
    /// </summary>
    public const int MaxRecords = 1 << 14;

    private const int InitialBuckets = 256;

    [StructLayout(LayoutKind.Sequential)]
    private struct Record
    {
        public ulong Hash;
        public int Count;
        public int Id;
        // Count return addresses follow.
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Buckets
    {
        public nuint Mask;
        public Buckets* Retired;
        // Mask + 1 record pointers follow.
    }

    private nint _buckets; // Buckets*, null until the first record
    private int _records;

    /// <summary>Stacks stored.</summary>
    public int Count => Volatile.Read(ref _records);

    /// <summary>A 64-bit hash of the frames and their count.</summary>
    public static ulong Hash(nuint* frames, int count)
    {
        const ulong K = 0x9E3779B97F4A7C15UL;
        ulong h = (ulong)count * K;
        for (int i = 0; i < count; i++)
        {
            h = (h ^ frames[i]) * K;
            h ^= h >> 29;
        }
        return h ^ (h >> 32);
    }

    /// <summary>The id stored for exactly these frames, or 0.</summary>
    public int Find(ulong hash, nuint* frames, int count)
    {
        var b = (Buckets*)Volatile.Read(ref _buckets);
        int id = b == null ? 0 : Find(b, hash, frames, count);
        GC.KeepAlive(this); // the finalizer frees the buckets
        return id;
    }

    private static int Find(Buckets* b, ulong hash, nuint* frames, int count)
    {
        var slots = (nint*)(b + 1);
        for (nuint i = (nuint)hash & b->Mask; ; i = (i + 1) & b->Mask)
        {
            var r = (Record*)Volatile.Read(ref slots[i]);
            if (r == null) return 0;
            if (r->Hash == hash && r->Count == count
                && new ReadOnlySpan<nuint>(r + 1, count).SequenceEqual(new ReadOnlySpan<nuint>(frames, count))) return r->Id;
        }
    }

    /// <summary>Stores <paramref name="id"/> for the frames unless they are stored or the depot is full. The caller holds the owner's lock.</summary>
    public void Save(ulong hash, nuint* frames, int count, int id)
    {
        var b = (Buckets*)_buckets;
        if (_records >= MaxRecords || b != null && Find(b, hash, frames, count) != 0) return;
        if (b == null || (nuint)(_records + 1) * 2 > b->Mask + 1) b = Grow(b);
        var r = (Record*)NativeMemory.Alloc((nuint)(sizeof(Record) + count * sizeof(nuint)));
        r->Hash = hash;
        r->Count = count;
        r->Id = id;
        new ReadOnlySpan<nuint>(frames, count).CopyTo(new Span<nuint>(r + 1, count));
        Insert(b, r);
        Volatile.Write(ref _records, _records + 1);
    }

    private Buckets* Grow(Buckets* old)
    {
        nuint size = old == null ? InitialBuckets : (old->Mask + 1) * 2;
        var b = (Buckets*)NativeMemory.AllocZeroed((nuint)sizeof(Buckets) + size * (nuint)sizeof(nint));
        b->Mask = size - 1;
        b->Retired = old;
        if (old != null)
        {
            var slots = (nint*)(old + 1);
            for (nuint i = 0; i <= old->Mask; i++)
                if (slots[i] != 0) Insert(b, (Record*)slots[i]);
        }
        Volatile.Write(ref _buckets, (nint)b);
        return b;
    }

    private static void Insert(Buckets* b, Record* r)
    {
        var slots = (nint*)(b + 1);
        nuint i = (nuint)r->Hash & b->Mask;
        while (slots[i] != 0) i = (i + 1) & b->Mask;
        Volatile.Write(ref slots[i], (nint)r);
    }

    // Critical: it runs after the ordinary finalizers of objects that died with it, one of which may still free into
    // a KASAN or debug cache and so capture a site.
    ~StackDepot()
    {
        var b = (Buckets*)_buckets;
        if (b == null) return;
        var slots = (nint*)(b + 1);
        for (nuint i = 0; i <= b->Mask; i++) NativeMemory.Free((void*)slots[i]);
        while (b != null)
        {
            Buckets* retired = b->Retired;
            NativeMemory.Free(b);
            b = retired;
        }
    }
}

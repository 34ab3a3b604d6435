using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Allocators.Slab;

/// <summary>
/// Interns allocation and free call sites for StoreUser tracks: a track in native memory holds only the index.
/// Capturing looks the caller's frame-pointer chain up in a <see cref="StackDepot"/> and takes a managed stack trace only
/// for a stack it has not seen (or where the chain cannot be walked); only debug caches and KASAN pay for it.
/// </summary>
public sealed unsafe class CallSiteTable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, int> _ids = new();
    private readonly List<string> _names = ["<none>"];
    private readonly Common.NativeStringTable* _native = Common.NativeStringTable.Create();

    /// <summary>The native mirror of the names, read by out-of-process inspectors.</summary>
    internal Common.NativeStringTable* Native => _native;

    /// <summary>Number of distinct call sites recorded.</summary>
    public int Count { get { lock (_lock) return _names.Count - 1; } }

    /// <summary>The call site's text, e.g. <c>Server.HandleRequest+0x1c</c>.</summary>
    public string Name(int id) { lock (_lock) return (uint)id < (uint)_names.Count ? _names[id] : "<unknown>"; }

    /// <summary>
    /// Records the first caller outside the allocator and returns its id (never 0); <see cref="CallerName"/> says how
    /// it is named under the JIT and under NativeAOT.
    /// </summary>
    /// <remarks>
    /// <para>No frame is skipped by count: the JIT inlines allocator frames at some tiers and not others, so a fixed
    /// skip would sometimes skip the caller; the library's own frames are recognised by their assembly instead.</para>
    /// <para>Where <see cref="FrameUnwinder"/> runs, the return addresses of the innermost frames are the key of a
    /// <see cref="StackDepot"/>: a stack seen before costs a frame-pointer walk and a hash lookup, with no lock and no
    /// managed allocation; a new one takes the managed trace, whose name the depot then keeps for it. A method the
    /// JIT re-compiles (a higher tier) has new return addresses, so its stacks are stored again under the same ids.</para>
    /// </remarks>
    [SkipLocalsInit]
    public int Capture()
    {
        if (!_useDepot) return CaptureSlow();
        nuint* frames = stackalloc nuint[FrameUnwinder.MaxFrames];
        int count = FrameUnwinder.Walk(frames, out bool outermost);
        if (count <= 0) return CaptureSlow();
        ulong hash = StackDepot.Hash(frames, count);
        int id = _depot.Find(hash, frames, count);
        return id != 0 ? id : CaptureAndSave(frames, count, outermost, hash);
    }

    /// <summary>The managed trace's name for the caller, as <see cref="Capture"/> gives where the depot cannot run.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal int CaptureSlow() => Intern(CallerName.Of(new StackTrace(0, fNeedFileInfo: false)));

    /// <summary>
    /// Names the caller from the managed trace and stores the walked frames under that id when they determine the
    /// name: the walk reached the thread's first frame, or it holds at least as many frames as the trace read to name
    /// the caller. The walk has at most one frame per trace frame up to the caller (frames without a frame pointer are
    /// skipped, inlined ones are in neither) and its first frame is this trace's second, so a walk that stopped on a bad
    /// frame pointer or at the limit still holds the caller's return address; one too short, or one with a frame hidden
    /// by a GC hijack, is never stored, and its stack keeps taking the trace.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int CaptureAndSave(nuint* frames, int count, bool outermost, ulong hash)
    {
        int id = Intern(CallerName.Of(new StackTrace(0, fNeedFileInfo: false), out int depth));
        if ((outermost || count >= depth) && !FrameUnwinder.HidesAFrame(frames, Math.Min(count, depth - 1)))
        {
            lock (_lock) _depot.Save(hash, frames, count, id);
        }
        return id;
    }

    private readonly StackDepot _depot = new();
    private readonly bool _useDepot = FrameUnwinder.Available;

    /// <summary>Stacks the depot holds (0 where it does not run).</summary>
    internal int DepotCount => _depot.Count;

    /// <summary>A table that always takes the managed trace, to compare the depot's names against.</summary>
    internal static CallSiteTable WithoutDepot() => new(useDepot: false);

    /// <summary>An empty table.</summary>
    public CallSiteTable() { }

    private CallSiteTable(bool useDepot) => _useDepot = useDepot && FrameUnwinder.Available;

    /// <summary>
    /// How every captured site starts in a NativeAOT app published with <c>StackTraceSupport</c> off: it keeps no method
    /// names, so the site lists image offsets (<c>&lt;unknown, AOT&gt; image+0x1f2e0 &lt; ...</c>) that
    /// <c>addr2line -e app.dbg</c> resolves.
    /// </summary>
    public const string UnknownUnderAot = CallerName.UnknownUnderAot;

    /// <summary>
    /// The id of a call site named by the compiler's caller information (<c>File.Member:line</c>): a dictionary hit,
    /// no stack walk and no managed allocation once the site is known.
    /// </summary>
    public int Intern(string member, string file, int line)
    {
        var key = new SourceKey(member, file, line);
        lock (_lock)
        {
            if (_sources.TryGetValue(key, out int id)) return id;
        }
        int added = Intern($"{Path.GetFileNameWithoutExtension(file)}.{member}:{line}");
        lock (_lock) _sources[key] = added;
        return added;
    }

    private readonly Dictionary<SourceKey, int> _sources = new(SourceKeyComparer.Instance);

    private readonly record struct SourceKey(string Member, string File, int Line);

    /// <summary>Hashes the caller strings by identity (the compiler passes the same literal every time), compares by value.</summary>
    private sealed class SourceKeyComparer : IEqualityComparer<SourceKey>
    {
        public static readonly SourceKeyComparer Instance = new();

        public bool Equals(SourceKey a, SourceKey b) => a.Line == b.Line && a.Member == b.Member && a.File == b.File;

        public int GetHashCode(SourceKey k)
            => HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Member), System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.File), k.Line);
    }

    /// <summary>Returns the id of <paramref name="site"/>, adding it when new.</summary>
    public int Intern(string site)
    {
        lock (_lock)
        {
            if (_ids.TryGetValue(site, out int id)) return id;
            id = _names.Count;
            _names.Add(site);
            _ids[site] = id;
            Common.NativeStringTable.Add(_native, id, site);
            return id;
        }
    }
}

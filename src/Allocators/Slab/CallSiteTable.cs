using System.Diagnostics;

namespace Allocators.Slab;

/// <summary>
/// Interns allocation and free call sites for StoreUser tracks: a track in native memory holds only the index.
/// Capturing walks the managed stack, so only debug caches pay for it.
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
    /// <remarks>No frame is skipped by count: the JIT inlines allocator frames at some tiers and not others, so a fixed
    /// skip would sometimes skip the caller; the library's own frames are recognised by their assembly instead.</remarks>
    public int Capture() => Intern(CallerName.Of(new StackTrace(0, fNeedFileInfo: false)));

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

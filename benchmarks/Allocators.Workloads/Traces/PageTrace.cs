namespace Allocators.Workloads.Traces;

/// <summary>A named page-access trace: the page numbers touched, in order, and the range they come from.</summary>
/// <param name="Name">Short name (table key).</param>
/// <param name="Description">One line: the pattern and its parameters.</param>
/// <param name="Footprint">Pages the trace may touch: every page number is in [0, Footprint).</param>
/// <param name="Accesses">The page numbers, in access order.</param>
internal sealed record PageTrace(string Name, string Description, int Footprint, int[] Accesses)
{
    /// <summary>Default trace length: long enough for steady-state fault rates, short enough to replay through a software MMU in seconds.</summary>
    public const int DefaultLength = 200_000;

    /// <summary>Default seed of the random traces.</summary>
    public const ulong DefaultSeed = 42;

    /// <summary>Compulsory (cold) misses: the number of distinct pages, which every policy faults on once.</summary>
    public int ColdMisses => DistinctPages(Accesses);

    /// <summary>Number of distinct page numbers in <paramref name="trace"/>.</summary>
    public static int DistinctPages(int[] trace) => new HashSet<int>(trace).Count;

    /// <summary>
    /// The four traces of the reclaim benchmark for a memory of <paramref name="memoryPages"/> pages: the loop over
    /// 1.2 x M, and uniform, Zipf 0.99 and shifting working set over 2 x M (footprints larger than memory, so reclaim must run).
    /// </summary>
    public static IReadOnlyList<PageTrace> Standard(int memoryPages, int length = DefaultLength, ulong seed = DefaultSeed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryPages, 8);
        int footprint = memoryPages * 2;
        return
        [
            Loop((int)(memoryPages * 1.2), length),
            Uniform(footprint, length, seed),
            Zipf(footprint, length, seed),
            ShiftingWorkingSet(footprint, (int)(memoryPages * 0.8), length, seed),
        ];
    }

    /// <summary>
    /// Pages 0, 1, ..., <paramref name="pages"/> - 1, again and again. With more pages than frames LRU evicts exactly
    /// the page needed next and faults on every access; MIN keeps most of the loop (the classic LRU-defeating pattern,
    /// e.g. sequential scans in Johnson and Shasha, "2Q", VLDB 1994, and Jiang and Zhang, "LIRS", SIGMETRICS 2002).
    /// </summary>
    public static PageTrace Loop(int pages, int length = DefaultLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pages, 1);
        var trace = new int[length];
        for (int i = 0; i < length; i++) trace[i] = i % pages;
        return new PageTrace("loop", $"sequential loop over {pages} pages, repeated", pages, trace);
    }

    /// <summary>Each access a page drawn uniformly from [0, <paramref name="footprint"/>): no locality at all.</summary>
    public static PageTrace Uniform(int footprint, int length = DefaultLength, ulong seed = DefaultSeed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(footprint, 1);
        var random = new FastRandom(seed);
        var trace = new int[length];
        for (int i = 0; i < length; i++) trace[i] = random.Below(footprint);
        return new PageTrace("random", $"uniform random over {footprint} pages", footprint, trace);
    }

    /// <summary>
    /// Zipf with skew <paramref name="theta"/> (default YCSB's 0.99) over <paramref name="footprint"/> pages, drawn
    /// with <see cref="ZipfianGenerator"/> (Gray et al. 1994). The ranks are scattered over the footprint by a seeded
    /// permutation, like YCSB's scrambled zipfian, so the hot pages are not neighbours (a bijection, unlike YCSB's
    /// hash, so no two ranks share a page).
    /// </summary>
    public static PageTrace Zipf(int footprint, int length = DefaultLength, ulong seed = DefaultSeed, double theta = ZipfianGenerator.YcsbTheta)
    {
        var zipf = new ZipfianGenerator(footprint, theta);
        var random = new FastRandom(seed);
        int[] pageOfRank = Permutation(footprint, ref random);
        var trace = new int[length];
        for (int i = 0; i < length; i++) trace[i] = pageOfRank[zipf.Next(random.NextDouble())];
        return new PageTrace("zipf", $"Zipf theta {theta} over {footprint} pages (scrambled)", footprint, trace);
    }

    /// <summary>
    /// A working set that moves: <paramref name="phases"/> phases of equal length; in each, accesses go uniformly to a
    /// hot window of <paramref name="hotPages"/> consecutive pages (mod the footprint), except a share
    /// <paramref name="noise"/> that goes uniformly anywhere in the footprint. Between phases the window slides by
    /// <paramref name="shift"/> of its size, so that share of the hot set is new and as much goes cold. (Denning's
    /// working-set model, "The Working Set Model for Program Behavior", CACM 1968: programs move from phase to phase.)
    /// </summary>
    public static PageTrace ShiftingWorkingSet(int footprint, int hotPages, int length = DefaultLength, ulong seed = DefaultSeed,
        int phases = 10, double shift = 0.25, double noise = 0.05)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(hotPages, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(hotPages, footprint);
        ArgumentOutOfRangeException.ThrowIfLessThan(phases, 1);
        var random = new FastRandom(seed);
        var trace = new int[length];
        int step = Math.Max(1, (int)(hotPages * shift));
        for (int i = 0; i < length; i++)
        {
            int phase = (int)((long)i * phases / Math.Max(1, length));
            trace[i] = random.NextDouble() < noise
                ? random.Below(footprint)
                : (int)(((long)phase * step + random.Below(hotPages)) % footprint);
        }
        return new PageTrace("shifting", $"{phases} phases, hot set {hotPages} pages sliding {shift:0.##} per phase, {noise:0.##} noise, over {footprint} pages", footprint, trace);
    }

    /// <summary>A seeded Fisher-Yates permutation of 0..n-1.</summary>
    private static int[] Permutation(int n, ref FastRandom random)
    {
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--)
        {
            int j = random.Below(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }
}

using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Allocators.Slab;

namespace Allocators.Workloads;

/// <summary>
/// The Benchmarks Game's binary-trees: build and check a "stretch" tree one level deeper than the maximum depth,
/// keep one long-lived tree of the maximum depth, then for every even depth from 4 up to the maximum build, check
/// and drop 2^(max - depth + 4) trees, and finally check the long-lived tree again. Nodes come from the allocator
/// under test (16-byte nodes with two child pointers), or are GC objects. The output is compared line by line with
/// the expected output, derived from the algorithm (a full tree of depth d has 2^(d+1)-1 nodes); any difference
/// fails the run. The depth loop is spread over the worker threads. Threads = worker threads.
/// </summary>
/// <remarks>
/// The published run is the Computer Language Benchmarks Game's (benchmarksgame-team.pages.debian.net, binary-trees
/// description: "use a larger command line argument (21) to check program performance"), so depth 21, with the
/// program's minimum depth 4, a stretch tree one deeper and 2^(21 - d + 4) trees of each even depth d; its expected
/// output is in the tests.
/// </remarks>
internal sealed class BinaryTrees : Workload
{
    /// <summary>The smallest depth of the loop.</summary>
    public const int MinDepth = 4;

    /// <summary>Bytes of one native node.</summary>
    public const int NodeSize = 16;

    /// <inheritdoc/>
    public override string Name => "binary-trees";

    /// <inheritdoc/>
    public override string Description =>
        $"Benchmarks Game binary-trees (output verified exactly), nodes of two child pointers; --full runs the published depth {BenchScale.Full.TreeDepth}, --quick depth {BenchScale.Quick.TreeDepth}; op = one tree node allocated and freed";

    /// <inheritdoc/>
    public override string Unit => "nodes/s";

    /// <inheritdoc/>
    public override bool SupportsArrayPool => false;

    /// <inheritdoc/>
    public override int MaxRounds => 1;

    /// <summary>A native tree node.</summary>
    internal unsafe struct Node
    {
        public Node* Left;
        public Node* Right;
    }

    /// <summary>A GC tree node.</summary>
    private sealed class ManagedNode(ManagedNode? left, ManagedNode? right)
    {
        public readonly ManagedNode? Left = left;
        public readonly ManagedNode? Right = right;
    }

    /// <summary>The published output for <paramref name="maxDepth"/>, computed from node counts.</summary>
    public static string ExpectedOutput(int maxDepth)
    {
        maxDepth = Math.Max(MinDepth + 2, maxDepth);
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"stretch tree of depth {maxDepth + 1}\t check: {FullTreeNodes(maxDepth + 1)}\n");
        for (int depth = MinDepth; depth <= maxDepth; depth += 2)
        {
            long iterations = Iterations(maxDepth, depth);
            sb.Append(CultureInfo.InvariantCulture, $"{iterations}\t trees of depth {depth}\t check: {iterations * FullTreeNodes(depth)}\n");
        }
        sb.Append(CultureInfo.InvariantCulture, $"long lived tree of depth {maxDepth}\t check: {FullTreeNodes(maxDepth)}\n");
        return sb.ToString();
    }

    /// <summary>Nodes of a full tree of depth <paramref name="depth"/>: 2^(depth+1) - 1.</summary>
    public static long FullTreeNodes(int depth) => (1L << (depth + 1)) - 1;

    private static long Iterations(int maxDepth, int depth) => 1L << (maxDepth - depth + MinDepth);

    private static long TotalNodes(int maxDepth)
    {
        long total = FullTreeNodes(maxDepth + 1) + FullTreeNodes(maxDepth);
        for (int depth = MinDepth; depth <= maxDepth; depth += 2) total += Iterations(maxDepth, depth) * FullTreeNodes(depth);
        return total;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome? RunOnTypedCache(SlabAllocator slab, RunContext context, ThreadHandleCount? handles)
        => RunOnCache<Node>(slab, context, handles);

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        ITrees trees;
        if (typeof(TBlock) == typeof(nint)) trees = new NativeTrees<TAlloc, TBlock>(allocator);
        else if (typeof(TAlloc) == typeof(GcAllocator)) trees = new ManagedTrees();
        else throw new NotSupportedException("binary-trees needs nodes that hold pointers (not byte arrays)");

        int maxDepth = Math.Max(MinDepth + 2, context.Scale.TreeDepth);
        var clock = Clock();
        string output = Drive(trees, maxDepth, context);
        var elapsed = clock.Elapsed;

        var outcome = new WorkloadOutcome { Operations = TotalNodes(maxDepth), Elapsed = elapsed, Output = output };
        string expected = ExpectedOutput(maxDepth);
        if (output != expected)
            outcome.Fail($"binary-trees output differs from the expected output for depth {maxDepth}:\n--- expected\n{expected}--- got\n{output}");
        if (context.Live.Sum() != 0) outcome.Fail("live byte count not zero at the end");
        return outcome;
    }

    /// <summary>The program itself, over either kind of node.</summary>
    private static string Drive(ITrees trees, int maxDepth, RunContext context)
    {
        var output = new StringBuilder();
        ref long mainLive = ref context.Live.Of(context.Threads);

        long stretchBytes = FullTreeNodes(maxDepth + 1) * NodeSize;
        mainLive += stretchBytes;
        long stretch = trees.BuildCheckFree(maxDepth + 1);
        mainLive -= stretchBytes;
        output.Append(CultureInfo.InvariantCulture, $"stretch tree of depth {maxDepth + 1}\t check: {stretch}\n");

        long longLivedBytes = FullTreeNodes(maxDepth) * NodeSize;
        mainLive += longLivedBytes;
        trees.BuildLongLived(maxDepth);

        // Work items: (depth, trees to build); big depths are split so every thread has work until the end.
        var depths = new List<int>();
        for (int depth = MinDepth; depth <= maxDepth; depth += 2) depths.Add(depth);
        var items = new List<(int DepthIndex, long Count)>();
        int threads = context.Threads;
        for (int d = 0; d < depths.Count; d++)
        {
            long iterations = Iterations(maxDepth, depths[d]);
            long chunk = Math.Max(1, iterations / (threads * 4L));
            for (long done = 0; done < iterations; done += chunk) items.Add((d, Math.Min(chunk, iterations - done)));
        }
        var checks = new long[depths.Count];
        int next = -1;
        RunThreads(threads, t =>
        {
            ref long live = ref context.Live.Of(t);
            int item;
            while ((item = Interlocked.Increment(ref next)) < items.Count)
            {
                var (d, count) = items[item];
                int depth = depths[d];
                long bytes = FullTreeNodes(depth) * NodeSize;
                long check = 0;
                for (long i = 0; i < count; i++)
                {
                    live += bytes;
                    check += trees.BuildCheckFree(depth);
                    live -= bytes;
                }
                Interlocked.Add(ref checks[d], check);
            }
        }, "binary-trees");
        for (int d = 0; d < depths.Count; d++)
            output.Append(CultureInfo.InvariantCulture, $"{Iterations(maxDepth, depths[d])}\t trees of depth {depths[d]}\t check: {checks[d]}\n");

        long longLived = trees.CheckAndFreeLongLived();
        mainLive -= longLivedBytes;
        output.Append(CultureInfo.InvariantCulture, $"long lived tree of depth {maxDepth}\t check: {longLived}\n");
        return output.ToString();
    }

    /// <summary>One kind of tree; called once per tree, so the interface call is off the per-node path.</summary>
    private interface ITrees
    {
        long BuildCheckFree(int depth);

        void BuildLongLived(int depth);

        long CheckAndFreeLongLived();
    }

    /// <summary>
    /// Native trees; each tree is built, checked and freed in one run on its thread (<see cref="IBlockAllocator{TBlock}.OnThisThread"/>),
    /// so Allocators' handle variants take the thread's handle once per tree.
    /// </summary>
    private sealed unsafe class NativeTrees<TAlloc, TBlock>(TAlloc allocator) : ITrees where TAlloc : struct, IBlockAllocator<TBlock>
    {
        private readonly TAlloc _allocator = allocator;
        private Node* _longLived;

        public long BuildCheckFree(int depth)
        {
            var run = new TreeRun { Depth = depth, Build = true, Free = true };
            _allocator.OnThisThread(ref run);
            return run.Check;
        }

        public void BuildLongLived(int depth)
        {
            var run = new TreeRun { Depth = depth, Build = true };
            _allocator.OnThisThread(ref run);
            _longLived = run.Root;
        }

        public long CheckAndFreeLongLived()
        {
            var run = new TreeRun { Root = _longLived, Free = true };
            _allocator.OnThisThread(ref run);
            _longLived = null;
            return run.Check;
        }

        /// <summary>Builds a tree (when <see cref="Build"/>), checks it, and frees it (when <see cref="Free"/>).</summary>
        private struct TreeRun : IThreadRun<TBlock>
        {
            public int Depth;
            public bool Build;
            public bool Free;
            public Node* Root;
            public long Check;

            public void Run<TA>(ref TA allocator) where TA : IBlockAllocator<TBlock>, allows ref struct
            {
                if (Build) Root = BuildTree(ref allocator, Depth);
                Check = BinaryTrees.Check(Root);
                if (Free)
                {
                    FreeTree(ref allocator, Root);
                    Root = null;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static Node* BuildTree<TA>(ref TA allocator, int depth) where TA : IBlockAllocator<TBlock>, allows ref struct
        {
            TBlock block = allocator.Allocate(NodeSize);
            Node* node = (Node*)Unsafe.As<TBlock, nint>(ref block);
            if (depth > 0)
            {
                node->Left = BuildTree(ref allocator, depth - 1);
                node->Right = BuildTree(ref allocator, depth - 1);
            }
            else
            {
                node->Left = null;
                node->Right = null;
            }
            return node;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void FreeTree<TA>(ref TA allocator, Node* node) where TA : IBlockAllocator<TBlock>, allows ref struct
        {
            Node* left = node->Left;
            Node* right = node->Right;
            nint address = (nint)node;
            allocator.Free(Unsafe.As<nint, TBlock>(ref address));
            if (left != null)
            {
                FreeTree(ref allocator, left);
                FreeTree(ref allocator, right);
            }
        }
    }

    /// <summary>The nodes of a native tree (the program's check value).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe long Check(Node* node) => node->Left == null ? 1 : 1 + Check(node->Left) + Check(node->Right);

    private sealed class ManagedTrees : ITrees
    {
        private ManagedNode? _longLived;

        public long BuildCheckFree(int depth) => Check(Build(depth));

        public void BuildLongLived(int depth) => _longLived = Build(depth);

        public long CheckAndFreeLongLived()
        {
            long check = Check(_longLived!);
            _longLived = null;
            return check;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static ManagedNode Build(int depth) => depth > 0 ? new ManagedNode(Build(depth - 1), Build(depth - 1)) : new ManagedNode(null, null);

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static long Check(ManagedNode node) => node.Left is null ? 1 : 1 + Check(node.Left) + Check(node.Right!);
    }
}

using System.Runtime.CompilerServices;
using Allocators.Collections;

namespace Allocators.Vmalloc;

/// <summary>
/// An AVL tree of <see cref="VmapArea"/> nodes ordered by start address, optionally augmented with the largest
/// free block per subtree. Busy areas and free space each live in one such tree. Not thread-safe: the vmap lock
/// guards it.
/// </summary>
internal unsafe struct VmapTree
{
    private readonly VmapArea** _root;
    public long Count;
    private readonly bool _augmented;

    /// <summary>A tree whose root pointer lives in the native cell <paramref name="rootCell"/>, where inspectors find it.</summary>
    public VmapTree(bool augmented, VmapArea** rootCell)
    {
        _root = rootCell;
        *rootCell = null;
        Count = 0;
        _augmented = augmented;
    }

    public readonly VmapArea* Root
    {
        get => *_root;
        private set => *_root = value;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MaxOf(VmapArea* n) => n == null ? 0 : n->SubtreeMaxSize;

    public void Insert(VmapArea* node)
    {
        Root = _augmented ? FreeSpace.Insert(Root, node).P : Busy.Insert(Root, node).P;
        Count++;
    }

    public void Remove(VmapArea* node)
    {
        Root = _augmented ? FreeSpace.Remove(Root, node).P : Busy.Remove(Root, node).P;
        Count--;
    }

    /// <summary>Re-derives the augmentation on the path to a node whose size changed in place.</summary>
    public readonly void Refresh(VmapArea* node)
    {
        if (_augmented) FreeSpace.RefreshPath(Root, node);
    }

    /// <summary>Checks the tree's invariants (order, balance, heights, largest free block per subtree) and its count.</summary>
    public readonly void Check()
    {
        int n = _augmented
            ? FreeSpace.Check(Root, x => x.P->SubtreeMaxSize == Math.Max(x.P->Size, Math.Max(MaxOf(x.P->Left), MaxOf(x.P->Right))))
            : Busy.Check(Root);
        if (n != Count) throw new InvalidOperationException($"vmap tree holds {n} areas, the count is {Count}.");
    }

    /// <summary>The area whose [Start, End) contains <paramref name="address"/>, or null.</summary>
    public readonly VmapArea* Find(ulong address)
    {
        VmapArea* n = Root;
        while (n != null)
        {
            if (address < n->Start) n = n->Left;
            else if (address >= n->End) n = n->Right;
            else return n;
        }
        return null;
    }

    /// <summary>The area with the greatest start &lt;= <paramref name="address"/>, or null.</summary>
    public readonly VmapArea* Floor(ulong address) => Busy.Floor(Root, address).P;

    /// <summary>The area with the least start &gt;= <paramref name="address"/>, or null.</summary>
    public readonly VmapArea* Ceiling(ulong address) => Busy.Ceiling(Root, address).P;

    /// <summary>
    /// The lowest free block that can hold <paramref name="size"/> bytes at <paramref name="align"/> within
    /// [<paramref name="vstart"/>, <paramref name="vend"/>) (find_vmap_lowest_match). Subtrees are pruned by their
    /// largest block against <paramref name="searchLength"/>.
    /// </summary>
    public readonly VmapArea* LowestMatch(ulong size, ulong align, ulong searchLength, ulong vstart, ulong vend)
    {
        return Search(Root, size, align, searchLength, vstart, vend);
    }

    private static VmapArea* Search(VmapArea* n, ulong size, ulong align, ulong length, ulong vstart, ulong vend)
    {
        if (n == null || n->SubtreeMaxSize < length) return null;
        VmapArea* found = Search(n->Left, size, align, length, vstart, vend);
        if (found != null) return found;
        if (Fits(n, size, align, vstart, vend)) return n;
        if (n->Start >= vend) return null;
        return Search(n->Right, size, align, length, vstart, vend);
    }

    /// <summary>Whether an aligned block of <paramref name="size"/> fits in free area <paramref name="n"/> inside the bounds.</summary>
    public static bool Fits(VmapArea* n, ulong size, ulong align, ulong vstart, ulong vend)
    {
        ulong start = Math.Max(n->Start, vstart);
        ulong aligned = (start + align - 1) & ~(align - 1);
        if (aligned < start) return false;
        ulong end = Math.Min(n->End, vend);
        return aligned + size >= aligned && aligned + size <= end;
    }

    /// <summary>Calls <paramref name="visit"/> on every node in address order.</summary>
    public readonly void InOrder(Action<nint> visit) => Walk(Root, visit);

    private static void Walk(VmapArea* n, Action<nint> visit)
    {
        if (n == null) return;
        Walk(n->Left, visit);
        visit((nint)n);
        Walk(n->Right, visit);
    }

    /// <summary>A vmap area as a tree node (a pointer: no managed object per area).</summary>
    private readonly struct Node(VmapArea* p)
    {
        public readonly VmapArea* P = p;

        public static implicit operator Node(VmapArea* p) => new(p);
    }

    /// <summary>Whether a tree keeps the largest free block per subtree.</summary>
    private interface IAugmentation
    {
        static abstract bool Max { get; }
    }

    private readonly struct Plain : IAugmentation
    {
        public static bool Max => false;
    }

    private readonly struct LargestFree : IAugmentation
    {
        public static bool Max => true;
    }

    /// <summary>An area's tree links, keyed by its start; with <see cref="LargestFree"/> also its subtree's largest block (rb_subtree_max_size).</summary>
    private readonly struct Links<TAugmentation> : IAvlNodeOps<Node> where TAugmentation : IAugmentation
    {
        public static Node Null => default;
        public static bool IsNull(Node node) => node.P == null;
        public static bool Same(Node a, Node b) => a.P == b.P;
        public static Node Left(Node node) => node.P->Left;
        public static void SetLeft(Node node, Node left) => node.P->Left = left.P;
        public static Node Right(Node node) => node.P->Right;
        public static void SetRight(Node node, Node right) => node.P->Right = right.P;
        public static int Height(Node node) => node.P->Height;
        public static void SetHeight(Node node, int height) => node.P->Height = height;
        public static ulong Key(Node node) => node.P->Start;

        public static void Augment(Node node)
        {
            if (TAugmentation.Max) node.P->SubtreeMaxSize = Math.Max(node.P->Size, Math.Max(MaxOf(node.P->Left), MaxOf(node.P->Right)));
        }
    }

    private static class Busy
    {
        public static Node Insert(Node root, Node node) => IntrusiveAvlTree<Node, Links<Plain>>.Insert(root, node);
        public static Node Remove(Node root, Node node) => IntrusiveAvlTree<Node, Links<Plain>>.Remove(root, node);
        public static Node Floor(Node root, ulong key) => IntrusiveAvlTree<Node, Links<Plain>>.Floor(root, key);
        public static Node Ceiling(Node root, ulong key) => IntrusiveAvlTree<Node, Links<Plain>>.Ceiling(root, key);
        public static int Check(Node root) => IntrusiveAvlTree<Node, Links<Plain>>.Check(root);
    }

    private static class FreeSpace
    {
        public static Node Insert(Node root, Node node) => IntrusiveAvlTree<Node, Links<LargestFree>>.Insert(root, node);
        public static Node Remove(Node root, Node node) => IntrusiveAvlTree<Node, Links<LargestFree>>.Remove(root, node);
        public static void RefreshPath(Node root, Node node) => IntrusiveAvlTree<Node, Links<LargestFree>>.RefreshPath(root, node);
        public static int Check(Node root, Func<Node, bool> augmentOk) => IntrusiveAvlTree<Node, Links<LargestFree>>.Check(root, augmentOk);
    }
}

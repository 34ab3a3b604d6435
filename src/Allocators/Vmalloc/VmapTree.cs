using System.Runtime.CompilerServices;

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
    private static int HeightOf(VmapArea* n) => n == null ? 0 : n->Height;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MaxOf(VmapArea* n) => n == null ? 0 : n->SubtreeMaxSize;

    private readonly void Update(VmapArea* n)
    {
        n->Height = 1 + Math.Max(HeightOf(n->Left), HeightOf(n->Right));
        if (_augmented) n->SubtreeMaxSize = Math.Max(n->Size, Math.Max(MaxOf(n->Left), MaxOf(n->Right)));
    }

    private readonly VmapArea* RotateRight(VmapArea* y)
    {
        VmapArea* x = y->Left;
        y->Left = x->Right;
        x->Right = y;
        Update(y);
        Update(x);
        return x;
    }

    private readonly VmapArea* RotateLeft(VmapArea* x)
    {
        VmapArea* y = x->Right;
        x->Right = y->Left;
        y->Left = x;
        Update(x);
        Update(y);
        return y;
    }

    private readonly VmapArea* Balance(VmapArea* n)
    {
        Update(n);
        int balance = HeightOf(n->Left) - HeightOf(n->Right);
        if (balance > 1)
        {
            if (HeightOf(n->Left->Left) < HeightOf(n->Left->Right)) n->Left = RotateLeft(n->Left);
            return RotateRight(n);
        }
        if (balance < -1)
        {
            if (HeightOf(n->Right->Right) < HeightOf(n->Right->Left)) n->Right = RotateRight(n->Right);
            return RotateLeft(n);
        }
        return n;
    }

    public void Insert(VmapArea* node)
    {
        node->Left = node->Right = null;
        node->Height = 1;
        node->SubtreeMaxSize = node->Size;
        Root = InsertAt(Root, node);
        Count++;
    }

    private readonly VmapArea* InsertAt(VmapArea* root, VmapArea* node)
    {
        if (root == null) return node;
        if (node->Start < root->Start) root->Left = InsertAt(root->Left, node);
        else root->Right = InsertAt(root->Right, node);
        return Balance(root);
    }

    public void Remove(VmapArea* node)
    {
        Root = RemoveAt(Root, node);
        node->Left = node->Right = null;
        Count--;
    }

    private readonly VmapArea* RemoveAt(VmapArea* root, VmapArea* node)
    {
        if (root == null) throw new InvalidOperationException("vmap tree: node not found.");
        if (root == node)
        {
            if (root->Left == null) return root->Right;
            if (root->Right == null) return root->Left;
            VmapArea* successor = root->Right;
            while (successor->Left != null) successor = successor->Left;
            successor->Right = RemoveMin(root->Right);
            successor->Left = root->Left;
            return Balance(successor);
        }
        if (node->Start < root->Start) root->Left = RemoveAt(root->Left, node);
        else root->Right = RemoveAt(root->Right, node);
        return Balance(root);
    }

    private readonly VmapArea* RemoveMin(VmapArea* root)
    {
        if (root->Left == null) return root->Right;
        root->Left = RemoveMin(root->Left);
        return Balance(root);
    }

    /// <summary>Re-derives the augmentation on the path to a node whose size changed in place.</summary>
    public readonly void Refresh(VmapArea* node)
    {
        if (!_augmented) return;
        RefreshPath(Root, node);
    }

    private readonly void RefreshPath(VmapArea* root, VmapArea* node)
    {
        if (root == null) return;
        if (root != node) RefreshPath(node->Start < root->Start ? root->Left : root->Right, node);
        Update(root);
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
    public readonly VmapArea* Floor(ulong address)
    {
        VmapArea* n = Root, best = null;
        while (n != null)
        {
            if (n->Start <= address) { best = n; n = n->Right; }
            else n = n->Left;
        }
        return best;
    }

    /// <summary>The area with the least start &gt;= <paramref name="address"/>, or null.</summary>
    public readonly VmapArea* Ceiling(ulong address)
    {
        VmapArea* n = Root, best = null;
        while (n != null)
        {
            if (n->Start >= address) { best = n; n = n->Left; }
            else n = n->Right;
        }
        return best;
    }

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
}

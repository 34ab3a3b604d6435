namespace Allocators.Collections;

/// <summary>
/// How <see cref="IntrusiveAvlTree{TNode, TOps}"/> reaches the links inside a node: the tree stores nothing of its own,
/// every node carries its left and right children, its height and its key (and, when the tree is augmented, a value
/// derived from its subtree that <see cref="Augment"/> recomputes from the children: the kernel's
/// <c>RB_DECLARE_CALLBACKS_MAX</c>). A node type can be a managed class or a struct wrapping a native pointer; with a
/// struct operations type every call is specialised and inlined.
/// </summary>
internal interface IAvlNodeOps<TNode>
{
    static abstract TNode Null { get; }
    static abstract bool IsNull(TNode node);
    static abstract bool Same(TNode a, TNode b);
    static abstract TNode Left(TNode node);
    static abstract void SetLeft(TNode node, TNode left);
    static abstract TNode Right(TNode node);
    static abstract void SetRight(TNode node, TNode right);
    static abstract int Height(TNode node);
    static abstract void SetHeight(TNode node, int height);
    static abstract ulong Key(TNode node);

    /// <summary>Recomputes the node's augmented value from its own and its children's (nothing for a plain tree).</summary>
    static abstract void Augment(TNode node);
}

/// <summary>
/// An intrusive AVL tree ordered by key (no two nodes with one key), the one balanced tree of the project: the VMAs of
/// an address space and the busy and free vmap areas are its nodes. Every operation takes and returns the root; the
/// caller keeps it (in a field, or a native cell an inspector reads). Not thread-safe: its owner's lock guards it.
/// </summary>
/// <remarks>Invariants, checked by <see cref="Check"/>: in-order keys strictly increase; |height(left) − height(right)| ≤ 1
/// and height = 1 + max of the children's at every node; an augmented value equals its recomputation.</remarks>
internal static class IntrusiveAvlTree<TNode, TOps> where TOps : IAvlNodeOps<TNode>
{
    private static int HeightOf(TNode n) => TOps.IsNull(n) ? 0 : TOps.Height(n);

    private static void Update(TNode n)
    {
        TOps.SetHeight(n, 1 + Math.Max(HeightOf(TOps.Left(n)), HeightOf(TOps.Right(n))));
        TOps.Augment(n);
    }

    private static TNode RotateRight(TNode y)
    {
        TNode x = TOps.Left(y);
        TOps.SetLeft(y, TOps.Right(x));
        TOps.SetRight(x, y);
        Update(y);
        Update(x);
        return x;
    }

    private static TNode RotateLeft(TNode x)
    {
        TNode y = TOps.Right(x);
        TOps.SetRight(x, TOps.Left(y));
        TOps.SetLeft(y, x);
        Update(x);
        Update(y);
        return y;
    }

    private static TNode Balance(TNode n)
    {
        Update(n);
        int balance = HeightOf(TOps.Left(n)) - HeightOf(TOps.Right(n));
        if (balance > 1)
        {
            TNode l = TOps.Left(n);
            if (HeightOf(TOps.Left(l)) < HeightOf(TOps.Right(l))) TOps.SetLeft(n, RotateLeft(l));
            return RotateRight(n);
        }
        if (balance < -1)
        {
            TNode r = TOps.Right(n);
            if (HeightOf(TOps.Right(r)) < HeightOf(TOps.Left(r))) TOps.SetRight(n, RotateRight(r));
            return RotateLeft(n);
        }
        return n;
    }

    /// <summary>Inserts <paramref name="node"/> (its links are reset here); returns the new root.</summary>
    public static TNode Insert(TNode root, TNode node)
    {
        TOps.SetLeft(node, TOps.Null);
        TOps.SetRight(node, TOps.Null);
        TOps.SetHeight(node, 1);
        TOps.Augment(node);
        return InsertAt(root, node);
    }

    private static TNode InsertAt(TNode root, TNode node)
    {
        if (TOps.IsNull(root)) return node;
        if (TOps.Key(node) < TOps.Key(root)) TOps.SetLeft(root, InsertAt(TOps.Left(root), node));
        else TOps.SetRight(root, InsertAt(TOps.Right(root), node));
        return Balance(root);
    }

    /// <summary>Removes <paramref name="node"/>, which is in the tree (else <see cref="InvalidOperationException"/>); returns the new root.</summary>
    public static TNode Remove(TNode root, TNode node)
    {
        TNode result = RemoveAt(root, node);
        TOps.SetLeft(node, TOps.Null);
        TOps.SetRight(node, TOps.Null);
        return result;
    }

    private static TNode RemoveAt(TNode root, TNode node)
    {
        if (TOps.IsNull(root)) throw new InvalidOperationException($"avl tree: no node with key 0x{TOps.Key(node):x}.");
        if (TOps.Same(root, node))
        {
            TNode left = TOps.Left(root), right = TOps.Right(root);
            if (TOps.IsNull(left)) return right;
            if (TOps.IsNull(right)) return left;
            TNode successor = right;
            while (!TOps.IsNull(TOps.Left(successor))) successor = TOps.Left(successor);
            TOps.SetRight(successor, RemoveMin(right));
            TOps.SetLeft(successor, left);
            return Balance(successor);
        }
        if (TOps.Key(node) == TOps.Key(root))
            throw new InvalidOperationException($"avl tree holds another node with key 0x{TOps.Key(node):x}.");
        if (TOps.Key(node) < TOps.Key(root)) TOps.SetLeft(root, RemoveAt(TOps.Left(root), node));
        else TOps.SetRight(root, RemoveAt(TOps.Right(root), node));
        return Balance(root);
    }

    private static TNode RemoveMin(TNode root)
    {
        if (TOps.IsNull(TOps.Left(root))) return TOps.Right(root);
        TOps.SetLeft(root, RemoveMin(TOps.Left(root)));
        return Balance(root);
    }

    /// <summary>Recomputes heights and augmented values on the path from the root to <paramref name="node"/> (whose augmented input changed in place).</summary>
    public static void RefreshPath(TNode root, TNode node)
    {
        if (TOps.IsNull(root)) return;
        if (!TOps.Same(root, node)) RefreshPath(TOps.Key(node) < TOps.Key(root) ? TOps.Left(root) : TOps.Right(root), node);
        Update(root);
    }

    /// <summary>The node with the greatest key ≤ <paramref name="key"/> (or &lt; it when <paramref name="strict"/>), or null.</summary>
    public static TNode Floor(TNode root, ulong key, bool strict = false)
    {
        TNode n = root, best = TOps.Null;
        while (!TOps.IsNull(n))
        {
            ulong k = TOps.Key(n);
            if (k < key || (!strict && k == key)) { best = n; n = TOps.Right(n); }
            else n = TOps.Left(n);
        }
        return best;
    }

    /// <summary>The node with the least key ≥ <paramref name="key"/>, or null.</summary>
    public static TNode Ceiling(TNode root, ulong key)
    {
        TNode n = root, best = TOps.Null;
        while (!TOps.IsNull(n))
        {
            if (TOps.Key(n) >= key) { best = n; n = TOps.Left(n); }
            else n = TOps.Right(n);
        }
        return best;
    }

    /// <summary>The tree's height (0 when empty).</summary>
    public static int Height(TNode root) => HeightOf(root);

    /// <summary>Calls <paramref name="visit"/> on every node in key order.</summary>
    public static void InOrder(TNode root, Action<TNode> visit)
    {
        if (TOps.IsNull(root)) return;
        InOrder(TOps.Left(root), visit);
        visit(root);
        InOrder(TOps.Right(root), visit);
    }

    /// <summary>Checks the invariants (see the type's remarks); returns the node count. <paramref name="augmentOk"/> tells whether a node's stored augmentation matches its recomputation.</summary>
    public static int Check(TNode root, Func<TNode, bool>? augmentOk = null)
    {
        ulong? last = null;
        return CheckAt(root, ref last, augmentOk).Count;
    }

    private static (int Count, int Height) CheckAt(TNode n, ref ulong? last, Func<TNode, bool>? augmentOk)
    {
        if (TOps.IsNull(n)) return (0, 0);
        var (lc, lh) = CheckAt(TOps.Left(n), ref last, augmentOk);
        ulong key = TOps.Key(n);
        if (last is { } previous && previous >= key) throw new InvalidOperationException($"avl tree: key 0x{key:x} follows 0x{previous:x}.");
        last = key;
        var (rc, rh) = CheckAt(TOps.Right(n), ref last, augmentOk);
        if (Math.Abs(lh - rh) > 1) throw new InvalidOperationException($"avl tree: node 0x{key:x} is out of balance ({lh} vs {rh}).");
        if (TOps.Height(n) != 1 + Math.Max(lh, rh)) throw new InvalidOperationException($"avl tree: node 0x{key:x} records height {TOps.Height(n)}, has {1 + Math.Max(lh, rh)}.");
        if (augmentOk != null && !augmentOk(n)) throw new InvalidOperationException($"avl tree: node 0x{key:x} has a stale augmented value.");
        return (lc + rc + 1, 1 + Math.Max(lh, rh));
    }
}

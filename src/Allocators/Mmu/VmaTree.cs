namespace Allocators.Mmu;

/// <summary>
/// The ordered set of an address space's areas: an AVL tree keyed by start address for O(log n) find_vma, plus a
/// doubly linked list in address order for neighbours and iteration (the kernel uses a maple tree). Areas never
/// overlap, so moving an area's start or end in place keeps the order valid. Not thread-safe: guarded by mmap_lock.
/// </summary>
internal sealed class VmaTree
{
    private VmArea? _root;

    public int Count { get; private set; }

    public VmArea? First { get; private set; }

    public VmArea? Last { get; private set; }

    /// <summary>The first area with End &gt; <paramref name="address"/> (find_vma), or null.</summary>
    public VmArea? FindVma(ulong address)
    {
        VmArea? node = _root, floor = null;
        while (node != null)
        {
            if (node.Start <= address) { floor = node; node = node.Right; }
            else node = node.Left;
        }
        if (floor == null) return First;
        return floor.End > address ? floor : floor.Next;
    }

    /// <summary>The area containing <paramref name="address"/>, or null.</summary>
    public VmArea? Find(ulong address)
    {
        VmArea? v = FindVma(address);
        return v != null && v.Start <= address ? v : null;
    }

    /// <summary>The last area with Start &lt; <paramref name="address"/> (the one before a gap), or null.</summary>
    public VmArea? FindPrev(ulong address)
    {
        VmArea? node = _root, floor = null;
        while (node != null)
        {
            if (node.Start < address) { floor = node; node = node.Right; }
            else node = node.Left;
        }
        return floor;
    }

    /// <summary>Inserts an area that overlaps none in the tree.</summary>
    public void Insert(VmArea vma)
    {
        VmArea? prev = FindPrev(vma.Start);
        VmArea? next = prev == null ? First : prev.Next;
        if ((prev != null && prev.End > vma.Start) || (next != null && next.Start < vma.End))
            throw new InvalidOperationException($"VMA {vma} overlaps {(prev != null && prev.End > vma.Start ? prev : next)}.");
        vma.Left = vma.Right = null;
        vma.Height = 1;
        _root = Insert(_root, vma);
        vma.Prev = prev;
        vma.Next = next;
        if (prev != null) prev.Next = vma; else First = vma;
        if (next != null) next.Prev = vma; else Last = vma;
        Count++;
    }

    /// <summary>Removes an area that is in the tree.</summary>
    public void Remove(VmArea vma)
    {
        _root = Remove(_root, vma);
        if (vma.Prev != null) vma.Prev.Next = vma.Next; else First = vma.Next;
        if (vma.Next != null) vma.Next.Prev = vma.Prev; else Last = vma.Prev;
        vma.Prev = vma.Next = vma.Left = vma.Right = null;
        Count--;
    }

    /// <summary>Removes everything.</summary>
    public void Clear()
    {
        _root = First = Last = null;
        Count = 0;
    }

    /// <summary>Height of the tree (for tests of the balance).</summary>
    public int Height => H(_root);

    private static int H(VmArea? n) => n?.Height ?? 0;

    private static void Update(VmArea n) => n.Height = 1 + Math.Max(H(n.Left), H(n.Right));

    private static VmArea RotateRight(VmArea y)
    {
        VmArea x = y.Left!;
        y.Left = x.Right;
        x.Right = y;
        Update(y);
        Update(x);
        return x;
    }

    private static VmArea RotateLeft(VmArea x)
    {
        VmArea y = x.Right!;
        x.Right = y.Left;
        y.Left = x;
        Update(x);
        Update(y);
        return y;
    }

    private static VmArea Balance(VmArea n)
    {
        Update(n);
        int bf = H(n.Left) - H(n.Right);
        if (bf > 1)
        {
            if (H(n.Left!.Left) < H(n.Left.Right)) n.Left = RotateLeft(n.Left);
            return RotateRight(n);
        }
        if (bf < -1)
        {
            if (H(n.Right!.Right) < H(n.Right.Left)) n.Right = RotateRight(n.Right);
            return RotateLeft(n);
        }
        return n;
    }

    private static VmArea Insert(VmArea? node, VmArea vma)
    {
        if (node == null) return vma;
        if (vma.Start < node.Start) node.Left = Insert(node.Left, vma);
        else node.Right = Insert(node.Right, vma);
        return Balance(node);
    }

    private static VmArea? Remove(VmArea? node, VmArea vma)
    {
        if (node == null) throw new InvalidOperationException($"VMA {vma} is not in the tree.");
        if (vma.Start < node.Start) node.Left = Remove(node.Left, vma);
        else if (vma.Start > node.Start) node.Right = Remove(node.Right, vma);
        else
        {
            if (!ReferenceEquals(node, vma)) throw new InvalidOperationException($"VMA tree holds {node} where {vma} was expected.");
            if (node.Left == null) return node.Right;
            if (node.Right == null) return node.Left;
            VmArea min = node.Right;
            while (min.Left != null) min = min.Left;
            min.Right = RemoveMin(node.Right);
            min.Left = node.Left;
            return Balance(min);
        }
        return Balance(node);
    }

    private static VmArea? RemoveMin(VmArea node)
    {
        if (node.Left == null) return node.Right;
        node.Left = RemoveMin(node.Left);
        return Balance(node);
    }
}

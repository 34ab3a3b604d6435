using Allocators.Collections;

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
        VmArea? floor = Tree.Floor(_root, address);
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
    public VmArea? FindPrev(ulong address) => Tree.Floor(_root, address, strict: true);

    /// <summary>Inserts an area that overlaps none in the tree.</summary>
    public void Insert(VmArea vma)
    {
        VmArea? prev = FindPrev(vma.Start);
        VmArea? next = prev == null ? First : prev.Next;
        if ((prev != null && prev.End > vma.Start) || (next != null && next.Start < vma.End))
            throw new InvalidOperationException($"VMA {vma} overlaps {(prev != null && prev.End > vma.Start ? prev : next)}.");
        _root = Tree.Insert(_root, vma);
        vma.Prev = prev;
        vma.Next = next;
        if (prev != null) prev.Next = vma; else First = vma;
        if (next != null) next.Prev = vma; else Last = vma;
        Count++;
    }

    /// <summary>Removes an area that is in the tree.</summary>
    public void Remove(VmArea vma)
    {
        _root = Tree.Remove(_root, vma);
        if (vma.Prev != null) vma.Prev.Next = vma.Next; else First = vma.Next;
        if (vma.Next != null) vma.Next.Prev = vma.Prev; else Last = vma.Prev;
        vma.Prev = vma.Next = null;
        Count--;
    }

    /// <summary>Removes everything.</summary>
    public void Clear()
    {
        _root = First = Last = null;
        Count = 0;
    }

    /// <summary>Height of the tree (for tests of the balance).</summary>
    public int Height => Tree.Height(_root);

    /// <summary>Checks the tree's invariants and that it holds exactly the listed areas (debug consistency checks, tests).</summary>
    public void Check()
    {
        int n = Tree.Check(_root);
        if (n != Count) throw new InvalidOperationException($"VMA tree holds {n} areas, the count is {Count}.");
    }

    private static class Tree
    {
        public static VmArea? Insert(VmArea? root, VmArea node) => IntrusiveAvlTree<VmArea?, Links>.Insert(root, node);
        public static VmArea? Remove(VmArea? root, VmArea node) => IntrusiveAvlTree<VmArea?, Links>.Remove(root, node);
        public static VmArea? Floor(VmArea? root, ulong key, bool strict = false) => IntrusiveAvlTree<VmArea?, Links>.Floor(root, key, strict);
        public static int Height(VmArea? root) => IntrusiveAvlTree<VmArea?, Links>.Height(root);
        public static int Check(VmArea? root) => IntrusiveAvlTree<VmArea?, Links>.Check(root);
    }

    /// <summary>A VMA's tree links, keyed by its start.</summary>
    private readonly struct Links : IAvlNodeOps<VmArea?>
    {
        public static VmArea? Null => null;
        public static bool IsNull(VmArea? node) => node is null;
        public static bool Same(VmArea? a, VmArea? b) => ReferenceEquals(a, b);
        public static VmArea? Left(VmArea? node) => node!.Left;
        public static void SetLeft(VmArea? node, VmArea? left) => node!.Left = left;
        public static VmArea? Right(VmArea? node) => node!.Right;
        public static void SetRight(VmArea? node, VmArea? right) => node!.Right = right;
        public static int Height(VmArea? node) => node!.Height;
        public static void SetHeight(VmArea? node, int height) => node!.Height = height;
        public static ulong Key(VmArea? node) => node!.Start;
        public static void Augment(VmArea? node) { }
    }
}

using Allocators.Collections;
using CsCheck;

namespace Allocators.Tests.Vmalloc;

/// <summary>The one balanced tree (VMAs, vmap areas): random inserts and removes against a sorted-set model, with the invariants checked after each step.</summary>
public sealed class IntrusiveAvlTreeTests
{
    private sealed class Node(ulong key)
    {
        public readonly ulong Key = key;
        public Node? Left, Right;
        public int Height;
        public ulong SubtreeMax;
    }

    private readonly struct Ops : IAvlNodeOps<Node?>
    {
        public static Node? Null => null;
        public static bool IsNull(Node? node) => node is null;
        public static bool Same(Node? a, Node? b) => ReferenceEquals(a, b);
        public static Node? Left(Node? node) => node!.Left;
        public static void SetLeft(Node? node, Node? left) => node!.Left = left;
        public static Node? Right(Node? node) => node!.Right;
        public static void SetRight(Node? node, Node? right) => node!.Right = right;
        public static int Height(Node? node) => node!.Height;
        public static void SetHeight(Node? node, int height) => node!.Height = height;
        public static ulong Key(Node? node) => node!.Key;
        public static void Augment(Node? node) => node!.SubtreeMax = Math.Max(node.Key, Math.Max(node.Left?.SubtreeMax ?? 0, node.Right?.SubtreeMax ?? 0));
    }

    [Fact]
    public void RandomInsertsAndRemovesKeepOrderBalanceAndAugmentation()
    {
        Gen.Int[0, 400].Array[1, 300].Sample(keys =>
        {
            Node? root = null;
            var model = new SortedDictionary<ulong, Node>();
            foreach (int k in keys)
            {
                ulong key = (ulong)k;
                if (model.Remove(key, out Node? existing)) root = IntrusiveAvlTree<Node?, Ops>.Remove(root, existing);
                else
                {
                    var node = new Node(key);
                    model.Add(key, node);
                    root = IntrusiveAvlTree<Node?, Ops>.Insert(root, node);
                }
                int count = IntrusiveAvlTree<Node?, Ops>.Check(root, n => n!.SubtreeMax == Math.Max(n.Key, Math.Max(n.Left?.SubtreeMax ?? 0, n.Right?.SubtreeMax ?? 0)));
                Assert.Equal(model.Count, count);
                Assert.True(IntrusiveAvlTree<Node?, Ops>.Height(root) <= 1.45 * Math.Log2(model.Count + 2) + 1, "AVL height bound");
                Assert.Equal(model.Count == 0 ? 0UL : model.Keys.Max(), root?.SubtreeMax ?? 0UL);
                ulong probe = key;
                Node? floor = IntrusiveAvlTree<Node?, Ops>.Floor(root, probe);
                Assert.Equal(model.Keys.Where(x => x <= probe).DefaultIfEmpty(ulong.MaxValue).Max(), floor?.Key ?? ulong.MaxValue);
                Node? strict = IntrusiveAvlTree<Node?, Ops>.Floor(root, probe, strict: true);
                Assert.Equal(model.Keys.Where(x => x < probe).DefaultIfEmpty(ulong.MaxValue).Max(), strict?.Key ?? ulong.MaxValue);
                Node? ceiling = IntrusiveAvlTree<Node?, Ops>.Ceiling(root, probe);
                Assert.Equal(model.Keys.Where(x => x >= probe).DefaultIfEmpty(ulong.MaxValue).Min(), ceiling?.Key ?? ulong.MaxValue);
            }
        }, iter: 200);
    }

    [Fact]
    public void RemovingANodeThatIsNotInTheTreeIsRefused()
    {
        Node? root = IntrusiveAvlTree<Node?, Ops>.Insert(null, new Node(5));
        var stranger = new Node(5);
        Assert.Throws<InvalidOperationException>(() => IntrusiveAvlTree<Node?, Ops>.Remove(root, stranger));
        Assert.Throws<InvalidOperationException>(() => IntrusiveAvlTree<Node?, Ops>.Remove(root, new Node(7)));
    }
}

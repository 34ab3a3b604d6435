using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Filemap;

/// <summary>
/// The page-cache index of one file (the kernel's <c>i_pages</c> xarray): a radix tree of 64-way native nodes from page
/// index to <see cref="PageFrame"/>, with two tag bits per slot (dirty, writeback) summarised up the tree so writeback
/// finds its pages without a scan. Readers walk it without a lock (every pointer is published with a release store
/// after the node it points to is filled); writers hold the owner's tree lock. Nodes are freed only by
/// <see cref="Clear"/> and <see cref="Dispose"/>, which the owner calls after an RCU grace period, so a lockless
/// reader never follows a freed node.
/// </summary>
internal sealed unsafe class PageTree : IDisposable
{
    /// <summary>Slots per node (XA_CHUNK_SIZE).</summary>
    public const int ChunkShift = 6;
    private const int ChunkSize = 1 << ChunkShift;
    private const ulong ChunkMask = ChunkSize - 1;

    /// <summary>Tag for pages with <see cref="PageFlags.Dirty"/> set (PAGECACHE_TAG_DIRTY).</summary>
    public const int TagDirty = 0;

    /// <summary>Tag for pages under <see cref="PageFlags.Writeback"/> (PAGECACHE_TAG_WRITEBACK).</summary>
    public const int TagWriteback = 1;

    private const int TagCount = 2;

    [StructLayout(LayoutKind.Sequential)]
    private struct Node
    {
        public int Shift;          // index bits below this node's slots: 0 for a leaf node
        public int Count;          // non-null slots
        public Node* Parent;
        public int Offset;         // slot in the parent
        public int Pad;
        public fixed ulong Tags[TagCount];
        public fixed ulong Slots[ChunkSize];
    }

    private nint _rootBits; // Node*, published with release stores for lockless readers

    private Node* Root => (Node*)_rootBits;

    /// <summary>The page at <paramref name="index"/> or null (xa_load); a value entry (a shadow) reads as null. Lockless.</summary>
    public PageFrame* Lookup(ulong index)
    {
        ulong entry = LookupEntry(index);
        return IsValue(entry) ? null : (PageFrame*)entry;
    }

    /// <summary>The raw entry at <paramref name="index"/>: 0, a page, or a value entry (low bit set). Lockless.</summary>
    public ulong LookupEntry(ulong index)
    {
        var node = (Node*)Volatile.Read(ref _rootBits);
        if (node == null || (index >> node->Shift >> ChunkShift) != 0) return 0;
        while (true)
        {
            ulong slot = Volatile.Read(ref node->Slots[(int)((index >> node->Shift) & ChunkMask)]);
            if (node->Shift == 0 || slot == 0) return slot;
            node = (Node*)slot;
        }
    }

    /// <summary>
    /// True for a value entry (xa_is_value): an integer with the low bit set stored in place of a page — the shadow an
    /// evicted page leaves for workingset detection. Frames are 64-byte aligned, so no page pointer has that bit.
    /// </summary>
    public static bool IsValue(ulong entry) => (entry & 1) != 0;

    /// <summary>
    /// Stores <paramref name="page"/> at an empty <paramref name="index"/>. False, with nothing changed, when the slot
    /// is taken. Throws <see cref="OutOfMemoryException"/> when a node cannot be allocated. Tree lock held.
    /// </summary>
    public bool Insert(ulong index, PageFrame* page) => Insert(index, (ulong)page, out _);

    /// <summary>
    /// Stores <paramref name="entry"/> (a page or a value entry) at <paramref name="index"/>, replacing a value entry
    /// there (returned in <paramref name="replaced"/>, else 0). False, with nothing changed, when a page holds the slot.
    /// Tree lock held.
    /// </summary>
    public bool Insert(ulong index, ulong entry, out ulong replaced)
    {
        Debug.Assert(entry != 0);
        replaced = 0;
        Grow(index);
        Node* node = Root;
        while (node->Shift != 0)
        {
            int offset = (int)((index >> node->Shift) & ChunkMask);
            Node* child = (Node*)node->Slots[offset];
            if (child == null)
            {
                child = NewNode(node->Shift - ChunkShift, node, offset);
                node->Count++;
                Volatile.Write(ref node->Slots[offset], (ulong)child);
            }
            node = child;
        }
        int leaf = (int)(index & ChunkMask);
        ulong old = node->Slots[leaf];
        if (old != 0 && !IsValue(old)) return false;
        if (old == 0) node->Count++;
        replaced = old;
        Volatile.Write(ref node->Slots[leaf], entry);
        return true;
    }

    /// <summary>Removes and returns the page at <paramref name="index"/> (null if none), clearing its tags. Tree lock held.</summary>
    public PageFrame* Delete(ulong index)
    {
        Node* node = LeafFor(index);
        if (node == null) return null;
        int offset = (int)(index & ChunkMask);
        var page = (PageFrame*)node->Slots[offset];
        if (page == null) return null;
        for (int tag = 0; tag < TagCount; tag++) ClearTagAt(node, offset, tag);
        Volatile.Write(ref node->Slots[offset], 0UL);
        node->Count--;
        // Empty nodes stay linked (a lockless reader may be inside them) until Clear or Dispose.
        return page;
    }

    /// <summary>Sets <paramref name="tag"/> on the page at <paramref name="index"/>, which must be present. Tree lock held.</summary>
    public void SetTag(ulong index, int tag)
    {
        Node* node = LeafFor(index);
        Debug.Assert(node != null && node->Slots[index & ChunkMask] != 0);
        int offset = (int)(index & ChunkMask);
        while (node != null)
        {
            ulong bit = 1UL << offset;
            if ((node->Tags[tag] & bit) != 0) return; // the ancestors already carry it
            node->Tags[tag] |= bit;
            offset = node->Offset;
            node = node->Parent;
        }
    }

    /// <summary>Clears <paramref name="tag"/> at <paramref name="index"/> (no-op when absent). Tree lock held.</summary>
    public void ClearTag(ulong index, int tag)
    {
        Node* node = LeafFor(index);
        if (node != null) ClearTagAt(node, (int)(index & ChunkMask), tag);
    }

    /// <summary>True when the page at <paramref name="index"/> carries <paramref name="tag"/>. Tree lock held.</summary>
    public bool GetTag(ulong index, int tag)
    {
        Node* node = LeafFor(index);
        return node != null && (node->Tags[tag] & (1UL << (int)(index & ChunkMask))) != 0;
    }

    /// <summary>True when any page carries <paramref name="tag"/> (mapping_tagged). Tree lock held.</summary>
    public bool AnyTagged(int tag) => Root != null && Root->Tags[tag] != 0;

    /// <summary>
    /// Up to <paramref name="indices"/>.Length present pages at or after <paramref name="start"/> and below
    /// <paramref name="end"/>, in index order; with <paramref name="tag"/> &gt;= 0 only pages carrying that tag
    /// (find_get_entries / find_get_pages_range_tag). Returns how many were found; the caller resumes after the
    /// last index. Tree lock held.
    /// </summary>
    public int Gang(ulong start, ulong end, int tag, Span<ulong> indices, PageFrame** pages)
    {
        int found = 0;
        if (Root == null || start >= end) return 0;
        ulong limit = (ulong)ChunkSize << Root->Shift;
        if (limit != 0 && end > limit) end = limit;
        Walk(Root, 0, start, end, tag, indices, pages, ref found);
        return found;
    }

    private static bool Walk(Node* node, ulong baseIndex, ulong start, ulong end, int tag, Span<ulong> indices, PageFrame** pages, ref int found)
    {
        int shift = node->Shift;
        for (int offset = 0; offset < ChunkSize; offset++)
        {
            ulong first = baseIndex + ((ulong)offset << shift);
            ulong span = 1UL << shift;
            if (first + span <= start) continue;
            if (first >= end) return true;
            ulong slot = node->Slots[offset];
            if (slot == 0) continue;
            if (tag >= 0 && (node->Tags[tag] & (1UL << offset)) == 0) continue;
            if (shift == 0 && IsValue(slot)) continue; // shadows are not pages
            if (shift == 0)
            {
                indices[found] = first;
                pages[found] = (PageFrame*)slot;
                if (++found == indices.Length) return true;
            }
            else if (Walk((Node*)slot, first, start, end, tag, indices, pages, ref found)) return true;
        }
        return false;
    }

    /// <summary>
    /// Unpublishes every node of a tree that holds no page and returns them, for <see cref="FreeDetached"/> once no
    /// lockless walker can still be inside (the owner waited for an RCU grace period). Tree lock held.
    /// </summary>
    public nint Detach()
    {
        nint root = _rootBits;
        if (root == 0) return 0;
        Debug.Assert(IsEmpty || !HoldsPage(Root));
        Volatile.Write(ref _rootBits, 0);
        return root;
    }

    /// <summary>Frees nodes taken out by <see cref="Detach"/>.</summary>
    public static void FreeDetached(nint root)
    {
        if (root != 0) FreeSubtree((Node*)root);
    }

    /// <summary>Frees every node at the owner's disposal (no walker is left; every page is gone).</summary>
    public void Clear() => FreeDetached(Detach());

    /// <summary>
    /// Frees every node whatever the tree still holds (the swap cache at system disposal: shadow entries, and pages
    /// that go with the arena). No walker may be left.
    /// </summary>
    public void Abandon()
    {
        nint root = _rootBits;
        Volatile.Write(ref _rootBits, 0);
        FreeDetached(root);
    }

    /// <summary>True when no page is stored.</summary>
    public bool IsEmpty => Root == null || Root->Count == 0 || AllEmpty(Root);

    /// <summary>True when a page (not a value entry) is stored below <paramref name="node"/>.</summary>
    private static bool HoldsPage(Node* node)
    {
        for (int i = 0; i < ChunkSize; i++)
        {
            ulong slot = node->Slots[i];
            if (slot == 0) continue;
            if (node->Shift == 0 ? !IsValue(slot) : HoldsPage((Node*)slot)) return true;
        }
        return false;
    }

    /// <summary>
    /// Removes every value entry at or after <paramref name="start"/> (truncation and swapoff drop the shadows too).
    /// Returns how many went. Tree lock held.
    /// </summary>
    public long DeleteValues(ulong start) => Root == null ? 0 : DeleteValues(Root, 0, start);

    private static long DeleteValues(Node* node, ulong baseIndex, ulong start)
    {
        long deleted = 0;
        for (int offset = 0; offset < ChunkSize; offset++)
        {
            ulong first = baseIndex + ((ulong)offset << node->Shift);
            if (first + (1UL << node->Shift) <= start) continue;
            ulong slot = node->Slots[offset];
            if (slot == 0) continue;
            if (node->Shift != 0)
            {
                deleted += DeleteValues((Node*)slot, first, start);
            }
            else if (IsValue(slot))
            {
                Volatile.Write(ref node->Slots[offset], 0UL);
                node->Count--;
                deleted++;
            }
        }
        return deleted;
    }

    private static bool AllEmpty(Node* node)
    {
        if (node->Shift == 0) return node->Count == 0;
        for (int i = 0; i < ChunkSize; i++)
            if (node->Slots[i] != 0 && !AllEmpty((Node*)node->Slots[i])) return false;
        return true;
    }

    /// <inheritdoc/>
    public void Dispose() => Clear();

    private static void FreeSubtree(Node* node)
    {
        if (node->Shift != 0)
            for (int i = 0; i < ChunkSize; i++)
                if (node->Slots[i] != 0) FreeSubtree((Node*)node->Slots[i]);
        NativeMemory.AlignedFree(node);
    }

    private Node* LeafFor(ulong index)
    {
        Node* node = Root;
        if (node == null || (index >> node->Shift >> ChunkShift) != 0) return null;
        while (node->Shift != 0)
        {
            node = (Node*)node->Slots[(int)((index >> node->Shift) & ChunkMask)];
            if (node == null) return null;
        }
        return node;
    }

    private static void ClearTagAt(Node* node, int offset, int tag)
    {
        while (node != null)
        {
            ulong bit = 1UL << offset;
            if ((node->Tags[tag] & bit) == 0) return;
            node->Tags[tag] &= ~bit;
            if (node->Tags[tag] != 0) return; // a sibling still carries it
            offset = node->Offset;
            node = node->Parent;
        }
    }

    /// <summary>Adds levels above the root until <paramref name="index"/> fits (xas_expand).</summary>
    private void Grow(ulong index)
    {
        if (Root == null)
        {
            int shift = 0;
            while ((index >> shift >> ChunkShift) != 0) shift += ChunkShift;
            Volatile.Write(ref _rootBits, (nint)NewNode(shift, null, 0));
            return;
        }
        while ((index >> Root->Shift >> ChunkShift) != 0)
        {
            Node* old = Root;
            Node* top = NewNode(old->Shift + ChunkShift, null, 0);
            top->Slots[0] = (ulong)old;
            top->Count = 1;
            for (int tag = 0; tag < TagCount; tag++)
                if (old->Tags[tag] != 0) top->Tags[tag] = 1;
            old->Parent = top;
            old->Offset = 0;
            // A reader holding the old root still walks a correct (smaller) tree; one that reads the new root sees it whole.
            Volatile.Write(ref _rootBits, (nint)top);
        }
    }

    private Node* NewNode(int shift, Node* parent, int offset)
    {
        var node = (Node*)NativeMemory.AlignedAlloc((nuint)sizeof(Node), 64);
        if (node == null) throw new OutOfMemoryException("page cache: no memory for a radix tree node.");
        NativeMemory.Clear(node, (nuint)sizeof(Node));
        node->Shift = shift;
        node->Parent = parent;
        node->Offset = offset;
        return node;
    }

    /// <summary>Debug check: every node's tag bits equal the OR of its children's, counts equal non-null slots.</summary>
    [Conditional("DEBUG")]
    public void AssertTagsConsistent()
    {
        if (Root != null) Check(Root);

        static ulong Check(Node* node)
        {
            int count = 0;
            ulong summary = 0;
            for (int i = 0; i < ChunkSize; i++)
            {
                if (node->Slots[i] == 0) { Debug.Assert((node->Tags[0] & (1UL << i)) == 0 && (node->Tags[1] & (1UL << i)) == 0); continue; }
                count++;
                if (node->Shift != 0)
                {
                    ulong child = Check((Node*)node->Slots[i]);
                    for (int tag = 0; tag < TagCount; tag++)
                        Debug.Assert(((child >> tag) & 1) == ((node->Tags[tag] >> i) & 1), "tag summary differs from the children");
                }
            }
            Debug.Assert(count == node->Count, "node count differs from its slots");
            for (int tag = 0; tag < TagCount; tag++) if (node->Tags[tag] != 0) summary |= 1UL << tag;
            return summary;
        }
    }
}

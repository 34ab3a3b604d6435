using System.Runtime.InteropServices;

namespace Allocators.Swap;

/// <summary>Which list a swap cluster is on (enum swap_cluster_flags, mm/swap.h).</summary>
internal enum ClusterFlags
{
    /// <summary>On no list: some processor's current cluster (CLUSTER_FLAG_NONE, isolated).</summary>
    None = 0,

    /// <summary>Every slot free: on the free list.</summary>
    Free = 1,

    /// <summary>Some slots free, some used: on the nonfull list.</summary>
    Nonfull = 2,

    /// <summary>Every slot used (or bad): on no list until a slot is freed.</summary>
    Full = 3,
}

/// <summary>
/// One cluster of <see cref="SwapDevice.ClusterSize"/> slots (struct swap_cluster_info), in native memory. The lock
/// guards the cluster's swap_map entries and <see cref="Count"/>; <see cref="Flags"/>, <see cref="Prev"/> and
/// <see cref="Next"/> change only under the device's list lock.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SwapClusterInfo
{
    /// <summary>Spin lock word (ci->lock).</summary>
    public int Lock;

    /// <summary>Slots of the cluster whose swap_map entry is non-zero (used, cached or bad).</summary>
    public int Count;

    /// <summary>Neighbours on the free or nonfull list, -1 at the ends.</summary>
    public int Prev, Next;

    /// <summary>The list the cluster is on.</summary>
    public ClusterFlags Flags;
}

/// <summary>A processor's current cluster and where its next allocation looks (percpu_cluster), one per 128-byte block.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SwapPercpuCluster
{
    /// <summary>Spin lock word: a thread may be moved to another processor while it allocates.</summary>
    public int Lock;

    /// <summary>The cluster this processor allocates from, -1 for none.</summary>
    public int Cluster;

    /// <summary>The next slot to look at in it (percpu_cluster->next).</summary>
    public uint Next;
}

/// <summary>The device's cluster lists (si->free_clusters, si->nonfull_clusters) and their lock, in native memory.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SwapClusterLists
{
    /// <summary>Spin lock word guarding the lists and every cluster's <see cref="SwapClusterInfo.Flags"/>.</summary>
    public int Lock;

    /// <summary>First cluster of each list, -1 when empty.</summary>
    public int FreeHead, NonfullHead;

    /// <summary>Clusters on each list.</summary>
    public int FreeCount, NonfullCount;
}

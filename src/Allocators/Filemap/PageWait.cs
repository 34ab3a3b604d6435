using Allocators.Physical;

namespace Allocators.Filemap;

/// <summary>
/// The page lock and the writeback wait (lock_page, unlock_page, wait_on_page_writeback, end_page_writeback): bits in
/// the frame's flags word changed with atomic operations, and sleepers parked on one of a fixed table of hashed wait
/// queues (the kernel's page_wait_table) rather than on anything per page. <see cref="PageFlags.Waiters"/> tells the
/// clearer that someone sleeps; without it, unlocking is one atomic AND.
/// </summary>
internal static unsafe class PageWait
{
    private const int TableBits = 8;
    private static readonly object[] s_queues = CreateQueues();

    private static object[] CreateQueues()
    {
        var queues = new object[1 << TableBits];
        for (int i = 0; i < queues.Length; i++) queues[i] = new object();
        return queues;
    }

    private static object QueueOf(PageFrame* page) => s_queues[(int)(((ulong)page * 0x9E3779B97F4A7C15UL) >> (64 - TableBits))];

    /// <summary>Atomically sets <paramref name="flags"/>; returns the previous flag bits.</summary>
    public static PageFlags Set(PageFrame* page, PageFlags flags) => PageFrame.SetFlags(page, flags);

    /// <summary>Atomically clears <paramref name="flags"/>; returns the previous flag bits.</summary>
    public static PageFlags Clear(PageFrame* page, PageFlags flags) => PageFrame.ClearFlags(page, flags);

    /// <summary>trylock_page.</summary>
    public static bool TryLock(PageFrame* page) => (Set(page, PageFlags.Locked) & PageFlags.Locked) == 0;

    /// <summary>lock_page: sleeps until the page is unlocked, then locks it.</summary>
    public static void Lock(PageFrame* page)
    {
        if (TryLock(page)) return;
        object queue = QueueOf(page);
        lock (queue)
        {
            while (true)
            {
                Set(page, PageFlags.Waiters);
                if (TryLock(page)) return;
                Monitor.Wait(queue);
            }
        }
    }

    /// <summary>unlock_page: clears the lock bit and wakes the sleepers of its queue.</summary>
    public static void Unlock(PageFrame* page) => ClearAndWake(page, PageFlags.Locked);

    /// <summary>Sleeps while <paramref name="bit"/> is set (wait_on_page_bit; writeback: wait_on_page_writeback).</summary>
    public static void WaitWhile(PageFrame* page, PageFlags bit)
    {
        if (!page->Has(bit)) return;
        object queue = QueueOf(page);
        lock (queue)
        {
            while (true)
            {
                Set(page, PageFlags.Waiters);
                if (!page->Has(bit)) return;
                Monitor.Wait(queue);
            }
        }
    }

    /// <summary>Clears <paramref name="bit"/> and, when someone sleeps on the page, wakes its queue (end_page_writeback, unlock_page).</summary>
    public static void ClearAndWake(PageFrame* page, PageFlags bit)
    {
        if ((Clear(page, bit) & PageFlags.Waiters) == 0) return;
        object queue = QueueOf(page);
        lock (queue)
        {
            // Sleepers set the bit again before they sleep, under this lock, so none is missed.
            Clear(page, PageFlags.Waiters);
            Monitor.PulseAll(queue);
        }
    }
}

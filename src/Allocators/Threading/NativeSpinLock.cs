using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Allocators.Threading;

/// <summary>
/// A test-and-test-and-set lock on an <see cref="int"/> that lives in native memory (the kernel's spinlock_t),
/// so that lock words sit inside native metadata such as a zone. Waiters spin, then yield the processor; they never
/// sleep: a 1 ms Thread.Sleep(1) for a lock held a few microseconds stalled whole workloads (critical sections here
/// are short, and a preempted holder gets the processor back when waiters yield).
/// Debug builds store the holder's managed thread id in the word, so <see cref="AssertHeld"/> can name a caller that
/// runs a "(lock held)" function without the lock; release builds store 1.
/// </summary>
internal static unsafe class NativeSpinLock
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Acquire(int* word)
    {
        if (Interlocked.CompareExchange(ref *word, Holder, 0) != 0) AcquireContended(word);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryAcquire(int* word) => Interlocked.CompareExchange(ref *word, Holder, 0) == 0;

    /// <summary>Debug builds: fails unless the calling thread holds the lock (lockdep_assert_held).</summary>
    [Conditional("DEBUG")]
    public static void AssertHeld(int* word)
        => Debug.Assert(Volatile.Read(ref *word) == Holder, $"spinlock at 0x{(nuint)word:x} is not held by this thread");

#if DEBUG
    private static int Holder => Environment.CurrentManagedThreadId;
#else
    private const int Holder = 1;
#endif

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Release(int* word) => Volatile.Write(ref *word, 0);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void AcquireContended(int* word)
    {
        var spin = new SpinWait();
        while (true)
        {
            if (Volatile.Read(ref *word) == 0 && Interlocked.CompareExchange(ref *word, Holder, 0) == 0) return;
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }
}

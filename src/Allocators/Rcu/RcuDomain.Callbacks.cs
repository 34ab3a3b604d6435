using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Threading;

namespace Allocators.Rcu;

/// <summary>Frees (or otherwise finishes) a run of queued arguments after their grace period; registered with <see cref="RcuDomain.RegisterHandler"/>.</summary>
internal delegate void RcuBulkHandler(ReadOnlySpan<nint> arguments);

/// <summary>
/// Deferred callbacks: call_rcu, kfree_rcu's batching, rcu_barrier. A callback is an (fn, arg) pair appended to the
/// calling thread's native batch; a background worker collects every thread's batch, waits one grace period for the
/// lot and runs them, handing runs of the same handler over in bulk (kfree_bulk).
/// </summary>
public sealed unsafe partial class RcuDomain
{
    /// <summary>How long the worker lets callbacks accumulate after the first one before it starts a grace period.</summary>
    private const int DrainDelayMilliseconds = 2;

    /// <summary>Spare batches kept for reuse.</summary>
    private const int MaxSpares = 64;

    // Fn encoding: 0 = GCHandle of an Action in Arg; 1..MaxHandlers = a registered handler; else a delegate*<nint, void>.
    private const nint ManagedCallback = 0;
    private const int MaxHandlers = 4095;

    private readonly Lock _queueLock = new();
    private RcuBatch* _pending;   // full or collected batches waiting for the worker (_queueLock)
    private RcuBatch* _spares;    // empty batches for reuse (_queueLock)
    private int _spareCount;
    private RcuBulkHandler?[] _handlers = new RcuBulkHandler?[1]; // index 0 unused; replaced whole (copy on write)

    private readonly object _wake = new();
    private Thread? _worker;
    private int _armed;           // 1: the worker knows callbacks are queued
    private bool _kicked;         // a barrier wants a pass now (_wake)
    private bool _stopping;       // (_wake)
    private long _barrierRequested; // (_wake)
    private long _barrierDone;      // (_wake)
    private long _invoked;
    private bool _disposed;

    /// <summary>Callbacks run so far.</summary>
    public long CallbacksInvoked => Volatile.Read(ref _invoked);

    /// <summary>Raised on the callback thread when a callback throws; the rest of the batch still runs.</summary>
    public event Action<Exception>? CallbackFailed;

    /// <summary>Runs <paramref name="callback"/> after a grace period, on the domain's callback thread (call_rcu).</summary>
    public void CallRcu(Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        Enqueue(ManagedCallback, GCHandle.ToIntPtr(GCHandle.Alloc(callback)));
    }

    /// <summary>
    /// Runs <paramref name="callback"/>(<paramref name="argument"/>) after a grace period, on the domain's callback
    /// thread; allocates no managed memory (call_rcu with the rcu_head's container as the argument).
    /// </summary>
    public void CallRcu(delegate*<nint, void> callback, nint argument)
    {
        if (callback == null) throw new ArgumentNullException(nameof(callback));
        Enqueue((nint)callback, argument);
    }

    /// <summary>Registers a bulk handler for <see cref="Enqueue"/>; returns its id (the entry's fn).</summary>
    internal nint RegisterHandler(RcuBulkHandler handler)
    {
        lock (_queueLock)
        {
            var table = _handlers;
            int free = Array.IndexOf(table, null, 1);
            if (free < 0)
            {
                if (table.Length > MaxHandlers) throw new InvalidOperationException("Too many RCU handlers registered.");
                free = table.Length;
                Array.Resize(ref table, table.Length * 2);
            }
            else table = (RcuBulkHandler?[])table.Clone();
            table[free] = handler;
            Volatile.Write(ref _handlers, table);
            return free;
        }
    }

    /// <summary>Unregisters a handler once nothing queued can still name it (after <see cref="RcuBarrier"/>).</summary>
    internal void UnregisterHandler(nint id)
    {
        lock (_queueLock)
        {
            var table = (RcuBulkHandler?[])_handlers.Clone();
            table[id] = null;
            Volatile.Write(ref _handlers, table);
        }
    }

    /// <summary>
    /// Queues (fn, arg) for after a grace period: appended to the thread's batch with no lock and no managed
    /// allocation; a new batch (one in <see cref="RcuBatch.Capacity"/> calls) takes the queue lock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Enqueue(nint fn, nint arg)
    {
        var t = (RcuThread*)_threads.GetOrCreateCurrent();
        if (ThreadCacheHeader.TryEnter(&t->Header))
        {
            RcuBatch* b = t->Batch;
            if (b != null && b->Count < RcuBatch.Capacity)
            {
                RcuEntry* e = RcuBatch.Entries(b) + b->Count;
                e->Fn = fn;
                e->Arg = arg;
                b->Count++;
                ThreadCacheHeader.Exit(&t->Header);
                return;
            }
        }
        else t = null;
        EnqueueSlow(t, fn, arg);
    }

    /// <summary>
    /// The thread's batch is missing or full (<paramref name="t"/> entered), or a drain holds it (<paramref name="t"/>
    /// null): start a batch, or queue a one-entry batch on the shared list; then make sure the worker will look.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void EnqueueSlow(RcuThread* t, nint fn, nint arg)
    {
        RcuBatch* b;
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            b = TakeSpare();
        }
        catch
        {
            if (t != null) ThreadCacheHeader.Exit(&t->Header);
            throw;
        }
        RcuEntry* e = RcuBatch.Entries(b);
        e->Fn = fn;
        e->Arg = arg;
        b->Count = 1;
        if (t != null)
        {
            RcuBatch* full = t->Batch;
            t->Batch = b;
            ThreadCacheHeader.Exit(&t->Header);
            if (full != null) PushPending(full);
        }
        else PushPending(b);
        // Read after the append: either the worker's pass (which clears _armed, then drains) sees the entry, or we see 0.
        if (Volatile.Read(ref _armed) == 0) Arm();
    }

    private RcuBatch* TakeSpare()
    {
        lock (_queueLock)
        {
            RcuBatch* b = _spares;
            if (b != null)
            {
                _spares = b->Next;
                _spareCount--;
                b->Next = null;
                b->Count = 0;
                return b;
            }
        }
        var fresh = (RcuBatch*)NativeMemory.Alloc(RcuBatch.Bytes);
        fresh->Next = null;
        fresh->Count = 0;
        return fresh;
    }

    private void ReturnSpare(RcuBatch* b)
    {
        lock (_queueLock)
        {
            if (_spareCount < MaxSpares && !_disposed)
            {
                b->Next = _spares;
                _spares = b;
                _spareCount++;
                return;
            }
        }
        NativeMemory.Free(b);
    }

    private void PushPending(RcuBatch* b)
    {
        lock (_queueLock)
        {
            b->Next = _pending;
            _pending = b;
        }
    }

    private RcuBatch* TakePending()
    {
        lock (_queueLock)
        {
            RcuBatch* list = _pending;
            _pending = null;
            return list;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Arm()
    {
        if (Interlocked.Exchange(ref _armed, 1) != 0) return;
        lock (_wake)
        {
            if (_stopping) return; // Dispose runs whatever is left
            if (_worker == null)
            {
                _worker = new Thread(WorkerLoop) { IsBackground = true, Name = "rcu_gp" };
                _worker.Start();
            }
            Monitor.PulseAll(_wake);
        }
    }

    /// <summary>
    /// Waits until every callback queued before the call has run (rcu_barrier). Queued ones get their grace period
    /// at once rather than after the usual batching delay.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from inside a read section or from a callback.</exception>
    public void RcuBarrier()
    {
        if (InReadSection) throw new InvalidOperationException("rcu_barrier inside an RCU read-side critical section would wait for itself.");
        lock (_wake)
        {
            if (_worker == null || _stopping) return; // nothing was ever queued, or Dispose runs the rest
            if (Thread.CurrentThread == _worker) throw new InvalidOperationException("rcu_barrier from an RCU callback would wait for itself.");
            long request = ++_barrierRequested;
            _kicked = true;
            Monitor.PulseAll(_wake);
            while (_barrierDone < request && !_stopping) Monitor.Wait(_wake);
        }
    }

    private void WorkerLoop()
    {
        while (true)
        {
            lock (_wake)
            {
                while (!_stopping && !_kicked && Volatile.Read(ref _armed) == 0) Monitor.Wait(_wake);
                if (_stopping) return;
                // Let a burst accumulate (kfree_rcu's monitor delay) unless a barrier is waiting.
                if (!_kicked) Monitor.Wait(_wake, DrainDelayMilliseconds);
                if (_stopping) return;
                _kicked = false;
            }
            RunPass();
        }
    }

    /// <summary>Collects every queued callback, waits one grace period, runs them, and completes the barriers requested before.</summary>
    private void RunPass()
    {
        long barrier;
        lock (_wake) barrier = _barrierRequested;
        Interlocked.Exchange(ref _armed, 0);
        _threads.DrainAll();
        RcuBatch* list = TakePending();
        if (list != null)
        {
            SynchronizeRcu();
            RunBatches(list);
        }
        lock (_wake)
        {
            if (barrier > _barrierDone) _barrierDone = barrier;
            Monitor.PulseAll(_wake);
        }
    }

    /// <summary>Runs every entry of a batch list (after its grace period) and recycles the batches.</summary>
    private void RunBatches(RcuBatch* list)
    {
        nint* run = stackalloc nint[RcuBatch.Capacity];
        var handlers = Volatile.Read(ref _handlers);
        while (list != null)
        {
            RcuBatch* next = list->Next;
            RcuEntry* e = RcuBatch.Entries(list);
            int count = list->Count;
            for (int i = 0; i < count;)
            {
                nint fn = e[i].Fn;
                if (fn > 0 && fn < handlers.Length)
                {
                    int n = 0;
                    while (i < count && e[i].Fn == fn) run[n++] = e[i++].Arg;
                    Invoke(handlers[fn], fn, new ReadOnlySpan<nint>(run, n));
                    Interlocked.Add(ref _invoked, n);
                }
                else
                {
                    Invoke(fn, e[i].Arg);
                    Interlocked.Increment(ref _invoked);
                    i++;
                }
            }
            ReturnSpare(list);
            list = next;
        }
    }

    private void Invoke(RcuBulkHandler? handler, nint fn, ReadOnlySpan<nint> arguments)
    {
        try
        {
            if (handler == null) throw new InvalidOperationException($"RCU handler {fn} was unregistered with {arguments.Length} callbacks still queued.");
            handler(arguments);
        }
        catch (Exception ex)
        {
            Report(ex);
        }
    }

    private void Invoke(nint fn, nint arg)
    {
        try
        {
            if (fn == ManagedCallback)
            {
                var handle = GCHandle.FromIntPtr(arg);
                var action = (Action)handle.Target!;
                handle.Free();
                action();
            }
            else ((delegate*<nint, void>)fn)(arg);
        }
        catch (Exception ex)
        {
            Report(ex);
        }
    }

    private void Report(Exception ex)
    {
        var failed = CallbackFailed;
        if (failed == null) return;
        try
        {
            failed(ex);
        }
        catch (Exception)
        {
            // a failing observer must not stop the callbacks behind it
        }
    }

    /// <summary>
    /// Stops the callback thread, then runs every queued callback after a final grace period (so queued frees are not
    /// lost) and frees the batches. Waits for readers still inside a section; calls from here on throw.
    /// </summary>
    public void Dispose()
    {
        Thread? worker;
        lock (_wake)
        {
            if (_stopping) return;
            _stopping = true;
            worker = _worker;
            Monitor.PulseAll(_wake);
        }
        if (worker != null && worker != Thread.CurrentThread) worker.Join();
        _threads.DrainAll();
        RcuBatch* list = TakePending();
        if (list != null)
        {
            SynchronizeRcu();
            RunBatches(list);
        }
        // Retiring the records flushes what threads queued meanwhile; with no record left, no reader can be inside.
        _threads.Dispose();
        list = TakePending();
        if (list != null) RunBatches(list);
        lock (_queueLock)
        {
            _disposed = true;
            while (_spares != null)
            {
                RcuBatch* next = _spares->Next;
                NativeMemory.Free(_spares);
                _spares = next;
            }
            _spareCount = 0;
        }
    }
}

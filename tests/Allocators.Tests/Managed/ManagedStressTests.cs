using System.Buffers;
using System.Collections.Concurrent;
using Allocators.Tests.Threading;
using Allocators.Managed;
using Allocators.Slab;
using static Allocators.Tests.Managed.ManagedTestSupport;

namespace Allocators.Tests.Managed;

/// <summary>
/// Bounded multi-thread stress: producers rent owners, handles and writers and fill them; consumers on other threads
/// check every byte and dispose them (owners go back to the consumers' pools, objects to remote frees). Ends with
/// every object freed and the pools holding no more than they should. Bounded by count, not time, and by a deadline.
/// </summary>
public class ManagedStressTests
{
    private const int Producers = 2;
    private const int PerProducer = 20_000;

    private sealed record Item(int Seed, SlabMemoryOwner? Owner, KmemHandle<long> Handle, NativeBufferWriter? Writer, long Expected);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OwnersRentedOnOneThreadAreDisposedOnAnother(bool trackOwnerLeaks)
    {
        using var sys = NewSystem(trackOwnerLeaks, mebibytes: 128);
        SlabAllocator slab = sys.Slab;
        KmemCache<long> longs = slab.CreateCache<long>("managed-stress");
        var queue = new HandOffQueue<Item>(capacity: 4096);
        var errors = new ConcurrentQueue<string>();

        void Produce(int producer)
        {
            var random = new Random(producer);
            for (int i = 0; i < PerProducer; i++)
            {
                int seed = producer * PerProducer + i;
                switch (i % 4)
                {
                    case 0:
                    case 1:
                        SlabMemoryOwner owner = slab.RentMemory(random.Next(0, i % 4 == 0 ? 256 : 20_000));
                        Fill(owner.Memory.Span, seed);
                        queue.Add(new Item(seed, owner, default, null, 0));
                        break;
                    case 2:
                        KmemHandle<long> handle = longs.AllocHandle();
                        handle.Value = seed;
                        queue.Add(new Item(seed, null, handle, null, seed));
                        break;
                    default:
                        var writer = new NativeBufferWriter(slab, 512);
                        var data = new byte[random.Next(0, 3000)];
                        Fill(data, seed);
                        writer.Write(data);
                        queue.Add(new Item(seed, null, default, writer, data.Length));
                        break;
                }
            }
        }

        void Consume()
        {
            foreach (Item item in queue.GetConsumingEnumerable())
            {
                if (item.Owner is { } owner)
                {
                    if (FirstWrong(owner.Span, item.Seed) is var at and >= 0) errors.Enqueue($"owner {item.Seed}: byte {at}");
                    owner.Dispose();
                }
                else if (item.Writer is { } writer)
                {
                    byte[] bytes = writer.AsSequence().ToArray();
                    if (bytes.Length != item.Expected || FirstWrong(bytes, item.Seed) >= 0) errors.Enqueue($"writer {item.Seed}");
                    writer.Dispose();
                }
                else
                {
                    if (item.Handle.Value != item.Expected) errors.Enqueue($"handle {item.Seed}");
                    item.Handle.Free();
                }
            }
        }

        var threads = new List<Thread>();
        for (int p = 0; p < Producers; p++)
        {
            int id = p;
            threads.Add(new Thread(() => Produce(id)));
        }
        var consumers = new[] { new Thread(Consume), new Thread(Consume) };
        foreach (Thread t in threads.Concat(consumers)) t.Start();
        foreach (Thread t in threads) Assert.True(t.Join(TimeSpan.FromMinutes(2)), "producer stuck");
        queue.CompleteAdding();
        foreach (Thread t in consumers) Assert.True(t.Join(TimeSpan.FromMinutes(2)), "consumer stuck");

        Assert.Empty(errors);
        slab.ShrinkAll();
        Assert.Equal(0, Live(sys.Slab, longs.Cache));
        Assert.All(slab.KmallocCaches, c => Assert.Equal(0, c.ActiveObjects));
    }
}

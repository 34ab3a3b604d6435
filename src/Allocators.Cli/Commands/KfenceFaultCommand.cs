using System.ComponentModel;
using Allocators.Physical;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>
/// Hidden: a process for KFENCE's tests. Builds a system with KFENCE sampling, arms it (or, with a sample rate, just
/// allocates) until a kmalloc comes from the guarded pool, prints the object's address and size, then makes the bad access asked for through a raw pointer, as a
/// buggy caller would: the process is expected to die on the guard page with KFENCE's report on standard error.
/// </summary>
internal sealed unsafe class KfenceFaultCommand : Command<KfenceFaultCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--access <KIND>")]
        [Description("overrun (write one byte past the end of a right-placed object), underrun (read one byte before a left-placed one), use-after-free (read a freed object), or count (no bad access: 20,000 kmallocs with the sampling ALLOCATORS_CHECKS sets, and a report of the samples).")]
        public string Access { get; init; } = "overrun";

        [CommandOption("--size <BYTES>")]
        [Description("kmalloc size of the sampled object (default 100).")]
        public int Size { get; init; } = 100;

        [CommandOption("--sample-rate <N>")]
        [Description("sample one allocation in about N (kfence.sample_rate) instead of arming the timed pool (default 0: timed).")]
        public int SampleRate { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.Access == "count") return Count();
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 64L << 20,
                Backing = ArenaBacking.MemFd,
                Checks = settings.SampleRate > 0
                    ? new CheckedModeOptions { KfenceSampleRate = settings.SampleRate, KfenceObjects = 15 }
                    : new CheckedModeOptions { KfenceSampleInterval = 100_000, KfenceObjects = 15 },
            },
        });
        var kfence = system.Slab.Kfence!;
        bool wantLeft = settings.Access == "underrun";
        bool wantRight = settings.Access == "overrun";
        byte* p = null;
        for (long tries = 0; tries < 1000L * Math.Max(1, settings.SampleRate) && p == null; tries++)
        {
            if (settings.SampleRate == 0) kfence.Arm();
            var q = (byte*)system.Slab.Kmalloc((nuint)settings.Size);
            bool left = ((nuint)q & 4095) == 0;
            if (kfence.Contains(q) && (!wantLeft || left) && (!wantRight || !left)) p = q;
            else if (!kfence.Contains(q)) system.Slab.Kfree(q);
        }
        if (p == null)
        {
            Console.Error.WriteLine("kfence-fault: no sampled object");
            return ExitCodes.InternalError;
        }
        Console.Out.WriteLine($"object 0x{(nuint)p:x} size {settings.Size}");
        Console.Out.Flush();
        switch (settings.Access)
        {
            case "overrun":
                p[settings.Size + (int)(4096 - ((nuint)(p + settings.Size) & 4095)) % 4096] = 1; // the first byte of the guard page
                break;
            case "underrun":
                Console.Out.WriteLine(p[-1]);
                break;
            case "use-after-free":
                system.Slab.Kfree(p);
                Console.Out.WriteLine(p[0]);
                break;
            default:
                Console.Error.WriteLine($"kfence-fault: unknown --access {settings.Access}");
                return ExitCodes.UsageError;
        }
        Console.Out.WriteLine("no fault");
        return ExitCodes.InternalError;
    }

    /// <summary>
    /// --access count: 20,000 kmalloc(40)s, each filled and freed, on a system whose checked modes all come from
    /// ALLOCATORS_CHECKS (the boot parameters); prints how many were sampled, whether the count ran inline, and whether
    /// every freed slab object read zero when init_on_free is on.
    /// </summary>
    private static int Count()
    {
        var checks = new CheckedModeOptions();
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64L << 20, Checks = checks } });
        var kfence = system.Slab.Kfence;
        int samples = 0, dirty = 0;
        for (int i = 0; i < 20_000; i++)
        {
            var p = (byte*)system.Slab.Kmalloc(40);
            bool sampled = kfence != null && kfence.Contains(p);
            if (sampled) samples++;
            new Span<byte>(p, 40).Fill(0xAB);
            system.Slab.Kfree(p);
            // A freed slab object stays mapped (a sampled one does not): init_on_free must have zeroed it.
            if (!sampled && checks.InitOnFree && new ReadOnlySpan<byte>(p, 40).IndexOfAnyExcept((byte)0) >= 0) dirty++;
        }
        Console.Out.WriteLine($"samples {samples} inline {CheckedModeOptions.KfenceCountedAtBoot} dirty-after-free {dirty}");
        return ExitCodes.Ok;
    }
}

using Allocators.AspNetCore;
using Allocators.Physical;
using Allocators.Slab;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Allocators.Tests.Hosting;

/// <summary>services.AddAllocators: options from configuration and code, validation at startup, one system per host.</summary>
public sealed class AddAllocatorsTests
{
    /// <summary>A host with no default sources (no appsettings, no environment) whose configuration is <paramref name="settings"/>.</summary>
    internal static HostApplicationBuilder NewHostBuilder(Dictionary<string, string?> settings)
    {
        var builder = new HostApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Logging.ClearProviders();
        return builder;
    }

    private static Dictionary<string, string?> Section(params (string Key, string Value)[] values)
        => values.ToDictionary(v => $"{AllocatorsOptions.SectionName}:{v.Key}", v => (string?)v.Value);

    /// <summary>A host with the system's options bound from the section of <paramref name="settings"/>.</summary>
    private static IHost BuildHost(Dictionary<string, string?> settings)
    {
        var builder = NewHostBuilder(settings);
        builder.Services.AddAllocators(builder.Configuration.GetSection(AllocatorsOptions.SectionName));
        return builder.Build();
    }

    /// <summary>What starting a host with one configured value throws.</summary>
    private static async Task<T> StartupFailure<T>(string key, string value) where T : Exception
    {
        using IHost host = BuildHost(Section((key, value)));
        return await Assert.ThrowsAsync<T>(() => host.StartAsync());
    }

    [Fact]
    public void ConfigurationBindsEveryLayersOptions()
    {
        string backing = OperatingSystem.IsLinux() ? "MemFd" : "NativeMemory";
        using IHost host = BuildHost(Section(
            ("ArenaSizeMiB", "32"), ("Backing", backing), ("Nodes", "2"), ("PcpBatch", "8"), ("PcpHigh", "32"),
            ("MinFreeKbytes", "1024"), ("WatermarkScaleFactor", "20"), ("FreePageReportingDelay", "00:00:00.5"),
            ("StallWarningInterval", "00:00:02"), ("KmallocFlags", "RedZone, Poison"), ("KmallocSizeClasses", "Fine"),
            ("SerializedFrees", "true"), ("IdleTrimAfter", "00:00:30"), ("LowMemoryLimitMiB", "16"), ("ReadaheadPages", "64"),
            ("DirtyExpire", "00:00:10"), ("DirtyWritebackInterval", "00:00:01"), ("DirtyBackgroundRatio", "5"), ("DirtyRatio", "15"),
            ("Checks", "kfence.sample_interval=1000,kfence.num_objects=7")));

        MemorySystem sys = host.Services.GetRequiredService<MemorySystem>();
        MemorySystemOptions o = sys.Options;
        Assert.Equal(32L << 20, o.Physical.Size);
        Assert.Equal(Enum.Parse<ArenaBacking>(backing), o.Physical.Backing);
        Assert.Equal(2, o.Physical.Nodes);
        Assert.Equal(2, sys.Pages.NodeCount);
        Assert.Equal(8, o.PageAllocator.PcpBatch);
        Assert.Equal(32, o.PageAllocator.PcpHigh);
        Assert.Equal(1024, sys.Pages.MinFreeKbytes);
        Assert.Equal(20, o.PageAllocator.WatermarkScaleFactor);
        Assert.Equal(TimeSpan.FromMilliseconds(500), o.PageAllocator.FreePageReportingDelay);
        Assert.Equal(TimeSpan.FromSeconds(2), o.PageAllocator.StallWarningInterval);
        Assert.Equal(SlabFlags.RedZone | SlabFlags.Poison, o.Slab.KmallocFlags);
        Assert.All(sys.Slab.KmallocCaches, c => Assert.Equal(SlabFlags.RedZone | SlabFlags.Poison, c.Flags & SlabFlags.Debug));
        Assert.Equal(KmallocSizeClasses.Fine, o.Slab.KmallocSizeClasses);
        Assert.Contains(sys.Slab.KmallocCaches, c => c.Name == "kmalloc-640");
        Assert.True(o.Slab.SerializedFrees);
        Assert.Equal(TimeSpan.FromSeconds(30), sys.Trimmer!.IdleTime);
        Assert.Equal(16L << 20, o.Physical.LowMemoryLimit);
        Assert.True(sys.Pages.HasHighMem);
        Assert.Equal(64, o.PageCache.ReadaheadPages);
        Assert.Equal(TimeSpan.FromSeconds(10), o.PageCache.DirtyExpire);
        Assert.Equal(TimeSpan.FromSeconds(1), o.PageCache.DirtyWritebackInterval);
        Assert.Equal(5, o.PageCache.DirtyBackgroundRatio);
        Assert.Equal(15, o.PageCache.DirtyRatio);
        Assert.Equal(1000, o.Physical.Checks.KfenceSampleInterval);
        Assert.Equal(7, sys.Slab.Kfence!.Objects);
        Assert.Same(sys, host.Services.GetRequiredService<MemorySystem>());
    }

    [Fact]
    public void ASwapFileIsMadeAndTurnedOnAtStartup()
    {
        string dir = Directory.CreateTempSubdirectory("allocators-hosting-swap-").FullName;
        try
        {
            string path = Path.Combine(dir, "app.swap");
            using (IHost host = BuildHost(Section(("ArenaSizeMiB", "16"), ("SwapFile", path), ("SwapFileSizeMiB", "8"), ("SwapPriority", "5"))))
            {
                MemorySystem sys = host.Services.GetRequiredService<MemorySystem>();
                Assert.Contains(path, sys.ProcSwaps());
                Assert.Equal((8L << 20) / 1024 - 4, sys.MeminfoItems().Single(i => i.Name == "SwapTotal").Kb);
            }
            Assert.True(File.Exists(path)); // made once, kept for the next start
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void WithNothingConfiguredTheSystemHasTheCoreDefaults()
    {
        using IHost host = BuildHost(new());
        AllocatorsOptions bound = host.Services.GetRequiredService<IOptions<AllocatorsOptions>>().Value;
        MemorySystemOptions expected = new(), actual = bound.ToMemorySystemOptions();
        Assert.Equivalent(expected.Physical, actual.Physical);
        Assert.Equivalent(expected.PageAllocator, actual.PageAllocator);
        Assert.Equivalent(expected.Slab, actual.Slab);
        Assert.Null(actual.IdleTrimAfter);
    }

    [Fact]
    public void CodeConfigurationRunsAfterBinding()
    {
        var builder = NewHostBuilder(Section(("ArenaSizeMiB", "32"), ("Nodes", "2")));
        builder.Services.AddAllocators(builder.Configuration.GetSection(AllocatorsOptions.SectionName), o => o.Nodes = 1);
        builder.Services.AddAllocators(o => o.ArenaSizeMiB *= 2);
        using IHost host = builder.Build();
        MemorySystem sys = host.Services.GetRequiredService<MemorySystem>();
        Assert.Equal(64L << 20, sys.Options.Physical.Size);
        Assert.Equal(1, sys.Options.Physical.Nodes);
    }

    [Theory]
    [InlineData("ArenaSizeMiB", "10", "Allocators:ArenaSizeMiB: Size must be a positive multiple of 4 MiB")]
    [InlineData("ArenaSizeMiB", "-4", "Allocators:ArenaSizeMiB: Size must be a positive multiple of 4 MiB")]
    [InlineData("Nodes", "9", "Allocators:Nodes: Nodes must be 1..8, was 9.")]
    [InlineData("PcpBatch", "0", "Allocators:PcpBatch: PcpBatch must be 1..1024, was 0.")]
    [InlineData("PcpHigh", "100000", "Allocators:PcpHigh: PcpHigh must be PcpBatch (16)..65536, was 100000.")]
    [InlineData("WatermarkScaleFactor", "0", "Allocators:WatermarkScaleFactor: WatermarkScaleFactor must be 1..3000, was 0.")]
    [InlineData("MinFreeKbytes", "-1", "Allocators:MinFreeKbytes: MinFreeKbytes must not be negative")]
    [InlineData("StallWarningInterval", "00:00:00", "Allocators:StallWarningInterval: StallWarningInterval must be positive")]
    [InlineData("IdleTrimAfter", "-00:00:01", "Allocators:IdleTrimAfter: IdleTrimAfter must be positive")]
    [InlineData("LowMemoryLimitMiB", "-4", "Allocators:LowMemoryLimitMiB: LowMemoryLimit must be a positive multiple of 4 MiB")]
    [InlineData("LowMemoryLimitMiB", "10", "Allocators:LowMemoryLimitMiB: LowMemoryLimit must be a positive multiple of 4 MiB")]
    [InlineData("KmallocSizeClasses", "7", "Allocators:KmallocSizeClasses: KmallocSizeClasses must be one of Kernel, Fine, was 7.")]
    public async Task ABadValueStopsTheHostAtStartupNamingTheKey(string key, string value, string expected)
    {
        var e = await StartupFailure<OptionsValidationException>(key, value);
        Assert.Contains(expected, e.Message);
        Assert.Equal(typeof(AllocatorsOptions), e.OptionsType);
    }

    [Fact]
    public void ALowMemoryLimitOfZeroKeepsAllMemoryLowWhateverTheBootParameterSays()
    {
        // The host's way to override ALLOCATORS_HIGHMEM (highmem=0): however the suite runs, no HighMem zone.
        using IHost host = BuildHost(Section(("ArenaSizeMiB", "64"), ("LowMemoryLimitMiB", "0")));
        MemorySystem sys = host.Services.GetRequiredService<MemorySystem>();
        Assert.Equal(PhysicalMemoryOptions.AllMemoryLow, sys.Options.Physical.LowMemoryLimit);
        Assert.False(sys.Pages.HasHighMem);
        Assert.DoesNotContain(sys.MeminfoItems(), item => item.Name == "HighTotal");
    }

    [Theory]
    [InlineData("ArenaSizeMb", "64", "ArenaSizeMb")]
    [InlineData("Backing", "Floppy", "Allocators:Backing")]
    [InlineData("SerializedFrees", "maybe", "Allocators:SerializedFrees")]
    public async Task AnUnknownKeyOrUnconvertibleValueStopsTheHostAtStartup(string key, string value, string expected)
        => Assert.Contains(expected, (await StartupFailure<InvalidOperationException>(key, value)).Message);

    [Fact]
    public async Task TheHostDisposesTheSystem()
    {
        var builder = NewHostBuilder(new());
        builder.Services.AddAllocators(o => o.ArenaSizeMiB = 16);
        MemorySystem sys;
        using (IHost host = builder.Build())
        {
            await host.StartAsync();
            sys = host.Services.GetRequiredService<MemorySystem>();
            Assert.False(sys.IsDisposed);
            await host.StopAsync();
            Assert.False(sys.IsDisposed);
        }
        Assert.True(sys.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => sys.Slab.CreateCache("late", 64));
    }

    [Fact]
    public async Task KestrelRentsFromTheRegisteredSystem()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Services.AddAllocators(o => o.ArenaSizeMiB = 64).AddAllocatorsMemoryPool();
        await using WebApplication app = builder.Build();
        app.MapPost("/echo", async (HttpContext ctx) =>
        {
            using var body = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(body);
            await ctx.Response.Body.WriteAsync(body.ToArray());
        });
        await app.StartAsync();
        try
        {
            using var client = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };
            byte[] payload = new byte[70_000];
            new Random(3).NextBytes(payload);
            using var response = await client.PostAsync("/echo", new ByteArrayContent(payload));
            response.EnsureSuccessStatusCode();
            Assert.Equal(payload, await response.Content.ReadAsByteArrayAsync());

            MemorySystem sys = app.Services.GetRequiredService<MemorySystem>();
            Assert.Equal(64L << 20, sys.Options.Physical.Size);
            var factory = app.Services.GetRequiredService<NativeMemoryPoolFactory>();
            Assert.NotEmpty(factory.Pools);
            Assert.All(factory.Pools, p => Assert.Same(sys.Pages, p.Pages));
            Assert.True(factory.Pools.Sum(p => p.Statistics().TotalRents) > 0, "Kestrel did not rent from the native pool");
        }
        finally
        {
            await app.StopAsync();
        }
    }
}

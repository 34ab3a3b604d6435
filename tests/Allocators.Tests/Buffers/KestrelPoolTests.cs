using System.Net;
using System.Net.Sockets;
using Allocators.AspNetCore;
using Allocators.Buffers;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Allocators.Tests.Buffers;

public class KestrelPoolTests
{
    private static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>A minimal app on 127.0.0.1 whose Kestrel rents from a system of <paramref name="arenaMiB"/>; POST /echo returns the body.</summary>
    private static async Task<(WebApplication App, int Port)> StartEchoServer(int arenaMiB, NativeMemoryPoolOptions? options)
    {
        int port = FreePort();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://127.0.0.1:{port}");
        builder.Services.AddAllocators(o => o.ArenaSizeMiB = arenaMiB).AddAllocatorsMemoryPool(options);
        var app = builder.Build();
        app.MapPost("/echo", async (HttpContext ctx) =>
        {
            using var body = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(body);
            ctx.Response.ContentType = "application/octet-stream";
            await ctx.Response.Body.WriteAsync(body.ToArray());
        });
        await app.StartAsync();
        return (app, port);
    }

    [Fact]
    public async Task KestrelServesRequestsFromTheNativePool()
    {
        var (app, port) = await StartEchoServer(arenaMiB: 128, options: null);
        await using var _ = app;
        try
        {
            var factory = app.Services.GetRequiredService<NativeMemoryPoolFactory>();
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
            var rnd = new Random(5);
            foreach (int size in new[] { 0, 1, 100, 4096, 5000, 65536, 1 << 20 })
            {
                var payload = new byte[size];
                rnd.NextBytes(payload);
                using var response = await client.PostAsync("/echo", new ByteArrayContent(payload));
                response.EnsureSuccessStatusCode();
                Assert.Equal(payload, await response.Content.ReadAsByteArrayAsync());
            }
            Assert.NotEmpty(factory.Pools);
            Assert.True(factory.Pools.Sum(p => p.Statistics().TotalRents) > 0, "Kestrel did not rent from the native pool");
        }
        finally
        {
            await app.StopAsync();
        }
    }

    /// <summary>
    /// A bounded load: 16 concurrent clients, keep-alive, 40 requests each with bodies from 0 to 256 KiB, against a pool
    /// with debug checks (double return and use after return throw). Every response must echo its body, and once the
    /// server stops, every buffer Kestrel rented has come back.
    /// </summary>
    [Fact]
    public async Task ConcurrentLoadReturnsEveryBuffer()
    {
        var (app, port) = await StartEchoServer(arenaMiB: 256, new NativeMemoryPoolOptions { DebugChecks = true });
        var factory = app.Services.GetRequiredService<NativeMemoryPoolFactory>();
        int[] sizes = [0, 17, 1000, 4095, 4097, 30_000, 100_000, 262_144];
        long requests = 0;
        try
        {
            var clients = Enumerable.Range(0, 16).Select(c => Task.Run(async () =>
            {
                using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
                var rnd = new Random(c);
                for (int i = 0; i < 40; i++)
                {
                    var payload = new byte[sizes[rnd.Next(sizes.Length)]];
                    rnd.NextBytes(payload);
                    using var response = await client.PostAsync("/echo", new ByteArrayContent(payload));
                    response.EnsureSuccessStatusCode();
                    Assert.Equal(payload, await response.Content.ReadAsByteArrayAsync());
                    Interlocked.Increment(ref requests);
                }
            })).ToArray();
            await Task.WhenAll(clients);
            Assert.Equal(640, requests);
            Assert.True(factory.Pools.Sum(p => p.Statistics().TotalRents) >= 640, "Kestrel did not rent from the native pool");
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
        Assert.All(factory.Pools, p =>
        {
            Assert.Equal(0, p.Failures);
            Assert.Equal(0, p.RentedBuffers);
            Assert.Equal(p.Statistics().TotalRents, p.Statistics().TotalReturns);
        });
    }
}

using System.Net;
using System.Net.Sockets;
using Allocators.AspNetCore;
using Allocators.Physical;
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

    [Fact]
    public async Task KestrelServesRequestsFromTheNativePool()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 128L << 20 } });
        int port = FreePort();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://127.0.0.1:{port}");
        builder.Services.AddAllocatorsMemoryPool(sys);
        await using var app = builder.Build();
        app.MapPost("/echo", async (HttpContext ctx) =>
        {
            using var body = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(body);
            ctx.Response.ContentType = "application/octet-stream";
            await ctx.Response.Body.WriteAsync(body.ToArray());
        });
        await app.StartAsync();
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
            Assert.True(factory.Pools.Sum(p => p.TotalRents) > 0, "Kestrel did not rent from the native pool");
        }
        finally
        {
            await app.StopAsync();
        }
    }
}

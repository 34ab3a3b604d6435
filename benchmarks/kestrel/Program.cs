using System.Buffers;
using System.IO.Pipelines;
using Allocators;
using Allocators.AspNetCore;
using Allocators.Buffers;

// A minimal Kestrel app for benchmarks/kestrel/run.sh: the same endpoints with Kestrel's own memory pool
// (--pool kestrel) or with Allocators' (--pool allocators). Web SDK defaults (server GC), logging off.
//   GET /1k, GET /64k     fixed responses of 1 KiB and 64 KiB, written through the response pipe
//   POST /echo           the request body copied back through the pipes
//   GET /stats           RSS, peak RSS and the pools' counters, one line of key=value
string pool = "kestrel";
int port = 5080;
for (int i = 0; i < args.Length - 1; i++)
{
    if (args[i] == "--pool") pool = args[i + 1];
    if (args[i] == "--port") port = int.Parse(args[i + 1]);
}

var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.UseUrls($"http://127.0.0.1:{port}");
if (pool == "allocators")
{
    builder.Services.AddAllocators().AddAllocatorsMemoryPool(); // the default 256 MiB arena, disposed with the host
}
else if (pool != "kestrel")
{
    Console.Error.WriteLine($"unknown pool '{pool}' (kestrel or allocators)");
    return 2;
}

var app = builder.Build();
byte[] small = new byte[1024];
byte[] large = new byte[64 * 1024];
Array.Fill(small, (byte)'a');
Array.Fill(large, (byte)'b');

app.MapGet("/1k", (HttpContext ctx) => Write(ctx, small));
app.MapGet("/64k", (HttpContext ctx) => Write(ctx, large));
app.MapPost("/echo", async (HttpContext ctx) =>
{
    ctx.Response.ContentType = "application/octet-stream";
    if (ctx.Request.ContentLength is long length) ctx.Response.ContentLength = length;
    await ctx.Request.BodyReader.CopyToAsync(ctx.Response.BodyWriter);
});
app.MapGet("/stats", () =>
{
    string status = File.ReadAllText("/proc/self/status");
    long Kb(string key)
    {
        int at = status.IndexOf(key + ":", StringComparison.Ordinal);
        return at < 0 ? -1 : long.Parse(status[(at + key.Length + 1)..status.IndexOf('\n', at)].Trim().Split(' ')[0]);
    }
    string pools = "";
    if (app.Services.GetService<NativeMemoryPoolFactory>() is { } factory)
    {
        foreach (NativeMemoryPool p in factory.Pools)
            pools += $" rented={p.RentedBytes} pooled={p.PooledBytes} failures={p.Failures}";
    }
    return Results.Text($"rss_kb={Kb("VmRSS")} hwm_kb={Kb("VmHWM")} gc_heap={GC.GetTotalMemory(false)} committed={GC.GetGCMemoryInfo().TotalCommittedBytes}{pools}\n");
});

await app.RunAsync();
return 0;

static Task Write(HttpContext ctx, byte[] body)
{
    ctx.Response.ContentType = "application/octet-stream";
    ctx.Response.ContentLength = body.Length;
    return ctx.Response.BodyWriter.WriteAsync(body).AsTask();
}

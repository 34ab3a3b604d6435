using System.Globalization;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>
/// Watches one owner object under <see cref="SlabAllocatorOptions.TrackOwnerLeaks"/>: records where it was allocated,
/// and when the GC finds the owner (and with it this tracker) unreachable before <see cref="Disarm"/>, reports it
/// through <see cref="SlabAllocator.CorruptionDetected"/> in kmemleak's words. A separate object, so that the owners
/// themselves carry no finalizer when tracking is off.
/// </summary>
internal sealed class OwnerLeakTracker
{
    private readonly SlabAllocator _slab;
    private readonly object _owner;
    private readonly string _cache;
    private readonly int _site;

    /// <summary>Tracks <paramref name="owner"/>, whose memory comes from the cache named <paramref name="cache"/>; captures the caller's site.</summary>
    public OwnerLeakTracker(SlabAllocator slab, object owner, string cache)
    {
        _slab = slab;
        _owner = owner;
        _cache = cache;
        _site = slab.CallSites.Capture();
    }

    /// <summary>The allocation site, e.g. <c>Server.HandleRequest+0x1c</c>.</summary>
    public string Site => _slab.CallSites.Name(_site);

    /// <summary>The owner was disposed: nothing to report.</summary>
    public void Disarm() => GC.SuppressFinalize(this);

    ~OwnerLeakTracker()
    {
        // The owner is unreachable but not collected before this finalizer is done, so its fields are intact. Its
        // memory stays allocated: a span taken from it (which does not keep the owner alive) may still be in use.
        try
        {
            (nuint address, string what) = _owner switch
            {
                SlabMemoryOwner o => (o.Address, $"{o.Length} bytes, {nameof(SlabMemoryOwner)}"),
                NativeBufferWriter w => (w.FirstSegmentAddress, $"{w.WrittenCount} bytes written, {w.SegmentCount} segment(s), {nameof(NativeBufferWriter)}"),
                _ => ((nuint)0, _owner.GetType().Name),
            };
            string text = string.Create(CultureInfo.InvariantCulture,
                $"BUG {_cache}: Owner dropped without Dispose\nunreferenced object 0x{address:x} ({what})\n  allocated in {Site}\n  its memory stays allocated\n");
            _slab.OnReport(new SlabReport(_cache, "Owner dropped without Dispose", address, text));
        }
        catch
        {
            // An exception escaping a finalizer ends the process; a failing report handler must not.
        }
    }
}

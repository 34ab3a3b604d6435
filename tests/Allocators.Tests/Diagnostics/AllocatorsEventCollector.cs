using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using Allocators.Common;
using Allocators.Diagnostics;

namespace Allocators.Tests.Diagnostics;

/// <summary>An in-process session of the <c>Allocators</c> event source, keeping what it is sent.</summary>
internal sealed class AllocatorsEventCollector : EventListener
{
    private readonly ConcurrentQueue<EventWrittenEventArgs> _events = new();

    /// <summary>Opens the session for events of <paramref name="level"/> and above.</summary>
    public AllocatorsEventCollector(EventLevel level = EventLevel.Verbose) => EnableEvents(AllocatorsEventSource.Log, level);

    protected override void OnEventWritten(EventWrittenEventArgs e) => _events.Enqueue(e);

    /// <summary>Every event written to the session.</summary>
    public IReadOnlyCollection<EventWrittenEventArgs> All => _events;

    /// <summary>The events about system <paramref name="systemId"/> with id <paramref name="eventId"/> (other tests' systems report too).</summary>
    public List<EventWrittenEventArgs> Of(int systemId, int eventId)
        => _events.Where(e => e.EventId == eventId && Payload<int>(e, "systemId") == systemId).ToList();

    public static T Payload<T>(EventWrittenEventArgs e, string name) => (T)e.Payload![e.PayloadNames!.IndexOf(name)]!;
}

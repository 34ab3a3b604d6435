using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Allocators.Tests.Hosting;

/// <summary>One entry a <see cref="TestLoggerProvider"/> was given.</summary>
internal sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message);

/// <summary>Keeps every entry the logger factory lets through its filters (the factory applies the levels).</summary>
internal sealed class TestLoggerProvider : ILoggerProvider
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    public IReadOnlyCollection<LogEntry> Entries => _entries;

    /// <summary>The entries of categories under <c>Allocators</c>.</summary>
    public List<LogEntry> Allocators => _entries.Where(e => e.Category.StartsWith("Allocators.", StringComparison.Ordinal)).ToList();

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _entries);

    public void Dispose() { }

    private sealed class Logger(string category, ConcurrentQueue<LogEntry> entries) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => entries.Enqueue(new LogEntry(category, logLevel, eventId, formatter(state, exception)));
    }
}

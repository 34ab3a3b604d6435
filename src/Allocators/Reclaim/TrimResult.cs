namespace Allocators.Reclaim;

/// <summary>One trim of an <see cref="IdleTrimmer"/> (<see cref="IdleTrimmer.Trimmed"/>).</summary>
/// <param name="PagesReleased">Pages given back to the OS.</param>
/// <param name="Idle">True when the trimmer found the system idle; false for <see cref="IdleTrimmer.TrimNow"/>.</param>
/// <param name="Elapsed">How long the trim took.</param>
public readonly record struct TrimResult(long PagesReleased, bool Idle, TimeSpan Elapsed);

namespace Allocators.Cli;

/// <summary>The process exit codes of <c>allocators</c>.</summary>
internal static class ExitCodes
{
    /// <summary>Success: the command ran and every check passed.</summary>
    public const int Ok = 0;

    /// <summary>An audit or verification failed (objects unaccounted for, free lists changed, corruption found).</summary>
    public const int AuditFailed = 1;

    /// <summary>Bad command line: unknown command or option, missing or invalid value.</summary>
    public const int UsageError = 2;

    /// <summary>
    /// The inspection target does not exist (including a pid that is not a process id), cannot be read (a dump that is
    /// not a whole core file), or does not use a compatible library version.
    /// </summary>
    public const int TargetError = 3;

    /// <summary>An unexpected internal error.</summary>
    public const int InternalError = 4;
}

using Allocators.Cli.Inspection;
using Allocators.Cli.Output;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli;

/// <summary>Turns exceptions into messages and the documented exit codes.</summary>
internal static class CliErrors
{
    public static int Handle(Exception exception, string[] args)
    {
        int code = exception switch
        {
            CommandParseException or CommandRuntimeException => ExitCodes.UsageError,
            TargetException => ExitCodes.TargetError,
            _ => ExitCodes.InternalError,
        };
        string message = code == ExitCodes.InternalError ? exception.ToString() : exception.Message;
        if (args.Contains("--json") && code != ExitCodes.UsageError)
        {
            JsonOutput.Write(new ErrorReport(exception.Message, code), CliJsonContext.Default.ErrorReport);
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        if (Console.IsErrorRedirected) console.Profile.Width = 240;
        string prefix = code switch
        {
            ExitCodes.UsageError => "usage error",
            ExitCodes.TargetError => "target error",
            _ => "internal error",
        };
        console.MarkupLineInterpolated($"[red]{prefix}:[/] {message}");
        if (code == ExitCodes.UsageError) console.WriteLine("Run 'allocators --help' or 'allocators <command> --help' for usage.");
        return code;
    }
}

using System.Net;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using PhrFhir.Storage;

namespace PhrFhir.Server.Rest;

/// <summary>
/// The one place errors become responses: every 4xx/5xx body is an OperationOutcome. A
/// <see cref="FhirError"/> says what the client did wrong; a database that cannot be reached is a 503
/// with Retry-After (the embedded PostgreSQL is being restarted, or the configured one is down);
/// anything else is our fault and is answered with a 500 that says so without leaking the exception.
/// Logging follows the same split: an expected refusal (4xx) is a debug line without a stack, an
/// unreachable database a warning, our own fault (500) one error line with its stack.
/// </summary>
public static partial class ErrorHandling
{
    /// <summary>Seconds a client waits before retrying while the database is unreachable (RFC 9110 §10.2.3).</summary>
    public const int RetryAfterSeconds = 5;

    public static OperationOutcome ToOutcome(FhirError e)
    {
        var oo = FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error, e.Code, e.Message, e.Expression);
        if (e.DetailCode is not null) oo.Issue[0].Details = new CodeableConcept { Text = e.DetailCode };
        oo.Issue.AddRange(e.MoreIssues);
        return oo;
    }

    public static void Use(WebApplication app)
    {
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("PhrFhir.Errors");
        // Our own middleware rather than UseExceptionHandler: that one logs every exception it sees as
        // "An unhandled exception has occurred" at error level with a stack, refusals included.
        app.Use(async (ctx, next) =>
        {
            try
            {
                await next(ctx);
            }
            catch (Exception error) when (!ctx.Response.HasStarted)
            {
                var (status, outcome) = Translate(error, ctx, log);
                ctx.Response.Clear(); // headers set before the failure (ETag, Location) no longer apply
                if (status == 503) ctx.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (error is FhirError { RetryAfterSeconds: { } wait }) ctx.Response.Headers.RetryAfter = wait.ToString(System.Globalization.CultureInfo.InvariantCulture);
                await WriteAsync(ctx, status, outcome);
            }
            catch (Exception error)
            {
                // Part of the answer is already sent: nothing can be said to the client any more.
                if (error is not OperationCanceledException) LogFailure(log, ctx.Request.Method, ctx.Response.StatusCode, error);
                throw;
            }
        });
        // Routing misses and bad methods become OperationOutcomes too.
        app.UseStatusCodePages(async context =>
        {
            var ctx = context.HttpContext;
            if (ctx.Response.HasStarted || ctx.Response.ContentLength > 0) return;
            var status = ctx.Response.StatusCode;
            var text = status switch
            {
                404 => $"No FHIR endpoint at {ctx.Request.Method} {ctx.Request.Path}. (エンドポイントがありません)",
                405 => $"{ctx.Request.Method} is not allowed on {ctx.Request.Path}. (このメソッドは使えません)",
                _ => $"HTTP {status}.",
            };
            await WriteAsync(ctx, status, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error,
                status == 404 ? OperationOutcome.IssueType.NotFound : OperationOutcome.IssueType.NotSupported, text));
        });
    }

    static (int, OperationOutcome) Translate(Exception error, HttpContext ctx, ILogger log)
    {
        switch (error)
        {
            case FhirError fe:
                LogRefusal(log, (int)fe.Status, fe.Code, fe.Message);
                return ((int)fe.Status, ToOutcome(fe));
            case BadHttpRequestException bad:
                LogRefusal(log, bad.StatusCode, OperationOutcome.IssueType.Invalid, bad.Message);
                return (bad.StatusCode, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error,
                    bad.StatusCode == 413 ? OperationOutcome.IssueType.TooCostly : OperationOutcome.IssueType.Invalid,
                    bad.StatusCode == 413 ? "The request body is too large. (本文が大きすぎます)" : "The HTTP request is malformed: " + bad.Message));
            case OperationCanceledException when ctx.RequestAborted.IsCancellationRequested:
                return (499, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Timeout, "The request was cancelled."));
            case var _ when FhirStore.IsUnavailable(error):
                LogUnavailable(log, ctx.Request.Method, error.GetType().Name, error.Message);
                return (503, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Transient,
                    $"The database cannot be reached at the moment; nothing was stored. Retry after {RetryAfterSeconds} seconds. (データベースに接続できません。しばらくしてから再試行してください)"));
            default:
                LogFailure(log, ctx.Request.Method, 500, error);
                return (500, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Fatal, OperationOutcome.IssueType.Exception,
                    "The server failed to process the request; nothing was stored. The error is logged on the server. (サーバー内部エラー)"));
        }
    }

    // Debug: a refusal is the client's business, and its text may quote what the client sent.
    [LoggerMessage(Level = LogLevel.Debug, Message = "Refused with {Status} ({Code}): {Reason}")]
    static partial void LogRefusal(ILogger log, int status, OperationOutcome.IssueType code, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Method} answered 503: the database is unreachable ({ExceptionType}: {Reason})")]
    static partial void LogUnavailable(ILogger log, string method, string exceptionType, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Method} failed with {Status}")]
    static partial void LogFailure(ILogger log, string method, int status, Exception exception);

    static async Task WriteAsync(HttpContext ctx, int status, OperationOutcome outcome)
    {
        WireFormat format;
        try { format = FhirFormat.Negotiate(ctx.Request); }
        catch (FhirError) { format = WireFormat.Json; }
        await FhirResponse.WriteBytes(ctx, status, FhirFormat.Mime(format), FhirFormat.Serialize(outcome, format));
    }
}

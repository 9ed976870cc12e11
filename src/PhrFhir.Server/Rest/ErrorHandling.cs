using System.Net;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using Microsoft.AspNetCore.Diagnostics;
using PhrFhir.Storage;

namespace PhrFhir.Server.Rest;

/// <summary>
/// The one place errors become responses: every 4xx/5xx body is an OperationOutcome. A
/// <see cref="FhirError"/> says what the client did wrong; anything else is our fault and is answered
/// with a 500 that says so without leaking the exception (it is logged instead).
/// </summary>
public static class ErrorHandling
{
    public static OperationOutcome ToOutcome(FhirError e)
    {
        var oo = FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error, e.Code, e.Message, e.Expression);
        if (e.DetailCode is not null) oo.Issue[0].Details = new CodeableConcept { Text = e.DetailCode };
        oo.Issue.AddRange(e.MoreIssues);
        return oo;
    }

    public static void Use(WebApplication app)
    {
        app.UseExceptionHandler(new ExceptionHandlerOptions
        {
            StatusCodeSelector = _ => 500,
            ExceptionHandler = async ctx =>
            {
                var error = ctx.Features.Get<IExceptionHandlerFeature>()?.Error;
                var (status, outcome) = Translate(error, app.Logger);
                ctx.Response.Headers.Remove("ETag"); // headers set before the failure no longer apply
                ctx.Response.Headers.Remove("Location");
                await WriteAsync(ctx, status, outcome);
            },
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

    static (int, OperationOutcome) Translate(Exception? error, ILogger logger)
    {
        switch (error)
        {
            case FhirError fe:
                return ((int)fe.Status, ToOutcome(fe));
            case BadHttpRequestException bad:
                return (bad.StatusCode, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error,
                    bad.StatusCode == 413 ? OperationOutcome.IssueType.TooCostly : OperationOutcome.IssueType.Invalid,
                    bad.StatusCode == 413 ? "The request body is too large. (本文が大きすぎます)" : "The HTTP request is malformed: " + bad.Message));
            case OperationCanceledException:
                return (499, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Timeout, "The request was cancelled."));
            default:
                logger.LogError(error, "Unhandled error");
                return (500, FhirResponse.Outcome(OperationOutcome.IssueSeverity.Fatal, OperationOutcome.IssueType.Exception,
                    "The server failed to process the request; nothing was stored. The error is logged on the server. (サーバー内部エラー)"));
        }
    }

    static async Task WriteAsync(HttpContext ctx, int status, OperationOutcome outcome)
    {
        WireFormat format;
        try { format = FhirFormat.Negotiate(ctx.Request); }
        catch (FhirError) { format = WireFormat.Json; }
        await FhirResponse.WriteBytes(ctx, status, FhirFormat.Mime(format), FhirFormat.Serialize(outcome, format));
    }
}

using System.Diagnostics;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Rest;

/// <summary>
/// One structured line per request (category <c>PhrFhir.Access</c>, level Information): method, route
/// template, status, duration and the client. Nothing about the person: the route is the template
/// (<c>/Patient/{id}</c>, never the id), the query string is left out (its values are names, birth dates,
/// identifiers), and the client is the registered client id, not the person signed in through it.
/// </summary>
public static partial class AccessLog
{
    public static void Use(WebApplication app)
    {
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("PhrFhir.Access");
        app.Use(async (ctx, next) =>
        {
            if (!log.IsEnabled(LogLevel.Information))
            {
                await next(ctx);
                return;
            }
            var started = Stopwatch.GetTimestamp();
            var escaped = false;
            try
            {
                await next(ctx);
            }
            catch
            {
                escaped = true; // the error middleware could not answer (the response had started)
                throw;
            }
            finally
            {
                LogRequest(log, ctx.Request.Method, Route(ctx), escaped ? 500 : ctx.Response.StatusCode,
                    Stopwatch.GetElapsedTime(started).TotalMilliseconds, ctx.User.FindFirst("client_id")?.Value ?? "-");
            }
        });
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Method} {Route} {Status} {DurationMs:0.0} ms client={ClientId}")]
    static partial void LogRequest(ILogger log, string method, string route, int status, double durationMs, string clientId);

    /// <summary>
    /// The matched route's template, with {type} filled in when it is a FHIR resource type (a type is not
    /// personal, and /{type}/{id} alone would not tell a Patient read from a Binary download).
    /// </summary>
    static string Route(HttpContext ctx)
    {
        if (ctx.GetEndpoint() is not RouteEndpoint { RoutePattern: var pattern }) return "(no route)";
        var text = pattern.RawText ?? "(unnamed route)";
        if (!text.StartsWith('/')) text = "/" + text;
        return ctx.GetRouteValue("type") is string type && ReferenceTarget.IsResourceType(type)
            ? text.Replace("{type}", type, StringComparison.Ordinal)
            : text;
    }
}

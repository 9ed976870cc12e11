using PhrFhir.Storage;

namespace PhrFhir.Server.Rest;

/// <summary>
/// Text of the request outside its body that the server keeps or looks up: the path (ids), the query
/// (search parameters: names and values), and the headers whose values are stored (X-Break-Glass goes
/// into AuditEvents, Content-Type becomes a Binary's contentType, If-None-Exist is a search). None may
/// hold a control character (<see cref="ControlCharacters"/>); bodies are checked where they are parsed.
/// </summary>
public static class RequestGuard
{
    static readonly string[] KeptHeaders = [Security.AccessPolicy.BreakGlassHeader, "Content-Type", "If-None-Exist"];

    public static void Use(WebApplication app) => app.Use((ctx, next) =>
    {
        var request = ctx.Request;
        // Kestrel refuses %00 in the path by itself, but decodes %1B and its kin.
        ControlCharacters.Refuse(request.Path.Value, "the URL path");
        foreach (var (name, values) in request.Query)
            foreach (var value in values)
                ControlCharacters.RefuseInParameter(name, value ?? "");
        foreach (var header in KeptHeaders)
            ControlCharacters.Refuse(request.Headers[header].ToString(), header);
        return next(ctx);
    });
}

using System.Net;
using System.Security.Claims;
using Hl7.Fhir.Model;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Security;

/// <summary>
/// What an endpoint does, declared where it is mapped: the interaction and the resource type (null:
/// the route's {type}). A null interaction means "any authenticated client; the handler checks each
/// resource it touches" (transaction Bundles, $validate of a posted resource).
/// </summary>
public sealed record FhirAccess(Interaction? Interaction, string? Type = null);

/// <summary>
/// Every request is authorised here, after routing and before its endpoint runs: an endpoint that is
/// neither anonymous nor declares its <see cref="FhirAccess"/> is refused (fail closed). A request
/// without a valid token gets 401; a token whose scopes or role do not cover the interaction gets 403,
/// each with an OperationOutcome that names what was missing and nothing else.
/// </summary>
public static class AccessControl
{
    public static void Use(WebApplication app)
    {
        app.UseRouting();
        // OpenIddict's server is an authentication *request* handler: UseAuthentication asks it on every request
        // whether the request is one of its endpoints (matching the URL against each) before it authenticates the
        // bearer token — with the handler lookups, 6 % of a read's server CPU samples at 8 clients. Its endpoints
        // all lie under AuthServerPaths (checked at start: AuthorizationServer.CheckEndpointPaths); every other
        // request only needs the default scheme (the bearer token) authenticated, as UseAuthentication would.
        app.UseWhen(ctx => IsAuthServerPath(ctx.Request.Path), branch => branch.UseAuthentication());
        // UseAuthentication marks the builder it is called on; a branch's mark does not reach the app, and WebApplication
        // would then put a UseAuthentication of its own in front of every request (WebApplicationBuilder, "auto-added
        // middleware"): the mark it looks for says authentication is in place.
        ((IApplicationBuilder)app).Properties["__AuthenticationMiddlewareSet"] = true;
        app.UseWhen(ctx => !IsAuthServerPath(ctx.Request.Path), branch => branch.Use(async (ctx, next) =>
        {
            if ((await ctx.AuthenticateAsync()).Principal is { } user) ctx.User = user;
            await next(ctx);
        }));
        app.Use(async (ctx, next) =>
        {
            var endpoint = ctx.GetEndpoint();
            // No endpoint (404) or routing's own 405 endpoint: nothing runs, the status pages answer.
            if (endpoint is null || endpoint.Metadata.GetMetadata<IAllowAnonymous>() is not null
                || endpoint.DisplayName == "405 HTTP Method Not Supported")
            {
                await next(ctx);
                return;
            }
            if (ctx.User.Identity?.IsAuthenticated != true)
            {
                ctx.Response.Headers.WWWAuthenticate = "Bearer";
                await FhirResponse.WriteBytes(ctx, 401, FhirFormat.JsonMime, FhirFormat.Serialize(FhirResponse.Outcome(
                    OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Login,
                    "A valid bearer token is required: get one from the token_endpoint in /.well-known/smart-configuration. (アクセストークンが必要です)"), WireFormat.Json));
                return;
            }
            var access = endpoint.Metadata.GetMetadata<FhirAccess>()
                ?? throw Denied("This endpoint declares no access rule, so it is closed. (アクセス規則のないエンドポイントです)");
            if (access.Interaction is { } interaction)
                Demand(ctx.User, interaction, access.Type ?? ctx.GetRouteValue("type") as string ?? "*");
            await next(ctx);
        });
    }

    /// <summary>Where the embedded authorisation server's endpoints (OpenIddict's) may lie: its own and the discovery paths.</summary>
    public static readonly string[] AuthServerPaths = ["/auth", "/.well-known"];

    internal static bool IsAuthServerPath(PathString path)
    {
        foreach (var prefix in AuthServerPaths) // a loop, not Any(): asked on every request
            if (path.StartsWithSegments(prefix, StringComparison.Ordinal)) return true;
        return false;
    }

    /// <summary>
    /// Refuses (403) unless the token's scopes allow this interaction on this type, in the context its
    /// role acts in: the person with patient/ scopes, everyone else with system/ (backend services) or
    /// user/ scopes. Which rows it then sees or changes is <see cref="AccessPolicy"/>'s. Also called per
    /// Bundle entry, before anything in the Bundle is read or written.
    /// </summary>
    public static void Demand(ClaimsPrincipal user, Interaction interaction, string type, bool inBundle = false)
    {
        var scopes = SmartScopes.Parse(user.FindFirst("scope")?.Value);
        var role = user.FindFirst(AuthorizationServer.RoleClaim)?.Value;
        var verb = interaction.ToString().ToLowerInvariant();
        string[] contexts = role switch
        {
            "person" => ["patient"],
            "operator" or "institution" or "physician" or "occupational-physician" or "employer" => ["system", "user"],
            _ => [],
        };
        if (contexts.Length == 0)
            throw Denied($"The token's role '{role}' is not one this server knows. (不明な役割です)");
        if (!scopes.Any(s => contexts.Contains(s.Context) && s.Allows(interaction, type)))
            throw Denied($"The token's scopes do not allow {verb} on {type} for role '{role}' (needs {string.Join(" or ", contexts.Select(c => c + "/"))} scopes). (スコープが不足しています: {type} の {verb})");
    }

    static FhirError Denied(string message) => new(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden, message);

    public static Interaction ForMethod(Bundle.HTTPVerb method, bool hasId) => method switch
    {
        Bundle.HTTPVerb.POST => Interaction.Create,
        Bundle.HTTPVerb.PUT or Bundle.HTTPVerb.PATCH => Interaction.Update,
        Bundle.HTTPVerb.DELETE => Interaction.Delete,
        _ => hasId ? Interaction.Read : Interaction.Search,
    };
}

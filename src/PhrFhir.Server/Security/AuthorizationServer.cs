using System.Security.Claims;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.EntityFrameworkCore;
using Microsoft.IdentityModel.Tokens;
using OpenIddict.Abstractions;
using OpenIddict.Server;
using OpenIddict.Server.AspNetCore;
using Microsoft.AspNetCore;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace PhrFhir.Server.Security;

/// <summary>
/// Authentication: access tokens are JWTs checked by JwtBearer. By default they come from the
/// embedded authorisation server (OpenIddict: SMART Backend Services client_credentials with a client
/// secret or private_key_jwt, clients from PHRFHIR_CLIENTS); with <c>Auth:Authority</c> configured, an
/// external IdP issues them instead and the embedded server is off.
/// </summary>
public static class AuthorizationServer
{
    public const string TokenPath = "/auth/token";
    public const string Audience = "phrfhir";
    public const string RoleClaim = "phr_role";
    public const string ActorClaim = "phr_actor";

    /// <summary>The issuer of the embedded server's tokens: configurable, else a fixed name (.invalid: it is no host).</summary>
    static string Issuer(IConfiguration config) => config["Auth:Issuer"] ?? "https://phrfhir.invalid/";

    public static void Add(WebApplicationBuilder builder)
    {
        var config = builder.Configuration;
        var authority = config["Auth:Authority"];
        var registry = ClientRegistry.Load(Environment.GetEnvironmentVariable("PHRFHIR_CLIENTS") ?? config["Auth:ClientsFile"]);
        builder.Services.AddSingleton(registry);

        var auth = builder.Services.AddAuthentication(JwtBearerDefaults.AuthenticationScheme);
        if (authority is not null)
        {
            // An external IdP: its discovery document and JWKS say how to check its tokens.
            auth.AddJwtBearer(o =>
            {
                o.Authority = authority;
                o.Audience = config["Auth:Audience"] ?? Audience;
                o.MapInboundClaims = false;
                o.RequireHttpsMetadata = !authority.StartsWith("http://127.0.0.1", StringComparison.Ordinal) && !authority.StartsWith("http://localhost", StringComparison.Ordinal);
            });
            return;
        }

        var signingKey = LoadOrCreateSigningKey(config["Auth:SigningKeyFile"] ?? Path.Combine("data", "auth", "signing-key.pem"));
        auth.AddJwtBearer(o =>
        {
            o.MapInboundClaims = false;
            o.TokenValidationParameters = new TokenValidationParameters
            {
                ValidIssuer = Issuer(config),
                ValidAudience = Audience,
                IssuerSigningKey = signingKey,
                ClockSkew = TimeSpan.FromSeconds(30),
            };
        });

        builder.Services.AddDbContext<DbContext>(o =>
        {
            o.UseInMemoryDatabase("phrfhir-openiddict"); // clients are re-registered from PHRFHIR_CLIENTS at every start
            o.UseOpenIddict();
        });
        builder.Services.AddOpenIddict()
            .AddCore(o => o.UseEntityFrameworkCore().UseDbContext<DbContext>())
            .AddServer(o =>
            {
                o.SetIssuer(new Uri(Issuer(config)));
                o.SetTokenEndpointUris(TokenPath.TrimStart('/'));
                o.AllowClientCredentialsFlow();
                o.AddSigningKey(signingKey);
                o.AddEphemeralEncryptionKey(); // required by OpenIddict; access tokens themselves stay signed JWTs (below)
                o.DisableAccessTokenEncryption();
                o.SetAccessTokenLifetime(TimeSpan.FromMinutes(config.GetValue("Auth:AccessTokenMinutes", 15)));
                o.DisableScopeValidation();   // SMART scopes are checked below against each client's registration
                o.IgnoreScopePermissions();
                o.DisableTokenStorage();      // self-contained JWTs: nothing to store or revoke per token
                // SMART Backend Services fixes the client assertion's typ header to "JWT"; OpenIddict 7 accepts
                // only the newer "client-authentication+jwt" (draft-ietf-oauth-rfc7523bis, openiddict-core#2473).
                // Accept both, so SMART-conformant institutions can authenticate; every other check stays.
                // Clients are registered in the background so the server listens sooner; a token request
                // that arrives before that has finished waits for it.
                o.AddEventHandler<OpenIddictServerEvents.ProcessRequestContext>(h => h
                    .UseInlineHandler(async context =>
                        await context.Transaction.GetHttpRequest()!.HttpContext.RequestServices.GetRequiredService<ClientSeeding>().Completed)
                    .SetOrder(int.MinValue)
                    .SetType(OpenIddictServerHandlerType.Custom));
                o.AddEventHandler<OpenIddictServerEvents.ValidateTokenContext>(h => h
                    .UseInlineHandler(context =>
                    {
                        if (context.TokenValidationParameters.ValidTypes is { } types && types.Contains("client-authentication+jwt"))
                        {
                            context.TokenValidationParameters.ValidTypes = [.. types, "JWT"];
                            // SMART: aud is the token endpoint URL the client was given (smart-configuration,
                            // built from the request), not the issuer-relative one OpenIddict derives.
                            if (context.BaseUri is { } baseUri)
                                context.ValidAudiences.Add(new Uri(baseUri, TokenPath.TrimStart('/')).AbsoluteUri);
                        }
                        return default;
                    })
                    .SetOrder(OpenIddictServerHandlers.Protection.ResolveTokenValidationParameters.Descriptor.Order + 1)
                    .SetType(OpenIddictServerHandlerType.Custom));
                // A generic "JWT" typ makes OpenIddict read the assertion as an identity token; when a client
                // assertion is what is being validated, say so before the principal's type is checked.
                o.AddEventHandler<OpenIddictServerEvents.ValidateTokenContext>(h => h
                    .UseInlineHandler(context =>
                    {
                        if (context.Principal is { } principal && context.ValidTokenTypes.Count == 1
                            && context.ValidTokenTypes.Contains(TokenTypeIdentifiers.Private.ClientAssertion)
                            && principal.GetTokenType() == TokenTypeIdentifiers.IdentityToken)
                            principal.SetTokenType(TokenTypeIdentifiers.Private.ClientAssertion);
                        return default;
                    })
                    .SetOrder(OpenIddictServerHandlers.Protection.ValidateIdentityModelToken.Descriptor.Order + 1)
                    .SetType(OpenIddictServerHandlerType.Custom));
                o.UseAspNetCore()
                    .EnableTokenEndpointPassthrough()
                    .DisableTransportSecurityRequirement(); // the embedded default listens on loopback HTTP; put TLS in front otherwise
            });
        builder.Services.AddSingleton<ClientSeeding>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ClientSeeding>());
    }

    /// <summary>The embedded server's RSA key, created once (by the runtime's RSA, PEM in a 0600 file) and reused so tokens survive restarts.</summary>
    static RsaSecurityKey LoadOrCreateSigningKey(string path)
    {
        var full = Path.GetFullPath(path);
        var rsa = RSA.Create();
        if (File.Exists(full)) rsa.ImportFromPem(File.ReadAllText(full));
        else
        {
            rsa.KeySize = 2048;
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, rsa.ExportPkcs8PrivateKeyPem());
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(full, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        return new RsaSecurityKey(rsa) { KeyId = Convert.ToHexString(SHA256.HashData(rsa.ExportRSAPublicKey()))[..16] };
    }

    public static void Map(WebApplication app, bool embedded)
    {
        app.MapGet("/.well-known/smart-configuration", (HttpContext ctx) => Results.Json(new Dictionary<string, object>
        {
            // SMART App Launch 2.x discovery (well-known.html)
            ["issuer"] = app.Configuration["Auth:Authority"] ?? Issuer(app.Configuration),
            ["token_endpoint"] = app.Configuration["Auth:TokenEndpoint"] ?? $"{ctx.Request.Scheme}://{ctx.Request.Host}{ctx.Request.PathBase}{TokenPath}",
            ["token_endpoint_auth_methods_supported"] = new[] { "client_secret_basic", "client_secret_post", "private_key_jwt" },
            ["token_endpoint_auth_signing_alg_values_supported"] = new[] { "RS256", "RS384", "ES256", "ES384" },
            ["grant_types_supported"] = new[] { "client_credentials" },
            ["scopes_supported"] = new[] { "system/*.cruds", "system/*.rs", "user/*.rs", "patient/*.rs" },
            ["capabilities"] = new[] { "client-confidential-symmetric", "client-confidential-asymmetric", "permission-v1", "permission-v2" },
        })).AllowAnonymous();
        if (embedded) app.MapPost(TokenPath, IssueTokenAsync).AllowAnonymous();
    }

    /// <summary>
    /// The token endpoint after OpenIddict has authenticated the client (secret or private_key_jwt):
    /// grant the requested scopes if the client's registration covers them, with its role and actor.
    /// </summary>
    static async Task<IResult> IssueTokenAsync(HttpContext ctx, ClientRegistry clients)
    {
        var request = ctx.GetOpenIddictServerRequest() ?? throw new InvalidOperationException("OpenIddict did not handle the token request.");
        if (!request.IsClientCredentialsGrantType())
            return Refuse(Errors.UnsupportedGrantType, "Only client_credentials is offered by the embedded server.");
        var client = clients.Find(request.ClientId ?? "");
        if (client is null) return Refuse(Errors.InvalidClient, "Unknown client.");
        var requested = string.IsNullOrWhiteSpace(request.Scope) ? client.Scopes : request.Scope;
        if (!SmartScopes.Within(requested, client.Scopes))
            return Refuse(Errors.InvalidScope, $"The requested scopes exceed those registered for {client.ClientId}.");

        var identity = new ClaimsIdentity(TokenValidationParameters.DefaultAuthenticationType, Claims.Name, Claims.Role);
        identity.SetClaim(Claims.Subject, client.ClientId);
        identity.SetClaim(Claims.ClientId, client.ClientId);
        identity.SetClaim(RoleClaim, client.Role);
        if (client.Actor is { } actor) identity.SetClaim(ActorClaim, actor.System + "|" + actor.Value);
        identity.SetScopes(requested.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        identity.SetResources(Audience);
        identity.SetDestinations(_ => [Destinations.AccessToken]);
        await Task.CompletedTask;
        return Results.SignIn(new ClaimsPrincipal(identity), properties: null, OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
    }

    static IResult Refuse(string error, string description) => Results.Forbid(
        new AuthenticationProperties(new Dictionary<string, string?>
        {
            [OpenIddictServerAspNetCoreConstants.Properties.Error] = error,
            [OpenIddictServerAspNetCoreConstants.Properties.ErrorDescription] = description,
        }),
        [OpenIddictServerAspNetCoreDefaults.AuthenticationScheme]);

    /// <summary>Registers every PHRFHIR_CLIENTS client with OpenIddict at start (secret hashed by OpenIddict, or its JWKS).</summary>
    sealed class ClientSeeding(IServiceProvider services, ClientRegistry clients, ILogger<ClientSeeding> log) : IHostedService
    {
        readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Completed => _done.Task;

        public Task StartAsync(CancellationToken ct)
        {
            _ = Task.Run(async () =>
            {
                try
                {
                    await SeedAsync(CancellationToken.None);
                    _done.TrySetResult();
                }
                catch (Exception e)
                {
                    log.LogError(e, "Registering the clients of PHRFHIR_CLIENTS failed: no token can be issued");
                    _done.TrySetException(e);
                }
            }, CancellationToken.None);
            return Task.CompletedTask;
        }

        async Task SeedAsync(CancellationToken ct)
        {
            await using var scope = services.CreateAsyncScope();
            var manager = scope.ServiceProvider.GetRequiredService<IOpenIddictApplicationManager>();
            foreach (var c in clients.All)
            {
                if (await manager.FindByClientIdAsync(c.ClientId, ct) is not null) continue;
                var descriptor = new OpenIddictApplicationDescriptor
                {
                    ClientId = c.ClientId,
                    ClientSecret = c.ClientSecret,
                    ClientType = ClientTypes.Confidential,
                    Permissions = { Permissions.Endpoints.Token, Permissions.GrantTypes.ClientCredentials },
                };
                if (c.Jwks is { } jwks) descriptor.JsonWebKeySet = JsonWebKeySet.Create(jwks.GetRawText());
                await manager.CreateAsync(descriptor, ct);
            }
        }

        public Task StopAsync(CancellationToken ct) => Task.CompletedTask;
    }
}

using System.Security.Claims;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.IdentityModel.Tokens;
using OpenIddict.Abstractions;
using OpenIddict.Server;
using OpenIddict.Server.AspNetCore;
using Microsoft.AspNetCore;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
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

    /// <summary>
    /// The issuer of the embedded server's tokens when fixed by <c>Auth:Issuer</c> (a server behind a proxy that
    /// rewrites the host); null: the base URL the server is reached at, as SMART expects (smart-configuration's
    /// <c>issuer</c> is the FHIR base), and OpenIddict infers it from each request.
    /// </summary>
    static string? Issuer(IConfiguration config) => config["Auth:Issuer"];

    /// <summary>The issuer as OpenIddict writes it when inferred from the request: the base URL with one trailing slash.</summary>
    static string RequestIssuer(HttpRequest request) => FhirResponse.BaseUrl(request).TrimEnd('/') + "/";

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

        var keys = AuthorizationKeys.Load(config);
        builder.Services.AddHttpContextAccessor();
        auth.AddJwtBearer();
        builder.Services.AddOptions<JwtBearerOptions>(JwtBearerDefaults.AuthenticationScheme).Configure<IHttpContextAccessor>((o, http) =>
        {
            o.MapInboundClaims = false;
            // Accepted tokens are remembered until they expire (RememberedTokens: the keys are fixed while the process runs).
            o.TokenHandlers.Clear();
            o.TokenHandlers.Add(new RememberedTokens { MapInboundClaims = false });
            var fixedIssuer = Issuer(config);
            o.TokenValidationParameters = new TokenValidationParameters
            {
                ValidIssuer = fixedIssuer,
                // Without a fixed issuer a token is valid only at the base URL it was issued at: a token obtained
                // from http://a/ is not accepted by the same process reached as http://b/.
                IssuerValidator = fixedIssuer is not null ? null : (issuer, _, _) =>
                    http.HttpContext is { } ctx && issuer == RequestIssuer(ctx.Request)
                        ? issuer
                        : throw new SecurityTokenInvalidIssuerException("The token was issued for another base URL.") { InvalidIssuer = issuer },
                ValidAudience = Audience,
                IssuerSigningKeys = keys.Verifying,
                ClockSkew = TimeSpan.FromSeconds(30),
            };
        });

        // Codes, refresh tokens and authorizations in PostgreSQL (Schema/008): shared by every process, kept across restarts.
        builder.Services.AddDbContext<AuthorizationStore>((sp, o) => AuthorizationStore.Configure(o, sp.GetRequiredService<FhirStore>().DataSource));
        builder.Services.AddSingleton<SignInThrottle>();
        builder.Services.AddOpenIddict()
            .AddCore(o => o.UseEntityFrameworkCore().UseDbContext<AuthorizationStore>())
            .AddServer(o =>
            {
                if (Issuer(config) is { } issuer) o.SetIssuer(new Uri(issuer));
                o.SetTokenEndpointUris(TokenPath.TrimStart('/'));
                o.SetAuthorizationEndpointUris(PersonLogin.AuthorizePath.TrimStart('/'));
                o.AllowClientCredentialsFlow();
                // SMART App Launch for the person's apps: code + PKCE, S256 only (plain would let a stolen
                // code be redeemed by whoever saw the authorization request).
                o.AllowAuthorizationCodeFlow().RequireProofKeyForCodeExchange();
                o.Configure(options => options.CodeChallengeMethods.Remove(CodeChallengeMethods.Plain));
                o.AllowRefreshTokenFlow();
                // Persisted keys (AuthorizationKeys): codes and refresh tokens are encrypted with the encryption key, so
                // a key made afresh at each start would end every refresh token with the process.
                o.AddSigningKey(keys.Signing);
                o.AddEncryptionKey(keys.Encryption); // access tokens themselves stay signed JWTs, not encrypted (below)
                o.DisableAccessTokenEncryption();
                o.SetAccessTokenLifetime(TimeSpan.FromMinutes(config.GetValue("Auth:AccessTokenMinutes", 15)));
                o.DisableScopeValidation();   // SMART scopes are checked below against each client's registration
                o.IgnoreScopePermissions();
                // Codes and refresh tokens are stored (AuthorizationStore), so a code is redeemed once and a refresh
                // token can be revoked; access tokens stay self-contained JWTs and are not stored (below).
                o.AddEventHandler<OpenIddictServerEvents.GenerateTokenContext>(h => h
                    .UseInlineHandler(context =>
                    {
                        if (context.TokenType == TokenTypeHints.AccessToken) context.CreateTokenEntry = false;
                        return default;
                    })
                    .SetOrder(OpenIddictServerHandlers.Protection.CreateTokenEntry.Descriptor.Order - 1)
                    .SetType(OpenIddictServerHandlerType.Custom));
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
                        // Our own tokens: what a retired key (rotation, AuthorizationKeys) signed or encrypted is still read.
                        if (!context.ValidTokenTypes.Contains(TokenTypeIdentifiers.Private.ClientAssertion) && keys.Retired.Count > 0)
                        {
                            context.TokenValidationParameters.IssuerSigningKeys = [.. context.TokenValidationParameters.IssuerSigningKeys ?? [], .. keys.Retired];
                            context.TokenValidationParameters.TokenDecryptionKeys = [.. context.TokenValidationParameters.TokenDecryptionKeys ?? [], .. keys.Retired];
                        }
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
                // OpenIddict 7 refuses any TLS client certificate it was not configured to authenticate with
                // (ID2205). Our institutions pin theirs per client and bind tokens themselves
                // (CertificateBinding, checked in IssueTokenAsync), so its own check is replaced, not weakened.
                o.RemoveEventHandler(OpenIddictServerHandlers.ValidateClientCertificate.Descriptor);
                o.AddEventHandler<OpenIddictServerEvents.ProcessSignInContext>(h => h
                    .UseInlineHandler(context =>
                    {
                        var http = context.Transaction.GetHttpRequest()!.HttpContext;
                        if (context.AccessTokenPrincipal is { } principal && context.Request?.IsClientCredentialsGrantType() == true
                            && http.RequestServices.GetRequiredService<ClientRegistry>().Find(context.ClientId ?? "") is { CertificateThumbprints.Length: > 0 }
                            && http.Connection.ClientCertificate is { } certificate)
                        {
                            var cnf = CertificateBinding.Confirmation(certificate);
                            cnf.SetDestinations(Destinations.AccessToken);
                            ((ClaimsIdentity)principal.Identity!).AddClaim(cnf);
                        }
                        return default;
                    })
                    .SetOrder(OpenIddictServerHandlers.PrepareAccessTokenPrincipal.Descriptor.Order + 1)
                    .SetType(OpenIddictServerHandlerType.Custom));
                AcceptPublicRefreshWithoutClientId(o, registry);
                SignInThrottle.AddTo(o);
                o.UseAspNetCore()
                    .EnableTokenEndpointPassthrough()
                    .EnableAuthorizationEndpointPassthrough()
                    .DisableTransportSecurityRequirement(); // the embedded default listens on loopback HTTP; put TLS in front otherwise
            });
        builder.Services.AddSingleton<ClientSeeding>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ClientSeeding>());
        builder.Services.AddHostedService<TokenPruning>();
        AuthorizationKeys.AddDataProtection(builder);
        PersonLogin.AddServices(builder);
    }

    /// <summary>
    /// RFC 6749 §6 asks a public client for no client_id when it refreshes, and the most used SMART client
    /// library (fhirclient 2.x) sends none. OpenIddict then accepts the request as anonymous only so far:
    /// once the refresh token is validated, the client it was issued to is filled in as client_id when that
    /// client is a registered public app, before OpenIddict checks that the token was issued to the caller
    /// (ValidateAuthorizedParty) and the client's permissions. A confidential client's refresh token without the
    /// client's authentication stays refused (invalid_grant), and client_credentials and authorization_code
    /// requests still need their client_id (OpenIddict's ValidateClientIdParameter).
    /// </summary>
    static void AcceptPublicRefreshWithoutClientId(OpenIddictServerBuilder o, ClientRegistry registry)
    {
        o.AcceptAnonymousClients();
        o.AddEventHandler<OpenIddictServerEvents.ValidateTokenRequestContext>(h => h
            .UseInlineHandler(context =>
            {
                if (context.Request.IsRefreshTokenGrantType() && string.IsNullOrEmpty(context.Request.ClientId)
                    && string.IsNullOrEmpty(context.Request.ClientAssertion) && string.IsNullOrEmpty(context.Request.ClientSecret)
                    && context.RefreshTokenPrincipal?.GetPresenters() is [var presenter]
                    && registry.Find(presenter) is { ClientSecret: null, Jwks: null, SignsInPersons: true })
                    context.Request.ClientId = presenter;
                return default;
            })
            .SetOrder(OpenIddictServerHandlers.Exchange.ValidateAuthentication.Descriptor.Order + 1)
            .SetType(OpenIddictServerHandlerType.Custom));
    }

    /// <summary>
    /// OpenIddict is asked to handle a request only under AccessControl.AuthServerPaths (elsewhere only the bearer token
    /// is authenticated): an endpoint of it configured anywhere else would never answer, so the server refuses to start.
    /// </summary>
    public static void CheckEndpointPaths(OpenIddictServerOptions options)
    {
        var uris = typeof(OpenIddictServerOptions).GetProperties()
            .Where(p => p.Name.EndsWith("EndpointUris", StringComparison.Ordinal) && p.PropertyType == typeof(List<Uri>))
            .SelectMany(p => (List<Uri>)p.GetValue(options)!);
        foreach (var uri in uris)
        {
            var path = new PathString("/" + (uri.IsAbsoluteUri ? uri.AbsolutePath : uri.OriginalString).TrimStart('/'));
            if (!AccessControl.IsAuthServerPath(path))
                throw new InvalidOperationException(
                    $"The authorisation server's endpoint {uri} lies outside {string.Join(" and ", AccessControl.AuthServerPaths)}, where it would never be reached (AccessControl).");
        }
    }

    public static void Map(WebApplication app, bool embedded)
    {
        app.MapGet("/.well-known/smart-configuration", (HttpContext ctx) =>
        {
            var baseUrl = $"{ctx.Request.Scheme}://{ctx.Request.Host}{ctx.Request.PathBase}";
            var external = app.Configuration["Auth:Authority"] is not null;
            var document = new Dictionary<string, object>
            {
                // SMART App Launch 2.x discovery (well-known.html)
                ["issuer"] = app.Configuration["Auth:Authority"] ?? Issuer(app.Configuration) ?? RequestIssuer(ctx.Request),
                ["token_endpoint"] = app.Configuration["Auth:TokenEndpoint"] ?? baseUrl + TokenPath,
                ["token_endpoint_auth_methods_supported"] = new[] { "client_secret_basic", "client_secret_post", "private_key_jwt" },
                ["token_endpoint_auth_signing_alg_values_supported"] = new[] { "RS256", "RS384", "ES256", "ES384" },
                ["grant_types_supported"] = new[] { "client_credentials" },
                ["scopes_supported"] = new[] { "system/*.cruds", "system/*.rs", "user/*.rs", "patient/*.rs" },
                ["capabilities"] = new[] { "client-confidential-symmetric", "client-confidential-asymmetric", "permission-v1", "permission-v2" },
            };
            if (!external)
            {
                // The embedded server also signs in persons (PersonLogin): standalone launch with the patient context.
                document["authorization_endpoint"] = baseUrl + PersonLogin.AuthorizePath;
                document["grant_types_supported"] = new[] { "authorization_code", "client_credentials", "refresh_token" };
                document["response_types_supported"] = new[] { "code" };
                document["code_challenge_methods_supported"] = new[] { "S256" };
                document["scopes_supported"] = new[] { "system/*.cruds", "system/*.rs", "user/*.rs", "patient/*.rs", "openid", "fhirUser", "launch/patient", "offline_access" };
                document["capabilities"] = new[]
                {
                    "launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
                    "context-standalone-patient", "permission-offline", "permission-patient", "permission-v1", "permission-v2", "sso-openid-connect",
                };
            }
            return Results.Json(document);
        }).AllowAnonymous();
        if (!embedded) return;
        CheckEndpointPaths(app.Services.GetRequiredService<IOptions<OpenIddictServerOptions>>().Value);
        app.MapPost(TokenPath, IssueTokenAsync).AllowAnonymous();
        PersonLogin.Map(app);
    }

    /// <summary>
    /// The token endpoint after OpenIddict has authenticated the client (secret, private_key_jwt, or none
    /// for a public app) and, for a code, checked its redirect_uri and code_verifier: client_credentials
    /// grants the requested scopes if the client's registration covers them, with its role and actor; a
    /// code or refresh token grants the person's own token (<see cref="PersonTokenAsync"/>).
    /// </summary>
    static async Task<IResult> IssueTokenAsync(HttpContext ctx, ClientRegistry clients, FhirStore store)
    {
        var request = ctx.GetOpenIddictServerRequest();
        if (request is null) return Refuse(Errors.InvalidRequest, "Not a token request.");
        if (request.IsAuthorizationCodeGrantType() || request.IsRefreshTokenGrantType())
            return await PersonTokenAsync(ctx, clients, store, request);
        if (!request.IsClientCredentialsGrantType())
            return Refuse(Errors.UnsupportedGrantType, "The embedded server offers client_credentials, authorization_code and refresh_token.");
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
        // A person's token is bound to their Patient now, once (PersonCompartment.BindAsync).
        if (client.ParsedRole == PhrRole.Person && client.Actor is { } person
            && await PersonCompartment.BindAsync(store, clients, person, null, ctx.RequestAborted) is { } bound)
            identity.SetClaim(PersonCompartment.PatientClaim, bound);
        identity.SetScopes(requested.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        identity.SetResources(Audience);
        if (client.CertificateThumbprints.Length > 0)
        {
            // RFC 8705: this client authenticates its node with a registered certificate, and its token is bound to it.
            var certificate = ctx.Connection.ClientCertificate;
            if (certificate is null || !CertificateBinding.IsRegistered(certificate, client.CertificateThumbprints))
                return Refuse(Errors.InvalidClient, $"{client.ClientId} must present its registered client certificate over TLS.");
            // cnf itself is added to the access token by the ProcessSignInContext handler above: OpenIddict
            // drops a cnf claim found on the principal, as it reserves the name for its own binding.
        }
        identity.SetDestinations(_ => [Destinations.AccessToken]);
        SetAuditUser(ctx, client.ClientId, client.ClientId, authenticated: true);
        return Results.SignIn(new ClaimsPrincipal(identity), properties: null, OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
    }

    /// <summary>
    /// The person's token from a code or a refresh token: the same claims a person's client-credentials
    /// token has (role person, the actor of the *person who signed in*, the scopes granted at consent),
    /// re-read from the registration each time so a removed person gets nothing more. The response
    /// carries SMART's <c>patient</c> launch context; the id_token carries <c>fhirUser</c> when asked.
    /// </summary>
    static async Task<IResult> PersonTokenAsync(HttpContext ctx, ClientRegistry clients, FhirStore store, OpenIddictRequest request)
    {
        var result = await ctx.AuthenticateAsync(OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
        var username = result.Principal?.GetClaim(Claims.Subject);
        var person = username is null ? null : clients.FindPerson(username);
        var client = clients.Find(request.ClientId ?? "");
        if (person is null || client is null || !client.SignsInPersons)
            return Refuse(Errors.InvalidGrant, "The person or the app is no longer registered.");

        var scopes = PersonLogin.Granted(result.Principal!.GetScopes(), client.Scopes);
        var identity = new ClaimsIdentity(TokenValidationParameters.DefaultAuthenticationType, Claims.Name, Claims.Role);
        identity.SetClaim(Claims.Subject, person.Username);
        identity.SetClaim(Claims.ClientId, client.ClientId);
        identity.SetClaim(RoleClaim, "person");
        identity.SetClaim(ActorClaim, person.Actor.System + "|" + person.Actor.Value);
        identity.SetScopes(scopes);
        identity.SetResources(Audience);
        // Bound once: a refresh keeps the Patient the code was redeemed for (PersonCompartment.BindAsync).
        var patient = await PersonCompartment.BindAsync(store, clients, person.Actor, result.Principal!.GetClaim(PersonCompartment.PatientClaim), ctx.RequestAborted);
        if (patient is not null) identity.SetClaim(PersonCompartment.PatientClaim, patient);
        if (patient is not null && scopes.Contains("fhirUser"))
            identity.SetClaim("fhirUser", $"{ctx.Request.Scheme}://{ctx.Request.Host}{ctx.Request.PathBase}/Patient/{patient}");
        identity.SetDestinations(claim => claim.Type switch
        {
            Claims.Subject => [Destinations.AccessToken, Destinations.IdentityToken],
            "fhirUser" => [Destinations.IdentityToken],
            _ => [Destinations.AccessToken],
        });
        var properties = new AuthenticationProperties();
        if (patient is not null) properties.Parameters["patient"] = patient; // SMART launch context (context-standalone-patient)
        SetAuditUser(ctx, client.ClientId, person.Username, authenticated: true);
        return Results.SignIn(new ClaimsPrincipal(identity), properties, OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
    }

    /// <summary>
    /// Who the AuditTrail records for a login or token request (it reads HttpContext.User): the client
    /// and the person (or, for a refused login, the username as typed, in an unauthenticated identity).
    /// </summary>
    public static void SetAuditUser(HttpContext ctx, string? clientId, string subject, bool authenticated)
    {
        var identity = new ClaimsIdentity(authenticated ? "login" : null);
        if (clientId is not null) identity.AddClaim(new Claim(Claims.ClientId, clientId));
        identity.AddClaim(new Claim(Claims.Subject, subject));
        if (clientId is not null && ctx.RequestServices.GetRequiredService<ClientRegistry>().Find(clientId) is { } client)
            identity.AddClaim(new Claim(RoleClaim, client.Role));
        ctx.User = new ClaimsPrincipal(identity);
    }

    static IResult Refuse(string error, string description) => Results.Forbid(
        new AuthenticationProperties(new Dictionary<string, string?>
        {
            [OpenIddictServerAspNetCoreConstants.Properties.Error] = error,
            [OpenIddictServerAspNetCoreConstants.Properties.ErrorDescription] = description,
        }),
        [OpenIddictServerAspNetCoreDefaults.AuthenticationScheme]);

    /// <summary>
    /// Registers every PHRFHIR_CLIENTS client with OpenIddict at start (secret hashed by OpenIddict, or its JWKS):
    /// the stored registration is brought in line with the file (a changed secret, redirect URI or grant takes
    /// effect), and a client no longer in the file is removed with its authorizations and refresh tokens.
    /// </summary>
    sealed class ClientSeeding(IServiceProvider services, ClientRegistry clients, FhirStore store, ILogger<ClientSeeding> log) : IHostedService
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
            await using var oneAtATime = await AuthorizationStore.LockClientRegistrationAsync(store.Sessions, ct);
            foreach (var c in clients.All)
            {
                var descriptor = new OpenIddictApplicationDescriptor
                {
                    ClientId = c.ClientId,
                    ClientSecret = c.ClientSecret,
                    ClientType = c.ClientSecret is null && c.Jwks is null ? ClientTypes.Public : ClientTypes.Confidential,
                    Permissions = { Permissions.Endpoints.Token },
                };
                if (c.Jwks is { } jwks) descriptor.JsonWebKeySet = JsonWebKeySet.Create(jwks.GetRawText());
                if (c.SignsInPersons)
                {
                    // The refresh permission lets an app ask for offline_access without an error; a refresh token
                    // is issued only when offline_access is also among its registered scopes (PersonLogin.Granted).
                    descriptor.Permissions.UnionWith([Permissions.Endpoints.Authorization, Permissions.GrantTypes.AuthorizationCode,
                        Permissions.ResponseTypes.Code, Permissions.GrantTypes.RefreshToken]);
                    descriptor.Requirements.Add(Requirements.Features.ProofKeyForCodeExchange);
                    foreach (var uri in c.RedirectUris) descriptor.RedirectUris.Add(new Uri(uri)); // compared exactly by OpenIddict
                }
                else descriptor.Permissions.Add(Permissions.GrantTypes.ClientCredentials);
                if (await manager.FindByClientIdAsync(c.ClientId, ct) is { } registered) await manager.UpdateAsync(registered, descriptor, ct);
                else await manager.CreateAsync(descriptor, ct);
            }
            var removed = new List<object>();
            await foreach (var application in manager.ListAsync(count: null, offset: null, ct))
                if (clients.Find(await manager.GetClientIdAsync(application, ct) ?? "") is null) removed.Add(application);
            foreach (var application in removed) await manager.DeleteAsync(application, ct);
        }

        public Task StopAsync(CancellationToken ct) => Task.CompletedTask;
    }

    /// <summary>Removes redeemed or expired codes and refresh tokens (and their authorizations) from the store every hour.</summary>
    sealed class TokenPruning(IServiceProvider services, ILogger<TokenPruning> log) : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            using var timer = new PeriodicTimer(TimeSpan.FromHours(1));
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await using var scope = services.CreateAsyncScope();
                    var threshold = DateTimeOffset.UtcNow.AddHours(-1);
                    await scope.ServiceProvider.GetRequiredService<IOpenIddictTokenManager>().PruneAsync(threshold, stoppingToken);
                    await scope.ServiceProvider.GetRequiredService<IOpenIddictAuthorizationManager>().PruneAsync(threshold, stoppingToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    log.LogWarning(e, "Pruning expired authorization codes and refresh tokens failed; trying again in an hour");
                }
            }
        }
    }
}

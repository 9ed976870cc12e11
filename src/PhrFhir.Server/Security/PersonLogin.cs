using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Identity;
using OpenIddict.Abstractions;
using OpenIddict.Server.AspNetCore;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace PhrFhir.Server.Security;

/// <summary>
/// SMART App Launch standalone (authorization code + PKCE S256) for the person's app and portals: the
/// authorization endpoint shows a login page, then a consent page, both server-rendered (Japanese and
/// English, no external assets, antiforgery, CSP). The login is remembered by a short cookie limited to
/// <c>/auth</c>, so consent and later launches do not ask for the password again.
/// OpenIddict has already checked client_id, the exact redirect_uri, response_type and PKCE before
/// anything here runs; a request it refuses never reaches these handlers.
/// </summary>
public static class PersonLogin
{
    public const string AuthorizePath = "/auth/authorize";
    public const string LoginPath = "/auth/login";
    public const string Scheme = "PhrFhir.PersonLogin";

    // A hash to verify against when the username is unknown, so that an unknown user costs the same
    // PBKDF2 work as a wrong password: response time does not tell which usernames exist.
    static readonly string DummyHash = new PasswordHasher<PersonRegistration>().HashPassword(null!, "no such person");

    // Form fields of our own pages, which are not authorisation request parameters.
    static readonly HashSet<string> OwnFields = ["__RequestVerificationToken", "decision", "username", "password", "returnUrl"];

    public static void AddServices(WebApplicationBuilder builder)
    {
        builder.Services.AddAuthentication().AddCookie(Scheme, o =>
        {
            o.Cookie.Name = "phrfhir.login";
            o.Cookie.Path = "/auth";
            o.Cookie.HttpOnly = true;
            o.Cookie.SameSite = SameSiteMode.Lax; // the app's redirect back to /auth/authorize is a top-level GET
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest; // the embedded default is loopback HTTP
            o.ExpireTimeSpan = TimeSpan.FromMinutes(builder.Configuration.GetValue("Auth:LoginSessionMinutes", 30));
            o.SlidingExpiration = false;
        });
        // Login cookies and antiforgery tokens survive a restart: their Data Protection keys are persisted (AuthorizationKeys).
        builder.Services.AddAntiforgery(o =>
        {
            o.Cookie.Name = "phrfhir.antiforgery";
            o.Cookie.Path = "/auth";
            o.SuppressXFrameOptionsHeader = true; // set below with the CSP
        });
    }

    public static void Map(WebApplication app)
    {
        app.MapMethods(AuthorizePath, ["GET", "POST"], AuthorizeAsync).AllowAnonymous();
        app.MapPost(LoginPath, LoginAsync).AllowAnonymous().DisableAntiforgery(); // checked explicitly, to answer with our page
    }

    /// <summary>GET: login page or consent page. POST (the consent form): allow → code to the redirect_uri; deny → access_denied.</summary>
    static async Task<IResult> AuthorizeAsync(HttpContext ctx, ClientRegistry clients, IAntiforgery antiforgery)
    {
        var request = ctx.GetOpenIddictServerRequest();
        if (request is null) return Page(ctx, antiforgery, 400, Title, Paragraph(ExpiredText));
        var client = clients.Find(request.ClientId ?? "");
        if (client is null || !client.SignsInPersons)
            return Refuse(Errors.UnauthorizedClient, "This client does not sign in persons.");
        // SMART App Launch: aud names the FHIR server the app wants a token for; another server's is refused.
        if (request.GetParameter("aud")?.ToString() is { Length: > 0 } aud && aud.TrimEnd('/') != BaseUrl(ctx))
            return Refuse(Errors.InvalidRequest, "aud is not this FHIR server's base URL.");

        var session = await ctx.AuthenticateAsync(Scheme);
        var person = session.Succeeded ? clients.FindPerson(session.Principal!.FindFirst(Claims.Subject)?.Value ?? "") : null;
        var returnUrl = ctx.Request.PathBase + AuthorizePath + QueryString.Create(RequestParameters(request));
        if (person is null) return LoginPage(ctx, antiforgery, 200, returnUrl, failed: false);

        if (HttpMethods.IsGet(ctx.Request.Method))
            return ConsentPage(ctx, antiforgery, client, person, request);
        if (!await antiforgery.IsRequestValidAsync(ctx))
            return Page(ctx, antiforgery, 400, Title, Paragraph(ExpiredText) + Link(returnUrl));

        AuthorizationServer.SetAuditUser(ctx, client.ClientId, person.Username, authenticated: true);
        if (ctx.Request.Form["decision"] != "allow")
            return Refuse(Errors.AccessDenied, "The person did not allow this app.");

        var granted = Granted(request.GetScopes(), client.Scopes);
        var identity = new ClaimsIdentity(OpenIddictServerAspNetCoreDefaults.AuthenticationScheme, Claims.Name, Claims.Role);
        identity.SetClaim(Claims.Subject, person.Username);
        identity.SetScopes(granted);
        identity.SetResources(AuthorizationServer.Audience);
        // The code carries only who and what was granted; the token endpoint adds role, actor and the
        // patient context from the registration as it is when the code is redeemed.
        identity.SetDestinations(_ => [Destinations.AccessToken]);
        return Results.SignIn(new ClaimsPrincipal(identity), properties: null, OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
    }

    /// <summary>The login form's POST: the password checked against the person's stored hash, then back to the authorization request.</summary>
    static async Task<IResult> LoginAsync(HttpContext ctx, ClientRegistry clients, IAntiforgery antiforgery, SignInThrottle throttle)
    {
        if (!ctx.Request.HasFormContentType) return Page(ctx, antiforgery, 400, Title, Paragraph(ExpiredText));
        var form = await ctx.Request.ReadFormAsync(ctx.RequestAborted);
        var returnUrl = form["returnUrl"].ToString();
        // Only back to our own authorization endpoint: anything else would make this an open redirect.
        if (!returnUrl.StartsWith(ctx.Request.PathBase + AuthorizePath + "?", StringComparison.Ordinal) || returnUrl.Contains("//", StringComparison.Ordinal) || returnUrl.Contains('\\'))
            return Page(ctx, antiforgery, 400, Title, Paragraph(ExpiredText));
        if (!await antiforgery.IsRequestValidAsync(ctx))
            return Page(ctx, antiforgery, 400, Title, Paragraph(ExpiredText) + Link(returnUrl));

        var username = form["username"].ToString().Trim();
        var password = form["password"].ToString();
        var clientId = QueryHelpers(returnUrl, Parameters.ClientId);
        // Too many failures for this username from this address (SignInThrottle): refused unchecked, known or not.
        var address = SignInThrottle.Address(ctx);
        if (throttle.Check(SignInThrottle.Kind.Person, username, address) is { Allowed: false } refused)
        {
            AuditFailedLogin(ctx, clientId, username);
            ctx.Response.Headers.RetryAfter = SignInThrottle.RetryAfterSeconds(refused.RetryAfter);
            return LoginPage(ctx, antiforgery, 429, returnUrl, failed: true, retryAfter: refused.RetryAfter);
        }
        var person = username.Length is > 0 and <= 200 ? clients.FindPerson(username) : null;
        var hasher = new PasswordHasher<PersonRegistration>();
        var verified = hasher.VerifyHashedPassword(person!, person?.PasswordHash ?? DummyHash, password);
        if (person is null || verified == PasswordVerificationResult.Failed || password.Length == 0)
        {
            // Recorded with the username as typed (truncated); the page says the same for an unknown user and a wrong password.
            throttle.Failed(SignInThrottle.Kind.Person, username, address);
            AuditFailedLogin(ctx, clientId, username);
            return LoginPage(ctx, antiforgery, 403, returnUrl, failed: true);
        }
        throttle.Succeeded(SignInThrottle.Kind.Person, username, address);
        var session = new ClaimsIdentity(Scheme, Claims.Subject, Claims.Role);
        session.AddClaim(new Claim(Claims.Subject, person.Username));
        await ctx.SignInAsync(Scheme, new ClaimsPrincipal(session));
        AuthorizationServer.SetAuditUser(ctx, clientId, person.Username, authenticated: true);
        return Results.Redirect(returnUrl, permanent: false, preserveMethod: false);
    }

    static void AuditFailedLogin(HttpContext ctx, string? clientId, string username) =>
        AuthorizationServer.SetAuditUser(ctx, clientId, username.Length > 64 ? username[..64] : username, authenticated: false);

    static string? QueryHelpers(string url, string name)
    {
        var q = url.IndexOf('?');
        return q < 0 ? null : Microsoft.AspNetCore.WebUtilities.QueryHelpers.ParseQuery(url[q..]).TryGetValue(name, out var v) ? v.ToString() : null;
    }

    /// <summary>The granted scopes: those requested that the client's registration covers (the others are dropped, not refused).</summary>
    public static string[] Granted(IEnumerable<string> requested, string registered) =>
        [.. requested.Where(s => SmartScopes.Within(s, registered)).Distinct(StringComparer.Ordinal)];

    static IEnumerable<KeyValuePair<string, string?>> RequestParameters(OpenIddictRequest request) =>
        request.GetParameters()
            .Where(p => !OwnFields.Contains(p.Key))
            .Select(p => new KeyValuePair<string, string?>(p.Key, p.Value.ToString()));

    static string BaseUrl(HttpContext ctx) => $"{ctx.Request.Scheme}://{ctx.Request.Host}{ctx.Request.PathBase}";

    static IResult Refuse(string error, string description) => Results.Forbid(
        new AuthenticationProperties(new Dictionary<string, string?>
        {
            [OpenIddictServerAspNetCoreConstants.Properties.Error] = error,
            [OpenIddictServerAspNetCoreConstants.Properties.ErrorDescription] = description,
        }),
        [OpenIddictServerAspNetCoreDefaults.AuthenticationScheme]);

    // ---- pages ------------------------------------------------------------------------------

    const string Title = "PhrFhir ログイン / Sign in";
    const string ExpiredText = "このページの有効期限が切れました。アプリからやり直してください。 / This page has expired: start again from the app.";

    static IResult LoginPage(HttpContext ctx, IAntiforgery antiforgery, int status, string returnUrl, bool failed, TimeSpan? retryAfter = null)
    {
        var body = new StringBuilder();
        if (retryAfter is { } wait)
        {
            var minutes = Math.Max(1, (int)Math.Ceiling(wait.TotalMinutes));
            body.Append($"<p class=\"error\" role=\"alert\">ログインの失敗が続いたため、{minutes} 分後にもう一度お試しください。 / Too many failed sign-ins: try again in {minutes} minute(s).</p>");
        }
        else if (failed)
            body.Append("<p class=\"error\" role=\"alert\">ユーザー名またはパスワードが正しくありません。 / The username or password is incorrect.</p>");
        body.Append($"<form method=\"post\" action=\"{E(ctx.Request.PathBase + LoginPath)}\">")
            .Append(Hidden("returnUrl", returnUrl)).Append("{antiforgery}")
            .Append("<label>ユーザー名 / Username<input name=\"username\" autocomplete=\"username\" required></label>")
            .Append("<label>パスワード / Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>")
            .Append("<button type=\"submit\">ログイン / Sign in</button></form>");
        return Page(ctx, antiforgery, status, Title, body.ToString());
    }

    static IResult ConsentPage(HttpContext ctx, IAntiforgery antiforgery, ClientRegistration client, PersonRegistration person, OpenIddictRequest request)
    {
        var granted = Granted(request.GetScopes(), client.Scopes);
        var body = new StringBuilder()
            .Append($"<p>{E(person.Username)} さん、アプリ <strong>{E(client.ClientId)}</strong> にあなたの健康記録へのアクセスを許可しますか？<br>")
            .Append($"Allow the app <strong>{E(client.ClientId)}</strong> to access your health records as {E(person.Username)}?</p><ul>");
        foreach (var scope in granted) body.Append($"<li><code>{E(scope)}</code> {E(Describe(scope))}</li>");
        body.Append("</ul>");
        body.Append($"<form method=\"post\" action=\"{E(ctx.Request.PathBase + AuthorizePath)}\">");
        foreach (var (key, value) in RequestParameters(request)) body.Append(Hidden(key, value ?? ""));
        body.Append("{antiforgery}")
            .Append("<button type=\"submit\" name=\"decision\" value=\"allow\">許可する / Allow</button> ")
            .Append("<button type=\"submit\" name=\"decision\" value=\"deny\">許可しない / Deny</button></form>");
        return Page(ctx, antiforgery, 200, "PhrFhir アクセスの許可 / Allow access", body.ToString());
    }

    static string Describe(string scope) => scope switch
    {
        "openid" or "fhirUser" => "あなたが誰か / who you are",
        "offline_access" => "ログアウト後も続けて / access continuing after you leave",
        "launch/patient" => "あなたの患者記録を選ぶ / select your patient record",
        _ when scope.EndsWith(".rs", StringComparison.Ordinal) || scope.EndsWith(".read", StringComparison.Ordinal) => "読み取り / read",
        _ => "",
    };

    /// <summary>One HTML page: no script, no external asset; the one inline style block is allowed by a nonce.</summary>
    static IResult Page(HttpContext ctx, IAntiforgery antiforgery, int status, string title, string body)
    {
        var tokens = antiforgery.GetAndStoreTokens(ctx);
        var nonce = Convert.ToBase64String(RandomNumberGenerator.GetBytes(16));
        var headers = ctx.Response.Headers;
        // form-action is left out on purpose: browsers apply it to the redirect to the app after consent.
        headers.ContentSecurityPolicy = $"default-src 'none'; style-src 'nonce-{nonce}'; base-uri 'none'; frame-ancestors 'none'";
        headers.XFrameOptions = "DENY";
        headers.CacheControl = "no-store";
        headers["Referrer-Policy"] = "no-referrer";
        headers["X-Content-Type-Options"] = "nosniff";
        var html = $$"""
            <!DOCTYPE html>
            <html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>{{E(title)}}</title>
            <style nonce="{{nonce}}">body{font-family:sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}label{display:block;margin:.8rem 0}input{display:block;width:100%;padding:.4rem}button{padding:.5rem 1rem;margin-top:.8rem}.error{color:#a00}</style>
            </head><body><h1>{{E(title)}}</h1>
            {{body.Replace("{antiforgery}", Hidden(tokens.FormFieldName, tokens.RequestToken ?? ""))}}
            </body></html>
            """;
        return Results.Content(html, "text/html; charset=utf-8", Encoding.UTF8, status);
    }

    static string Hidden(string name, string value) => $"<input type=\"hidden\" name=\"{E(name)}\" value=\"{E(value)}\">";
    static string Paragraph(string text) => $"<p>{E(text)}</p>";
    static string Link(string url) => $"<p><a href=\"{E(url)}\">もう一度 / Try again</a></p>";
    static string E(string s) => HtmlEncoder.Default.Encode(s);

    /// <summary>
    /// <c>dotnet run --project src/PhrFhir.Server -- hash-password</c>: reads a password (stdin, or typed
    /// without echo) and prints its ASP.NET Core Identity hash for the persons key of PHRFHIR_CLIENTS.
    /// The password is never an argument, so it stays out of shell history and process lists.
    /// </summary>
    public static int HashPasswordCommand()
    {
        string password;
        if (Console.IsInputRedirected) password = (Console.In.ReadLine() ?? "").TrimEnd('\r', '\n');
        else
        {
            Console.Error.Write("Password: ");
            var typed = new StringBuilder();
            for (var key = Console.ReadKey(intercept: true); key.Key != ConsoleKey.Enter; key = Console.ReadKey(intercept: true))
                if (key.Key == ConsoleKey.Backspace) { if (typed.Length > 0) typed.Length--; }
                else typed.Append(key.KeyChar);
            Console.Error.WriteLine();
            password = typed.ToString();
        }
        if (password.Length == 0)
        {
            Console.Error.WriteLine("An empty password cannot be hashed.");
            return 1;
        }
        Console.WriteLine(new PasswordHasher<PersonRegistration>().HashPassword(null!, password));
        return 0;
    }
}

using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.IdentityModel.JsonWebTokens;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// SMART App Launch standalone for the person's app (public client "test-app", PKCE S256) and a portal
/// (confidential "test-portal"): the login and consent pages over real HTTP, as a browser would post
/// them (cookies, antiforgery), then the code exchange and the token's use.
/// </summary>
[Collection("server")]
public sealed partial class AuthorizationCodeTests(ServerFixture server)
{
    const string Scopes = "patient/*.rs openid fhirUser launch/patient offline_access";

    /// <summary>A browser: keeps cookies, does not follow redirects (the test looks at each).</summary>
    HttpClient Browser() => new(new HttpClientHandler { CookieContainer = new CookieContainer(), AllowAutoRedirect = false }) { BaseAddress = server.BaseUrl };

    static string NewVerifier() => Base64Url(RandomNumberGenerator.GetBytes(32));
    static string S256(string verifier) => Base64Url(SHA256.HashData(Encoding.ASCII.GetBytes(verifier)));
    static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    string AuthorizeUrl(string verifier, string? redirectUri = null, string? method = "S256", bool pkce = true, string client = ServerFixture.AppClient, string state = "st-123")
    {
        var q = new Dictionary<string, string?>
        {
            ["response_type"] = "code",
            ["client_id"] = client,
            ["redirect_uri"] = redirectUri ?? ServerFixture.AppRedirectUri,
            ["scope"] = Scopes,
            ["state"] = state,
            ["aud"] = server.BaseUrl.ToString().TrimEnd('/'),
        };
        if (pkce) q["code_challenge"] = S256(verifier);
        if (pkce && method is not null) q["code_challenge_method"] = method;
        return QueryHelpers.AddQueryString("auth/authorize", q);
    }

    [GeneratedRegex("<input type=\"hidden\" name=\"([^\"]+)\" value=\"([^\"]*)\">")]
    private static partial Regex HiddenField();

    static Dictionary<string, string> HiddenFields(string html) =>
        HiddenField().Matches(html).ToDictionary(m => WebUtility.HtmlDecode(m.Groups[1].Value), m => WebUtility.HtmlDecode(m.Groups[2].Value));

    static async Task<HttpResponseMessage> PostFormAsync(HttpClient browser, string path, Dictionary<string, string> fields) =>
        await browser.PostAsync(path, new FormUrlEncodedContent(fields));

    async Task<HttpResponseMessage> LoginAsync(HttpClient browser, string authorizeUrl, string username, string password)
    {
        var page = await browser.GetAsync(authorizeUrl);
        var html = await page.Content.ReadAsStringAsync();
        Assert.True(page.StatusCode == HttpStatusCode.OK, $"login page: {(int)page.StatusCode} {html}");
        Assert.Contains("name=\"password\"", html);
        var fields = HiddenFields(html);
        fields["username"] = username;
        fields["password"] = password;
        return await PostFormAsync(browser, "auth/login", fields);
    }

    /// <summary>Login, consent (allow), and the redirect to the app: returns the redirect's query.</summary>
    async Task<Dictionary<string, string>> CodeAsync(HttpClient browser, string authorizeUrl, string decision = "allow", string redirectUri = ServerFixture.AppRedirectUri)
    {
        var login = await LoginAsync(browser, authorizeUrl, ServerFixture.PersonUsername, ServerFixture.PersonPassword);
        Assert.True(login.StatusCode is HttpStatusCode.Redirect or HttpStatusCode.SeeOther, $"login: {(int)login.StatusCode} {await login.Content.ReadAsStringAsync()}");
        var consent = await browser.GetAsync(login.Headers.Location!.ToString().TrimStart('/'));
        var html = await consent.Content.ReadAsStringAsync();
        Assert.True(consent.StatusCode == HttpStatusCode.OK && html.Contains("decision"), $"consent page: {(int)consent.StatusCode} {html}");
        var fields = HiddenFields(html);
        fields["decision"] = decision;
        var redirect = await PostFormAsync(browser, "auth/authorize", fields);
        return RedirectQuery(redirect, redirectUri);
    }

    static Dictionary<string, string> RedirectQuery(HttpResponseMessage redirect, string redirectUri = ServerFixture.AppRedirectUri)
    {
        Assert.True(redirect.StatusCode is HttpStatusCode.Redirect or HttpStatusCode.SeeOther, $"expected a redirect to the app, got {(int)redirect.StatusCode}");
        var location = redirect.Headers.Location!.ToString();
        Assert.StartsWith(redirectUri + "?", location);
        return QueryHelpers.ParseQuery(new Uri(location).Query).ToDictionary(p => p.Key, p => p.Value.ToString());
    }

    async Task<HttpResponseMessage> ExchangeAsync(string code, string verifier, string? redirectUri = null, string client = ServerFixture.AppClient, HttpClient? via = null) =>
        await (via ?? server.Anonymous).PostAsync("auth/token", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["grant_type"] = "authorization_code",
            ["code"] = code,
            ["redirect_uri"] = redirectUri ?? ServerFixture.AppRedirectUri,
            ["client_id"] = client,
            ["code_verifier"] = verifier,
        }));

    async Task<string> PatientIdAsync(string value)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient") { Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", value)] }) };
        request.Headers.Add("If-None-Exist", $"identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|{value}");
        var response = await server.Http.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, $"Patient {value}: {(int)response.StatusCode}");
        return (await Fhir.ReadAsync<Patient>(response)).Id;
    }

    static async Task<JsonElement> JsonAsync(HttpResponseMessage response, HttpStatusCode status)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status}, got {(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    static HttpRequestMessage Get(string path, string token)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
        return request;
    }

    [Fact]
    public async System.Threading.Tasks.Task The_person_signs_in_consents_and_reads_only_their_own_Patient()
    {
        var own = await PatientIdAsync(ServerFixture.PersonIdentifier);
        var other = await PatientIdAsync(Fhir.Unique("x"));
        using var browser = Browser();
        var verifier = NewVerifier();
        var redirect = await CodeAsync(browser, AuthorizeUrl(verifier));
        Assert.Equal("st-123", redirect["state"]);

        var token = await JsonAsync(await ExchangeAsync(redirect["code"], verifier), HttpStatusCode.OK);
        Assert.Equal(own, token.GetProperty("patient").GetString());
        var access = token.GetProperty("access_token").GetString()!;
        var claims = new JsonWebToken(access);
        Assert.Equal("person", claims.GetClaim("phr_role").Value);
        Assert.Equal("urn:oid:1.2.392.100495.20.3.51.11312345678|" + ServerFixture.PersonIdentifier, claims.GetClaim("phr_actor").Value);
        Assert.Equal(ServerFixture.AppClient, claims.GetClaim("client_id").Value);
        var idToken = new JsonWebToken(token.GetProperty("id_token").GetString());
        Assert.EndsWith("/Patient/" + own, idToken.GetClaim("fhirUser").Value);

        Assert.Equal(HttpStatusCode.OK, (await server.Anonymous.SendAsync(Get($"Patient/{own}", access))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await server.Anonymous.SendAsync(Get($"Patient/{other}", access))).StatusCode);

        // offline_access: the refresh token gives a new access token for the same person.
        var refreshed = await JsonAsync(await server.Anonymous.PostAsync("auth/token", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["grant_type"] = "refresh_token",
            ["refresh_token"] = token.GetProperty("refresh_token").GetString()!,
            ["client_id"] = ServerFixture.AppClient,
        })), HttpStatusCode.OK);
        Assert.Equal(own, refreshed.GetProperty("patient").GetString());
        Assert.Equal(HttpStatusCode.OK, (await server.Anonymous.SendAsync(Get($"Patient/{own}", refreshed.GetProperty("access_token").GetString()!))).StatusCode);

        // A code is redeemed once.
        var replay = await JsonAsync(await ExchangeAsync(redirect["code"], verifier), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_grant", replay.GetProperty("error").GetString());
    }

    [Fact]
    public async System.Threading.Tasks.Task A_signed_in_person_is_not_asked_for_the_password_again()
    {
        using var browser = Browser();
        await CodeAsync(browser, AuthorizeUrl(NewVerifier()));
        var again = await browser.GetAsync(AuthorizeUrl(NewVerifier()));
        var html = await again.Content.ReadAsStringAsync();
        Assert.Contains("decision", html);
        Assert.DoesNotContain("name=\"password\"", html);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_wrong_code_verifier_is_refused()
    {
        using var browser = Browser();
        var redirect = await CodeAsync(browser, AuthorizeUrl(NewVerifier()));
        var refused = await JsonAsync(await ExchangeAsync(redirect["code"], NewVerifier()), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_grant", refused.GetProperty("error").GetString());
    }

    [Fact]
    public async System.Threading.Tasks.Task A_redirect_uri_other_than_the_registered_one_is_refused()
    {
        using var browser = Browser();
        // At the authorization endpoint: no redirect to an unregistered URI, an error page instead.
        foreach (var uri in new[] { "http://127.0.0.1:9/callback/evil", "http://127.0.0.1:9/callback?x=1", "https://evil.example/callback" })
        {
            var response = await browser.GetAsync(AuthorizeUrl(NewVerifier(), redirectUri: uri));
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{uri}: {(int)response.StatusCode}");
            Assert.Null(response.Headers.Location);
        }
        // At the token endpoint: the code is bound to the redirect_uri it was issued for.
        var verifier = NewVerifier();
        var redirect = await CodeAsync(browser, AuthorizeUrl(verifier));
        var refused = await JsonAsync(await ExchangeAsync(redirect["code"], verifier, redirectUri: "http://127.0.0.1:9/other"), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_grant", refused.GetProperty("error").GetString());
    }

    [Theory]
    [InlineData(false, null)]     // no code_challenge at all
    [InlineData(true, "plain")]   // plain is not offered
    [InlineData(true, null)]      // a challenge without a method means plain (RFC 7636 4.3)
    public async System.Threading.Tasks.Task An_authorization_request_without_S256_PKCE_is_refused(bool pkce, string? method)
    {
        using var browser = Browser();
        var response = await browser.GetAsync(AuthorizeUrl(NewVerifier(), method: method, pkce: pkce));
        // OpenIddict checks PKCE before it trusts the redirect_uri, so it answers itself (no redirect, no code).
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{(int)response.StatusCode} {body}");
        Assert.Null(response.Headers.Location);
        Assert.Contains("invalid_request", body);
        Assert.Contains("code_challenge", body);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_wrong_password_shows_the_login_page_again_and_does_not_tell_which_part_was_wrong()
    {
        using var browser = Browser();
        var url = AuthorizeUrl(NewVerifier());
        var unknown = Fhir.Unique("nobody");
        var wrongPassword = await LoginAsync(browser, url, ServerFixture.PersonUsername, "not-the-password");
        var unknownUser = await LoginAsync(browser, url, unknown, "not-the-password");
        Assert.Equal(HttpStatusCode.Forbidden, wrongPassword.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, unknownUser.StatusCode);
        // The same page for both, apart from the fresh antiforgery token and style nonce.
        static string Neutral(string html) => Regex.Replace(html, "value=\"CfDJ8[^\"]*\"|nonce=\"[^\"]*\"", "");
        var a = Neutral(await wrongPassword.Content.ReadAsStringAsync());
        var b = Neutral(await unknownUser.Content.ReadAsStringAsync());
        Assert.Equal(a, b);
        Assert.Contains("The username or password is incorrect", a);
        Assert.DoesNotContain(unknown, b);
        Assert.Null(wrongPassword.Headers.Location);

        // Both logins are audited as refused User Authentication events naming the username typed.
        var audit = await EventuallyAsync($"altid={unknown}");
        Assert.Equal(AuditEvent.AuditEventOutcome.N4, audit.Outcome);
        Assert.Equal("110114", audit.Type.Code);
        Assert.Equal(ServerFixture.AppClient, audit.Agent.First(x => x.Requestor == true).Who.Identifier.Value);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_successful_login_is_audited_with_the_person_and_the_app()
    {
        using var browser = Browser();
        var login = await LoginAsync(browser, AuthorizeUrl(NewVerifier()), ServerFixture.PersonUsername, ServerFixture.PersonPassword);
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        var audit = await EventuallyAsync($"altid={ServerFixture.PersonUsername}&outcome=0&type=110114");
        Assert.Equal(ServerFixture.AppClient, audit.Agent.First(x => x.Requestor == true).Who.Identifier.Value);
    }

    async Task<AuditEvent> EventuallyAsync(string query)
    {
        for (var i = 0; i < 50; i++)
        {
            var found = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync("AuditEvent?" + query), HttpStatusCode.OK);
            if (found.Entry.Count > 0) return (AuditEvent)found.Entry[0].Resource;
            await System.Threading.Tasks.Task.Delay(100);
        }
        throw new Xunit.Sdk.XunitException($"no AuditEvent for {query}");
    }

    [Fact]
    public async System.Threading.Tasks.Task Denying_consent_sends_access_denied_to_the_app()
    {
        using var browser = Browser();
        var query = await CodeAsync(browser, AuthorizeUrl(NewVerifier()), decision: "deny");
        Assert.Equal("access_denied", query["error"]);
        Assert.False(query.ContainsKey("code"));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_login_form_is_refused_without_its_antiforgery_token()
    {
        using var browser = Browser();
        var page = await browser.GetAsync(AuthorizeUrl(NewVerifier()));
        var fields = HiddenFields(await page.Content.ReadAsStringAsync());
        fields.Remove("__RequestVerificationToken");
        fields["username"] = ServerFixture.PersonUsername;
        fields["password"] = ServerFixture.PersonPassword;
        var response = await PostFormAsync(browser, "auth/login", fields);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Null(response.Headers.Location);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_pages_forbid_framing_scripts_and_external_assets()
    {
        using var browser = Browser();
        var page = await browser.GetAsync(AuthorizeUrl(NewVerifier()));
        var csp = string.Join(";", page.Headers.GetValues("Content-Security-Policy"));
        Assert.Contains("default-src 'none'", csp);
        Assert.Contains("frame-ancestors 'none'", csp);
        var html = await page.Content.ReadAsStringAsync();
        Assert.DoesNotContain("<script", html);
        Assert.DoesNotContain("http", Regex.Replace(html, "value=\"[^\"]*\"", ""));
        Assert.Contains("パスワード", html);
        Assert.Contains("Password", html);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_confidential_portal_must_present_its_secret_to_redeem_the_code()
    {
        const string portalRedirect = "https://portal.example.org/callback";
        using var browser = Browser();
        var verifier = NewVerifier();
        var url = AuthorizeUrl(verifier, redirectUri: portalRedirect, client: ServerFixture.PortalClient);
        var login = await LoginAsync(browser, url, ServerFixture.PersonUsername, ServerFixture.PersonPassword);
        var consent = await browser.GetAsync(login.Headers.Location!.ToString().TrimStart('/'));
        var fields = HiddenFields(await consent.Content.ReadAsStringAsync());
        fields["decision"] = "allow";
        var redirect = await PostFormAsync(browser, "auth/authorize", fields);
        var location = redirect.Headers.Location!.ToString();
        Assert.StartsWith(portalRedirect + "?", location);
        var code = QueryHelpers.ParseQuery(new Uri(location).Query)["code"].ToString();

        var withoutSecret = await JsonAsync(await ExchangeAsync(code, verifier, portalRedirect, ServerFixture.PortalClient), HttpStatusCode.Unauthorized);
        Assert.Equal("invalid_client", withoutSecret.GetProperty("error").GetString());
        var request = new HttpRequestMessage(HttpMethod.Post, "auth/token")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string>
            {
                ["grant_type"] = "authorization_code",
                ["code"] = code,
                ["redirect_uri"] = portalRedirect,
                ["code_verifier"] = verifier,
            }),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{ServerFixture.PortalClient}:{ServerFixture.Secret}")));
        var token = await JsonAsync(await server.Anonymous.SendAsync(request), HttpStatusCode.OK);
        // The portal is registered for patient/*.rs only: openid, fhirUser… asked for are not granted.
        Assert.Equal("patient/*.rs", token.GetProperty("scope").GetString());
        Assert.False(token.TryGetProperty("refresh_token", out _), "a refresh token for a client not registered for offline_access");
    }

    [Fact]
    public async System.Threading.Tasks.Task A_client_credentials_client_cannot_start_a_person_login()
    {
        using var browser = Browser();
        var response = await browser.GetAsync(AuthorizeUrl(NewVerifier(), client: ServerFixture.OperatorClient));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    [Theory]
    [InlineData("GET", "auth/authorize", null)]
    [InlineData("POST", "auth/authorize", "not a form")]
    [InlineData("POST", "auth/authorize", "response_type=code&client_id=test-app")]
    [InlineData("POST", "auth/login", null)]
    [InlineData("POST", "auth/login", "{\"username\":\"x\"}")]
    [InlineData("POST", "auth/login", "username=x&password=y&returnUrl=https://evil.example/")]
    [InlineData("POST", "auth/token", "grant_type=authorization_code&client_id=test-app&code=garbage&code_verifier=x&redirect_uri=http://127.0.0.1:9/callback")]
    [InlineData("POST", "auth/token", "grant_type=refresh_token&client_id=test-app&refresh_token=garbage")]
    public async System.Threading.Tasks.Task Malformed_requests_to_the_login_endpoints_are_client_errors(string method, string path, string? form)
    {
        using var browser = Browser();
        var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (form is not null)
            request.Content = new StringContent(form, Encoding.UTF8, form.StartsWith('{') ? "application/json" : form.Contains('=') ? "application/x-www-form-urlencoded" : "text/plain");
        var response = await browser.SendAsync(request);
        Assert.True((int)response.StatusCode is >= 400 and < 500, $"{method} /{path} [{form}]: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    [Fact]
    public async System.Threading.Tasks.Task Smart_configuration_advertises_the_standalone_launch()
    {
        using var doc = JsonDocument.Parse(await server.Anonymous.GetStringAsync(".well-known/smart-configuration"));
        var root = doc.RootElement;
        Assert.EndsWith("/auth/authorize", root.GetProperty("authorization_endpoint").GetString());
        Assert.Equal(["S256"], root.GetProperty("code_challenge_methods_supported").EnumerateArray().Select(e => e.GetString()));
        Assert.Contains("authorization_code", root.GetProperty("grant_types_supported").EnumerateArray().Select(e => e.GetString()));
        var capabilities = root.GetProperty("capabilities").EnumerateArray().Select(e => e.GetString()).ToList();
        foreach (var c in new[] { "launch-standalone", "client-public", "client-confidential-symmetric", "context-standalone-patient", "permission-v2", "permission-patient", "sso-openid-connect" })
            Assert.True(capabilities.Contains(c), $"capability {c} missing");
    }
}

using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// Codes, refresh tokens and revocations live in PostgreSQL and the keys are persisted: a second server
/// process on the same database (behind a load balancer, or the same server after a restart) honours what
/// the first issued, and a code is still redeemed once. Refresh requests as SMART client libraries send them.
/// </summary>
public sealed partial class AuthorizationCodeTests
{
    /// <summary>A refresh request; with a secret the client authenticates with HTTP Basic, else client_id (if any) is a form field.</summary>
    static async Task<HttpResponseMessage> RefreshAsync(HttpClient via, string refreshToken, string? clientId = ServerFixture.AppClient, string? secret = null)
    {
        var form = new Dictionary<string, string> { ["grant_type"] = "refresh_token", ["refresh_token"] = refreshToken };
        if (clientId is not null && secret is null) form["client_id"] = clientId;
        var request = new HttpRequestMessage(HttpMethod.Post, "auth/token") { Content = new FormUrlEncodedContent(form) };
        if (secret is not null)
            request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{clientId}:{secret}")));
        return await via.SendAsync(request);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_refresh_token_outlives_the_server_process_that_issued_it()
    {
        var own = await PatientIdAsync(ServerFixture.PersonIdentifier);
        using var browser = Browser();
        var verifier = NewVerifier();
        var redirect = await CodeAsync(browser, AuthorizeUrl(verifier));
        var token = await JsonAsync(await ExchangeAsync(redirect["code"], verifier), HttpStatusCode.OK);
        var refreshToken = token.GetProperty("refresh_token").GetString()!;

        string next;
        await using (var other = await server.StartInstanceAsync())
        {
            // Another process redeems it, and its access token is good at the first process.
            var refreshed = await JsonAsync(await RefreshAsync(other.Anonymous, refreshToken), HttpStatusCode.OK);
            Assert.Equal(own, refreshed.GetProperty("patient").GetString());
            Assert.Equal(HttpStatusCode.OK, (await server.Anonymous.SendAsync(Get($"Patient/{own}", refreshed.GetProperty("access_token").GetString()!))).StatusCode);
            next = refreshed.TryGetProperty("refresh_token", out var rolled) ? rolled.GetString()! : refreshToken;
        }
        // That process has stopped; a new one (a restart: new keys would end here) redeems what it issued.
        await using var restarted = await server.StartInstanceAsync();
        var again = await JsonAsync(await RefreshAsync(restarted.Anonymous, next), HttpStatusCode.OK);
        Assert.Equal(own, again.GetProperty("patient").GetString());
    }

    [Fact]
    public async System.Threading.Tasks.Task A_code_is_redeemed_once_across_server_processes_and_its_replay_revokes_the_refresh_token_everywhere()
    {
        using var browser = Browser();
        var verifier = NewVerifier();
        var redirect = await CodeAsync(browser, AuthorizeUrl(verifier));
        await using var other = await server.StartInstanceAsync();

        // Issued by this process, redeemed by the other.
        var token = await JsonAsync(await ExchangeAsync(redirect["code"], verifier, via: other.Anonymous), HttpStatusCode.OK);
        var refreshToken = token.GetProperty("refresh_token").GetString()!;
        // Replayed here: refused, and (RFC 6749 4.1.2) what the code gave is revoked, for both processes.
        var replay = await JsonAsync(await ExchangeAsync(redirect["code"], verifier), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_grant", replay.GetProperty("error").GetString());
        foreach (var (name, via) in new[] { ("the other process", other.Anonymous), ("this process", server.Anonymous) })
        {
            var refused = await RefreshAsync(via, refreshToken);
            Assert.True(refused.StatusCode == HttpStatusCode.BadRequest, $"refresh after the code's replay, at {name}: {(int)refused.StatusCode} {await refused.Content.ReadAsStringAsync()}");
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task Refresh_without_client_id_works_for_a_public_app_but_not_for_a_confidential_portal()
    {
        // fhirclient 2.x with default settings refreshes with grant_type and refresh_token only (RFC 6749 §6
        // asks no client_id of a public client): the refresh token names its app.
        using var browser = Browser();
        var verifier = NewVerifier();
        var app = await JsonAsync(await ExchangeAsync((await CodeAsync(browser, AuthorizeUrl(verifier)))["code"], verifier), HttpStatusCode.OK);
        var refreshed = await RefreshAsync(server.Anonymous, app.GetProperty("refresh_token").GetString()!, clientId: null);
        var body = await refreshed.Content.ReadAsStringAsync();
        Assert.True(refreshed.StatusCode == HttpStatusCode.OK, $"public app without client_id: {(int)refreshed.StatusCode} {body}");

        // A confidential portal's refresh token is worth nothing without the portal's secret.
        var portalVerifier = NewVerifier();
        var url = AuthorizeUrl(portalVerifier, redirectUri: ServerFixture.PortalRedirectUri, client: ServerFixture.OfflinePortalClient);
        using var portalBrowser = Browser();
        var code = (await CodeAsync(portalBrowser, url, redirectUri: ServerFixture.PortalRedirectUri))["code"];
        var exchange = new HttpRequestMessage(HttpMethod.Post, "auth/token")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string>
            {
                ["grant_type"] = "authorization_code",
                ["code"] = code,
                ["redirect_uri"] = ServerFixture.PortalRedirectUri,
                ["code_verifier"] = portalVerifier,
            }),
        };
        exchange.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{ServerFixture.OfflinePortalClient}:{ServerFixture.Secret}")));
        var portalRefresh = (await JsonAsync(await server.Anonymous.SendAsync(exchange), HttpStatusCode.OK)).GetProperty("refresh_token").GetString()!;

        var anonymous = await RefreshAsync(server.Anonymous, portalRefresh, clientId: null);
        Assert.True(anonymous.StatusCode is HttpStatusCode.BadRequest or HttpStatusCode.Unauthorized, $"portal without client_id: {(int)anonymous.StatusCode}");
        var unauthenticated = await RefreshAsync(server.Anonymous, portalRefresh, clientId: ServerFixture.OfflinePortalClient);
        Assert.Equal("invalid_client", (await JsonAsync(unauthenticated, HttpStatusCode.Unauthorized)).GetProperty("error").GetString());
        // The token itself was good: with the secret it refreshes.
        await JsonAsync(await RefreshAsync(server.Anonymous, portalRefresh, ServerFixture.OfflinePortalClient, ServerFixture.Secret), HttpStatusCode.OK);
    }
}

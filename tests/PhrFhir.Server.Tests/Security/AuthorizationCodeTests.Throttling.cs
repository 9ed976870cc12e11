using System.Net;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// Password guessing at the sign-in page is throttled (SignInThrottle) per username and address strictly,
/// per username softly: the attacker's address waits, the person at their own address does not. Each test
/// uses its own loopback addresses (every 127.x.y.z reaches the server) and its own person.
/// </summary>
public sealed partial class AuthorizationCodeTests
{
    [Fact]
    public async System.Threading.Tasks.Task Repeated_wrong_passwords_from_one_address_refuse_even_the_right_password_there_for_a_while_but_not_elsewhere()
    {
        var person = ServerFixture.ThrottledPersons[0];
        var url = AuthorizeUrl(NewVerifier());
        using var attacker = ServerFixture.From("127.0.0.2", server.BaseUrl);
        for (var i = 1; i <= 5; i++)
            Assert.Equal(HttpStatusCode.Forbidden, (await LoginAsync(attacker, url, person, "guess-" + i)).StatusCode);

        var refused = await LoginAsync(attacker, url, person, ServerFixture.PersonPassword);
        var html = await refused.Content.ReadAsStringAsync();
        Assert.True(refused.StatusCode == HttpStatusCode.TooManyRequests, $"expected 429, got {(int)refused.StatusCode}");
        Assert.True(refused.Headers.RetryAfter?.Delta is { TotalSeconds: > 0 and <= 60 }, $"Retry-After: {refused.Headers.RetryAfter}");
        Assert.Contains("Too many failed sign-ins", html);
        Assert.Contains("ログインの失敗が続いた", html);
        Assert.Null(refused.Headers.Location);

        using var own = ServerFixture.From("127.0.0.3", server.BaseUrl);
        var signedIn = await LoginAsync(own, url, person, ServerFixture.PersonPassword);
        Assert.True(signedIn.StatusCode == HttpStatusCode.Redirect, $"the person from another address: {(int)signedIn.StatusCode}");
    }

    [Fact]
    public async System.Threading.Tasks.Task An_unknown_username_is_throttled_like_a_known_one()
    {
        // Otherwise the throttle would tell which usernames exist.
        var url = AuthorizeUrl(NewVerifier());
        using var attacker = ServerFixture.From("127.0.0.4", server.BaseUrl);
        foreach (var username in new[] { Fhir.Unique("nobody-"), ServerFixture.ThrottledPersons[0] })
        {
            for (var i = 1; i <= 5; i++)
                Assert.Equal(HttpStatusCode.Forbidden, (await LoginAsync(attacker, url, username, "guess-" + i)).StatusCode);
            Assert.Equal(HttpStatusCode.TooManyRequests, (await LoginAsync(attacker, url, username, "guess-6")).StatusCode);
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task An_attack_from_many_addresses_does_not_keep_the_person_out_of_an_address_they_signed_in_from()
    {
        var person = ServerFixture.ThrottledPersons[1];
        var url = AuthorizeUrl(NewVerifier());
        using (var home = ServerFixture.From("127.0.1.1", server.BaseUrl))
            Assert.Equal(HttpStatusCode.Redirect, (await LoginAsync(home, url, person, ServerFixture.PersonPassword)).StatusCode);

        // 4 addresses × 5 guesses: the username's own bucket (20) is empty, no address's bucket is.
        for (var a = 2; a <= 5; a++)
        {
            using var attacker = ServerFixture.From($"127.0.1.{a}", server.BaseUrl);
            for (var i = 1; i <= 5; i++)
                Assert.Equal(HttpStatusCode.Forbidden, (await LoginAsync(attacker, url, person, $"guess-{a}-{i}")).StatusCode);
        }

        using var newDevice = ServerFixture.From("127.0.1.6", server.BaseUrl);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await LoginAsync(newDevice, url, person, ServerFixture.PersonPassword)).StatusCode);
        using var homeAgain = ServerFixture.From("127.0.1.1", server.BaseUrl); // a fresh browser, same address
        var signedIn = await LoginAsync(homeAgain, url, person, ServerFixture.PersonPassword);
        Assert.True(signedIn.StatusCode == HttpStatusCode.Redirect, $"the person at a known-good address: {(int)signedIn.StatusCode}");
    }

    [Fact]
    public async System.Threading.Tasks.Task Failures_sent_in_a_public_apps_name_do_not_stop_its_users()
    {
        // The app has no secret to guess and its client_id is public: anyone could send failures in its name.
        using var browser = Browser();
        var verifier = NewVerifier();
        var code = (await CodeAsync(browser, AuthorizeUrl(verifier)))["code"];
        using var shared = ServerFixture.From("127.0.0.7", server.BaseUrl);
        for (var i = 1; i <= 6; i++)
        {
            var failed = await shared.PostAsync("auth/token", new FormUrlEncodedContent(new Dictionary<string, string>
            {
                ["grant_type"] = "refresh_token",
                ["refresh_token"] = "x",
                ["client_id"] = ServerFixture.AppClient,
                ["client_secret"] = "made-up-" + i,
            }));
            Assert.Equal(HttpStatusCode.Unauthorized, failed.StatusCode);
        }
        await JsonAsync(await ExchangeAsync(code, verifier, via: shared), HttpStatusCode.OK);
    }
}

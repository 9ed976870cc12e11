using System.Security.Cryptography;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using PhrFhir.Server.Security;
using Xunit;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// The access-token handler remembers accepted tokens (docs/performance.md, "Remembered access tokens"): a remembered
/// token must be refused exactly when the full check would refuse it — once expired, at another issuer — and nothing
/// refused is remembered.
/// </summary>
public sealed class RememberedTokensTests : IDisposable
{
    readonly RSA _rsa = RSA.Create(2048);

    public void Dispose() => _rsa.Dispose();

    string Token(DateTime expires, string issuer = "http://a.example/", RSA? key = null) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
    {
        Issuer = issuer,
        Audience = "phrfhir",
        NotBefore = DateTime.UtcNow.AddMinutes(-1),
        IssuedAt = DateTime.UtcNow.AddMinutes(-1),
        Expires = expires,
        Claims = new Dictionary<string, object> { ["sub"] = "kenshin-a", ["phr_role"] = "institution" },
        SigningCredentials = new SigningCredentials(new RsaSecurityKey(key ?? _rsa), SecurityAlgorithms.RsaSha256),
    });

    // As the server's: the issuer must be the base URL the request came to (here: whatever `expected` holds now).
    TokenValidationParameters Parameters(Func<string> expected) => new()
    {
        ValidAudience = "phrfhir",
        IssuerSigningKeys = [new RsaSecurityKey(_rsa)],
        ClockSkew = TimeSpan.Zero,
        IssuerValidator = (issuer, _, _) => issuer == expected() ? issuer : throw new SecurityTokenInvalidIssuerException("another base URL"),
    };

    [Fact]
    public async Task An_accepted_token_is_remembered_and_each_request_gets_its_own_identity()
    {
        var handler = new RememberedTokens();
        var token = Token(DateTime.UtcNow.AddMinutes(5));
        var p = Parameters(() => "http://a.example/");
        var first = await handler.ValidateTokenAsync(token, p);
        var second = await handler.ValidateTokenAsync(token, p);
        Assert.True(first.IsValid);
        Assert.True(second.IsValid);
        Assert.Equal(1, handler.Count);
        Assert.Equal("kenshin-a", second.ClaimsIdentity.FindFirst("sub")?.Value);
        first.ClaimsIdentity.AddClaim(new System.Security.Claims.Claim("added-by-one-request", "x"));
        Assert.Null(second.ClaimsIdentity.FindFirst("added-by-one-request"));
        Assert.Null((await handler.ValidateTokenAsync(token, p)).ClaimsIdentity.FindFirst("added-by-one-request"));
    }

    [Fact]
    public async Task A_remembered_token_is_refused_once_it_expires()
    {
        var handler = new RememberedTokens();
        // Long enough to be valid twice on a loaded machine (the first check verifies the RSA signature), then waited out.
        var expires = DateTime.UtcNow.AddSeconds(6);
        var token = Token(expires);
        var p = Parameters(() => "http://a.example/");
        Assert.True((await handler.ValidateTokenAsync(token, p)).IsValid);
        Assert.True((await handler.ValidateTokenAsync(token, p)).IsValid);
        await Task.Delay(expires - DateTime.UtcNow + TimeSpan.FromSeconds(1.5));
        var late = await handler.ValidateTokenAsync(token, p);
        Assert.False(late.IsValid);
        Assert.IsType<SecurityTokenExpiredException>(late.Exception);
        Assert.Equal(0, handler.Count);
    }

    [Fact]
    public async Task A_remembered_token_is_refused_at_another_base_url()
    {
        var handler = new RememberedTokens();
        var token = Token(DateTime.UtcNow.AddMinutes(5));
        var expected = "http://a.example/";
        var p = Parameters(() => expected);
        Assert.True((await handler.ValidateTokenAsync(token, p)).IsValid);
        expected = "http://b.example/";
        Assert.False((await handler.ValidateTokenAsync(token, p)).IsValid);
        expected = "http://a.example/";
        Assert.True((await handler.ValidateTokenAsync(token, p)).IsValid);
    }

    [Fact]
    public async Task A_refused_token_is_not_remembered()
    {
        var handler = new RememberedTokens();
        using var other = RSA.Create(2048);
        var p = Parameters(() => "http://a.example/");
        Assert.False((await handler.ValidateTokenAsync(Token(DateTime.UtcNow.AddMinutes(5), key: other), p)).IsValid);
        Assert.False((await handler.ValidateTokenAsync(Token(DateTime.UtcNow.AddMinutes(5), issuer: "http://b.example/"), p)).IsValid);
        var token = Token(DateTime.UtcNow.AddMinutes(5));
        Assert.False((await handler.ValidateTokenAsync(token[..^4] + "AAAA", p)).IsValid); // signature altered
        Assert.Equal(0, handler.Count);
    }

    [Fact]
    public async Task What_is_remembered_is_bounded()
    {
        var handler = new RememberedTokens(capacity: 8);
        var p = Parameters(() => "http://a.example/");
        for (var i = 0; i < 50; i++)
            Assert.True((await handler.ValidateTokenAsync(Token(DateTime.UtcNow.AddMinutes(5).AddSeconds(i)), p)).IsValid);
        Assert.InRange(handler.Count, 1, 8);
    }
}

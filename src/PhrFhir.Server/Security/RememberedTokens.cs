using System.Collections.Concurrent;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace PhrFhir.Server.Security;

/// <summary>
/// JwtBearer's token handler for the embedded authorisation server's access tokens, remembering each token it
/// accepted until the token expires. An app sends the same access token with every request of its 15 minutes;
/// checking the RSA signature and parsing the claims again each time was most of authorisation's CPU per read
/// (docs/performance.md, "Remembered access tokens"). What it remembers cannot change while the process runs: the
/// token's bytes are the key, the signing keys are fixed at start (AuthorizationKeys), and access tokens are
/// self-contained (never stored, so never revoked one by one). What can change is checked on every request: the
/// lifetime (<c>exp</c> + clock skew, as the full check does) and, when the issuer is the base URL the request came to,
/// the issuer. Only accepted tokens are remembered; a refused one is checked in full each time.
/// </summary>
public sealed class RememberedTokens(int capacity = RememberedTokens.DefaultCapacity) : JsonWebTokenHandler
{
    /// <summary>Tokens remembered at most (one per app session in its 15 minutes; ~3 kB each).</summary>
    public const int DefaultCapacity = 4096;

    sealed record Accepted(TokenValidationResult Result, DateTime ValidTo, string Issuer);

    readonly ConcurrentDictionary<string, Accepted> _accepted = new(StringComparer.Ordinal);

    /// <summary>How many tokens are remembered now.</summary>
    public int Count => _accepted.Count;

    public override async Task<TokenValidationResult> ValidateTokenAsync(string token, TokenValidationParameters validationParameters)
    {
        if (_accepted.TryGetValue(token, out var known))
        {
            if (StillValid(known, validationParameters)) return Copy(known.Result);
            _accepted.TryRemove(token, out _);
        }
        var result = await base.ValidateTokenAsync(token, validationParameters);
        if (result.IsValid && result.SecurityToken is JsonWebToken jwt && result.ClaimsIdentity is not null)
        {
            if (_accepted.Count >= capacity) Forget();
            _accepted[token] = new Accepted(result, jwt.ValidTo, result.Issuer ?? jwt.Issuer);
            return Copy(result);
        }
        return result;
    }

    bool StillValid(Accepted known, TokenValidationParameters p)
    {
        if (DateTime.UtcNow > known.ValidTo + p.ClockSkew) return false;
        if (p.IssuerValidator is { } validator)
        {
            // The issuer rule may depend on the request (the base URL it came to): run it again.
            try { validator(known.Issuer, known.Result.SecurityToken, p); }
            catch (SecurityTokenException) { return false; }
        }
        else if (p.ValidIssuer is { } issuer && issuer != known.Issuer) return false;
        return true;
    }

    // Each request gets its own identity: JwtBearer and what follows may add claims to it.
    static TokenValidationResult Copy(TokenValidationResult r) => new()
    {
        IsValid = true,
        ClaimsIdentity = r.ClaimsIdentity.Clone(),
        SecurityToken = r.SecurityToken,
        Issuer = r.Issuer,
        TokenType = r.TokenType,
    };

    // Full: drop the expired; if that frees too little, start afresh (the tokens are checked in full again, once).
    void Forget()
    {
        var now = DateTime.UtcNow;
        foreach (var (key, value) in _accepted)
            if (value.ValidTo < now) _accepted.TryRemove(key, out _);
        if (_accepted.Count >= capacity * 3 / 4) _accepted.Clear();
    }
}

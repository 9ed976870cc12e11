using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore;
using Microsoft.Extensions.Caching.Memory;
using OpenIddict.Server;
using OpenIddict.Server.AspNetCore;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace PhrFhir.Server.Security;

/// <summary>
/// Slows down guessing of client secrets (token endpoint) and passwords (sign-in page) without letting an
/// attacker lock the real client or person out (docs/auth.md "Throttling"). Failures are counted in three
/// token buckets (System.Threading.RateLimiting, the limiters behind ASP.NET Core rate limiting; a bucket
/// regains one permit per <c>Auth:Throttle:ReplenishSeconds</c>):
/// <list type="bullet">
/// <item>per account and source address, strict (<c>PerAccountAndAddress</c>, 5): once empty, that address is refused
/// for that account, even with the right secret, until the bucket refills;</item>
/// <item>per account from any address (<c>PerAccount</c>, 20) and per address for any account (<c>PerAddress</c>, 30),
/// soft: once empty, they refuse only addresses the account has not signed in from successfully in the
/// last 30 days, so an attack spread over many addresses, or from a shared address, does not keep the
/// real client or person out of their known-good path.</item>
/// </list>
/// A refused attempt is answered 429 with Retry-After, is not checked at all (no oracle while refused) and
/// is not counted. Unknown accounts are counted exactly like known ones, so throttling tells nothing about
/// which exist. Registered public apps are not throttled (nothing to guess). The counters are in memory, per server process: with N processes an attacker gets at most
/// N times the budget, which keeps guessing as impractical, and no database write happens per failure.
/// IPv6 sources are counted per /64, the block one subscriber usually holds.
/// </summary>
public sealed class SignInThrottle : IDisposable
{
    public enum Kind { Client, Person }

    /// <summary>Allowed, or refused until <see cref="RetryAfter"/> has passed.</summary>
    public readonly record struct Decision(bool Allowed, TimeSpan RetryAfter);

    readonly PartitionedRateLimiter<string> _perPair;
    readonly PartitionedRateLimiter<string> _perAccount;
    readonly PartitionedRateLimiter<string> _perAddress;
    readonly MemoryCache _knownGood = new(new MemoryCacheOptions { SizeLimit = 100_000 });
    readonly ILogger<SignInThrottle> _log;
    readonly TimeSpan _period;

    public SignInThrottle(IConfiguration config, ILogger<SignInThrottle> log)
    {
        _log = log;
        _period = TimeSpan.FromSeconds(config.GetValue("Auth:Throttle:ReplenishSeconds", 60));
        _perPair = Buckets(config.GetValue("Auth:Throttle:PerAccountAndAddress", 5), _period);
        _perAccount = Buckets(config.GetValue("Auth:Throttle:PerAccount", 20), _period);
        _perAddress = Buckets(config.GetValue("Auth:Throttle:PerAddress", 30), _period);
    }

    static PartitionedRateLimiter<string> Buckets(int failures, TimeSpan period) =>
        PartitionedRateLimiter.Create<string, string>(key => RateLimitPartition.GetTokenBucketLimiter(key, _ => new TokenBucketRateLimiterOptions
        {
            TokenLimit = failures,
            TokensPerPeriod = 1,
            ReplenishmentPeriod = period,
            QueueLimit = 0,
            AutoReplenishment = true,
        }));

    /// <summary>Before the secret or password is checked: may this address try this account now?</summary>
    public Decision Check(Kind kind, string account, string address)
    {
        var (pair, acct, addr) = Keys(kind, account, address);
        if (Empty(_perPair, pair) is { } strict) return Refused(kind, account, address, strict);
        if (_knownGood.TryGetValue(pair, out _)) return new Decision(true, TimeSpan.Zero);
        // No account named (a request without client_id): no account bucket that anyone could empty for everyone.
        if (((account.Length > 0 ? Empty(_perAccount, acct) : null) ?? Empty(_perAddress, addr)) is { } soft)
            return Refused(kind, account, address, soft);
        return new Decision(true, TimeSpan.Zero);
    }

    public void Failed(Kind kind, string account, string address)
    {
        var (pair, acct, addr) = Keys(kind, account, address);
        _perPair.AttemptAcquire(pair).Dispose();
        if (account.Length > 0) _perAccount.AttemptAcquire(acct).Dispose();
        _perAddress.AttemptAcquire(addr).Dispose();
    }

    /// <summary>A correct secret or password: this address becomes a known-good path of the account for 30 days.</summary>
    public void Succeeded(Kind kind, string account, string address) =>
        _knownGood.Set(Keys(kind, account, address).Pair, true, new MemoryCacheEntryOptions { Size = 1, SlidingExpiration = TimeSpan.FromDays(30) });

    /// <summary>The source address a request is counted under: IPv4, or the /64 of an IPv6 address.</summary>
    public static string Address(HttpContext ctx)
    {
        var ip = ctx.Connection.RemoteIpAddress;
        if (ip is null) return "unknown";
        if (ip.IsIPv4MappedToIPv6) ip = ip.MapToIPv4();
        if (ip.AddressFamily != AddressFamily.InterNetworkV6) return ip.ToString();
        var bytes = ip.GetAddressBytes();
        Array.Clear(bytes, 8, 8);
        return new IPAddress(bytes) + "/64";
    }

    static (string Pair, string Account, string Address) Keys(Kind kind, string account, string address)
    {
        var k = kind == Kind.Client ? "c" : "p";
        if (account.Length > 200) account = account[..200]; // longer names are refused anyway; bound the keys
        return ($"{k}\n{account}\n{address}", $"{k}\n{account}", $"{k}\n\n{address}");
    }

    /// <summary>
    /// Null while the bucket has a permit left; else at most how long until it regains one. (Its statistics,
    /// not a lease of 0 permits: the partitioned limiter does not answer those reliably.)
    /// </summary>
    TimeSpan? Empty(PartitionedRateLimiter<string> limiter, string key) =>
        limiter.GetStatistics(key)?.CurrentAvailablePermits > 0 ? null : _period;

    Decision Refused(Kind kind, string account, string address, TimeSpan retryAfter)
    {
        // The account name as typed (it may be mistyped, never a secret) and the address; no secret or password.
        _log.LogWarning("Throttled {Kind} sign-in for {Account} from {Address} after repeated failures; retry after {Seconds} s",
            kind, account.Length > 64 ? account[..64] : account, address, (int)Math.Ceiling(retryAfter.TotalSeconds));
        return new Decision(false, retryAfter);
    }

    public static string RetryAfterSeconds(TimeSpan retryAfter) =>
        ((int)Math.Max(1, Math.Ceiling(retryAfter.TotalSeconds))).ToString(CultureInfo.InvariantCulture);

    public void Dispose()
    {
        _perPair.Dispose();
        _perAccount.Dispose();
        _perAddress.Dispose();
        _knownGood.Dispose();
    }

    // ---- the token endpoint: OpenIddict authenticates the client, so the throttle hooks into its events ----

    /// <summary>One text for every failed client authentication (unknown client_id, wrong secret, bad assertion…),
    /// so that the answer does not tell which client ids exist (RFC 6749 5.2 invalid_client). The reason is logged.</summary>
    public const string ClientAuthenticationFailed = "Client authentication failed.";

    const string RetryAfterProperty = ".phrfhir_retry_after";

    public static void AddTo(OpenIddictServerBuilder server)
    {
        server.AddEventHandler(RefuseThrottledClients.Descriptor);
        server.AddEventHandler(CountClientAuthentications.Descriptor);
    }

    /// <summary>
    /// A registered public app has no secret to guess and its client_id is no secret: it is never throttled,
    /// so failures sent in its name (e.g. with a made-up client_secret) cannot stop its users' refreshes.
    /// Unknown client ids are throttled like confidential ones, so the throttle does not tell them apart.
    /// </summary>
    static bool Throttled(ClientRegistry clients, string clientId) => clients.Find(clientId) is not { ClientSecret: null, Jwks: null };

    /// <summary>First of all token request checks: a throttled client id and address get no authentication at all.</summary>
    sealed class RefuseThrottledClients(SignInThrottle throttle, ClientRegistry clients) : IOpenIddictServerHandler<OpenIddictServerEvents.ValidateTokenRequestContext>
    {
        public static OpenIddictServerHandlerDescriptor Descriptor { get; } =
            OpenIddictServerHandlerDescriptor.CreateBuilder<OpenIddictServerEvents.ValidateTokenRequestContext>()
                .UseSingletonHandler<RefuseThrottledClients>()
                .SetOrder(int.MinValue + 50_000) // before OpenIddict's first check (ValidateGrantType)
                .SetType(OpenIddictServerHandlerType.Custom)
                .Build();

        public ValueTask HandleAsync(OpenIddictServerEvents.ValidateTokenRequestContext context)
        {
            var http = context.Transaction.GetHttpRequest()!.HttpContext;
            var clientId = context.Request.ClientId ?? "";
            if (!Throttled(clients, clientId)) return default;
            var decision = throttle.Check(Kind.Client, clientId, Address(http));
            if (!decision.Allowed)
            {
                context.Transaction.SetProperty(RetryAfterProperty, RetryAfterSeconds(decision.RetryAfter));
                context.Reject(Errors.TemporarilyUnavailable,
                    $"Too many failed client authentications from this address: try again in {RetryAfterSeconds(decision.RetryAfter)} seconds.");
            }
            return default;
        }
    }

    /// <summary>
    /// On every token response: a refusal above becomes 429 with Retry-After; a failed client authentication
    /// is counted and answered with one text; an authenticated success (secret or assertion) marks a known-good path.
    /// </summary>
    sealed class CountClientAuthentications(SignInThrottle throttle, ClientRegistry clients) : IOpenIddictServerHandler<OpenIddictServerEvents.ApplyTokenResponseContext>
    {
        public static OpenIddictServerHandlerDescriptor Descriptor { get; } =
            OpenIddictServerHandlerDescriptor.CreateBuilder<OpenIddictServerEvents.ApplyTokenResponseContext>()
                .UseSingletonHandler<CountClientAuthentications>()
                .SetOrder(OpenIddictServerAspNetCoreHandlers.AttachHttpResponseCode<OpenIddictServerEvents.ApplyTokenResponseContext>.Descriptor.Order + 1)
                .SetType(OpenIddictServerHandlerType.Custom)
                .Build();

        public ValueTask HandleAsync(OpenIddictServerEvents.ApplyTokenResponseContext context)
        {
            var http = context.Transaction.GetHttpRequest()!.HttpContext;
            var request = context.Transaction.Request;
            var clientId = request?.ClientId ?? "";
            if (context.Transaction.GetProperty<string>(RetryAfterProperty) is { } retryAfter)
            {
                http.Response.StatusCode = StatusCodes.Status429TooManyRequests;
                http.Response.Headers.RetryAfter = retryAfter;
            }
            else if (context.Response.Error == Errors.InvalidClient)
            {
                throttle._log.LogInformation("Failed client authentication for {ClientId} from {Address}: {Reason}",
                    clientId.Length > 64 ? clientId[..64] : clientId, Address(http), context.Response.ErrorDescription);
                if (Throttled(clients, clientId)) throttle.Failed(Kind.Client, clientId, Address(http));
                context.Response.ErrorDescription = ClientAuthenticationFailed;
                context.Response.ErrorUri = null;
            }
            else if (string.IsNullOrEmpty(context.Response.Error) && clientId.Length > 0
                     && (!string.IsNullOrEmpty(request?.ClientSecret) || !string.IsNullOrEmpty(request?.ClientAssertion)))
                throttle.Succeeded(Kind.Client, clientId, Address(http));
            return default;
        }
    }
}

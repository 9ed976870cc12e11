using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using PhrFhir.Storage;

namespace PhrFhir.Server.Security;

/// <summary>
/// Mutual TLS for institution clients (IHE ATNA node authentication; RFC 8705 certificate-bound access
/// tokens). Optional: with <c>Https:Certificate:Path</c> (a PKCS#12 file) and <c>Https:Certificate:Password</c>
/// the server's https URLs present that certificate and ask clients for theirs. A client registered with
/// <c>certificateThumbprints</c> (SHA-256, hex) gets a token only over a TLS connection that presented one
/// of them; the token carries <c>cnf.x5t#S256</c>, and every request with such a token must come over a
/// connection presenting that same certificate (401 otherwise). Without the configuration the server
/// stays on loopback HTTP.
/// </summary>
public static class CertificateBinding
{
    const string ConfirmationClaim = "cnf";
    const string Thumbprint = "x5t#S256";

    public static void AddHttps(WebApplicationBuilder builder)
    {
        var path = builder.Configuration["Https:Certificate:Path"];
        if (string.IsNullOrEmpty(path)) return;
        var certificate = X509CertificateLoader.LoadPkcs12FromFile(Path.GetFullPath(path), builder.Configuration["Https:Certificate:Password"]);
        builder.WebHost.UseKestrelHttpsConfiguration(); // the slim builder leaves https:// URLs out unless asked
        builder.WebHost.ConfigureKestrel(k => k.ConfigureHttpsDefaults(https =>
        {
            https.ServerCertificate = certificate;
            // Asked for, not required: persons' apps and discovery need no certificate.
            https.ClientCertificateMode = ClientCertificateMode.AllowCertificate;
            // Trust is not a CA chain here: each client pins its own certificate's SHA-256 thumbprint in
            // PHRFHIR_CLIENTS (like RFC 8705 self_signed_tls_client_auth), checked below and per request.
            https.AllowAnyClientCertificate();
        }));
    }

    /// <summary>The RFC 8705 confirmation value of a certificate: base64url of the SHA-256 of its DER bytes.</summary>
    public static string X5tS256(X509Certificate2 certificate) => Base64UrlEncoder.Encode(SHA256.HashData(certificate.RawData));

    /// <summary>True when the certificate is one of the registered ones (hex thumbprints; colons and spaces ignored).</summary>
    public static bool IsRegistered(X509Certificate2 certificate, IEnumerable<string> thumbprints)
    {
        var presented = SHA256.HashData(certificate.RawData);
        foreach (var t in thumbprints)
        {
            var hex = t.Replace(":", "").Replace(" ", "");
            if (hex.Length == 64 && CryptographicOperations.FixedTimeEquals(Convert.FromHexString(hex), presented)) return true;
        }
        return false;
    }

    /// <summary>The cnf claim a bound token carries (a JSON object, as RFC 7800 defines it).</summary>
    public static System.Security.Claims.Claim Confirmation(X509Certificate2 certificate) =>
        new(ConfirmationClaim, JsonSerializer.Serialize(new Dictionary<string, string> { [Thumbprint] = X5tS256(certificate) }), JsonClaimValueTypes.Json);

    /// <summary>After authentication: a certificate-bound token is accepted only with its certificate on the connection.</summary>
    public static void Use(WebApplication app) => app.Use(async (ctx, next) =>
    {
        if (ctx.User.FindFirst(ConfirmationClaim)?.Value is { } cnf)
        {
            string? bound = null;
            try
            {
                using var doc = JsonDocument.Parse(cnf);
                if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty(Thumbprint, out var x5t)) bound = x5t.GetString();
            }
            catch (JsonException) { }
            var presented = ctx.Connection.ClientCertificate;
            if (bound is null || presented is null || !CryptographicOperations.FixedTimeEquals(
                    System.Text.Encoding.ASCII.GetBytes(X5tS256(presented)), System.Text.Encoding.ASCII.GetBytes(bound)))
            {
                ctx.Response.Headers.WWWAuthenticate = "Bearer error=\"invalid_token\"";
                throw new FhirError(HttpStatusCode.Unauthorized, OperationOutcome.IssueType.Login,
                    "This token is bound to a client certificate (RFC 8705): send it over TLS with that certificate. (このトークンはクライアント証明書に紐付いています)");
            }
        }
        await next(ctx);
    });
}

using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.IdentityModel.Tokens;

namespace PhrFhir.Server.Security;

/// <summary>
/// Every key of the embedded authorisation server, persisted so that tokens, codes, refresh tokens and
/// login sessions survive a restart and are understood by every server process given the same files
/// (README "Authorisation", docs/auth.md "Keys"):
/// <list type="bullet">
/// <item>the signing key (access and id tokens, codes, refresh tokens): <c>Auth:SigningKeyFile</c>, default <c>data/auth/signing-key.pem</c>;</item>
/// <item>the encryption key (codes and refresh tokens are encrypted JWTs): <c>Auth:EncryptionKeyFile</c>, default <c>encryption-key.pem</c> beside the signing key;</item>
/// <item>retired keys, still accepted but never used for new tokens: <c>Auth:RetiredKeyFiles:0…</c> (rotation);</item>
/// <item>the ASP.NET Data Protection key ring (login cookie, antiforgery): <c>data-protection-keys/</c> beside the signing key,
/// encrypted at rest with <c>Auth:KeyProtectionCertificate:Path</c> (PKCS#12) when configured.</item>
/// </list>
/// A key file that does not exist is created once (RSA 2048, PKCS#8 PEM, mode 0600).
/// </summary>
public sealed class AuthorizationKeys
{
    public required RsaSecurityKey Signing { get; init; }
    public required RsaSecurityKey Encryption { get; init; }
    /// <summary>Keys of an earlier rotation: they verify and decrypt what they issued until it expires, and issue nothing.</summary>
    public required IReadOnlyList<RsaSecurityKey> Retired { get; init; }

    /// <summary>Every key a token of ours may be signed with (JwtBearer and OpenIddict validation).</summary>
    public IEnumerable<SecurityKey> Verifying => [Signing, .. Retired];

    public static AuthorizationKeys Load(IConfiguration config)
    {
        var signingFile = Path.GetFullPath(config["Auth:SigningKeyFile"] ?? Path.Combine("data", "auth", "signing-key.pem"));
        return new AuthorizationKeys
        {
            Signing = LoadOrCreate(signingFile),
            Encryption = LoadOrCreate(Path.GetFullPath(config["Auth:EncryptionKeyFile"] ?? Path.Combine(Path.GetDirectoryName(signingFile)!, "encryption-key.pem"))),
            Retired = [.. (config.GetSection("Auth:RetiredKeyFiles").Get<string[]>() ?? []).Select(f => Load(Path.GetFullPath(f)))],
        };
    }

    /// <summary>The directory of the signing key: the Data Protection key ring lives beside it.</summary>
    public static string Directory(IConfiguration config) =>
        Path.GetDirectoryName(Path.GetFullPath(config["Auth:SigningKeyFile"] ?? Path.Combine("data", "auth", "signing-key.pem")))!;

    static RsaSecurityKey Load(string path)
    {
        if (!File.Exists(path)) throw new InvalidOperationException($"The key file {path} does not exist.");
        var rsa = RSA.Create();
        rsa.ImportFromPem(File.ReadAllText(path));
        return Key(rsa);
    }

    /// <summary>
    /// Reads the key, or creates it once. Two processes starting together on one directory agree on one
    /// key: the new key is written to a private temporary file and moved into place only if no key is there yet.
    /// </summary>
    static RsaSecurityKey LoadOrCreate(string path)
    {
        if (File.Exists(path)) return Load(path);
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var rsa = RSA.Create(2048);
        var temporary = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var writer = new StreamWriter(temporary, System.Text.Encoding.ASCII, options)) writer.Write(rsa.ExportPkcs8PrivateKeyPem());
        try { File.Move(temporary, path, overwrite: false); }
        catch (IOException) when (File.Exists(path)) { File.Delete(temporary); } // another process was first: use its key
        return Load(path);
    }

    static RsaSecurityKey Key(RSA rsa) => new(rsa) { KeyId = Convert.ToHexString(SHA256.HashData(rsa.ExportRSAPublicKey()))[..16] };

    /// <summary>
    /// ASP.NET Data Protection (the person's login cookie and the antiforgery tokens of the sign-in pages):
    /// its key ring in a 0700 directory beside the signing key, so sessions survive restarts and every process
    /// given that directory reads the others' cookies. With <c>Auth:KeyProtectionCertificate:Path</c> the keys
    /// are encrypted at rest with that certificate. Without it they are protected by the file permissions alone,
    /// like the PEM keys beside them: the framework's "No XML encryptor configured" warning, logged when a key
    /// is created (first start, then every 90 days), says exactly that and is left visible on purpose.
    /// </summary>
    public static void AddDataProtection(WebApplicationBuilder builder)
    {
        var directory = Path.Combine(Directory(builder.Configuration), "data-protection-keys");
        System.IO.Directory.CreateDirectory(directory);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var dataProtection = builder.Services.AddDataProtection().PersistKeysToFileSystem(new DirectoryInfo(directory)).SetApplicationName("PhrFhir");
        if (builder.Configuration["Auth:KeyProtectionCertificate:Path"] is { Length: > 0 } certificatePath)
        {
            var certificate = X509CertificateLoader.LoadPkcs12FromFile(Path.GetFullPath(certificatePath), builder.Configuration["Auth:KeyProtectionCertificate:Password"]);
            dataProtection.ProtectKeysWithCertificate(certificate).UnprotectKeysWithAnyCertificate(certificate);
        }
    }
}

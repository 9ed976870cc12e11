using System.Security.Cryptography;
using System.Text;
using Konscious.Security.Cryptography;

namespace PhrFhir.Server.Sharing;

/// <summary>
/// The secrets of a SMART Health Link (SHL STU1 "Creating a SHLink"): the id in the manifest URL, the
/// content key, location tokens, and the passcode's hash. Randomness from the OS CSPRNG; the passcode is
/// hashed with Argon2id (Konscious.Security.Cryptography) and compared in constant time.
/// </summary>
public static class LinkSecrets
{
    const string Alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    /// <summary>
    /// 43 characters of [A-Za-z0-9]: 43 × log2(62) ≈ 256 bits (SHL: the manifest URL carries at least 256
    /// bits of entropy). Also a valid FHIR id (no '_' as base64url would have), so the folder List has it.
    /// </summary>
    public static string NewId() => RandomNumberGenerator.GetString(Alphanumeric, 43);

    /// <summary>SHL: `key` is 32 random bytes, base64url-encoded (43 characters) in the payload.</summary>
    public static byte[] NewKey() => RandomNumberGenerator.GetBytes(32);

    // OWASP Password Storage Cheat Sheet, Argon2id minimum: m = 19 MiB, t = 2, p = 1.
    const int MemoryKib = 19 * 1024, Iterations = 2, Parallelism = 1;

    public static string HashPasscode(string passcode)
    {
        var salt = RandomNumberGenerator.GetBytes(16);
        return $"argon2id${MemoryKib}${Iterations}${Parallelism}${Convert.ToBase64String(salt)}${Convert.ToBase64String(Derive(passcode, salt, MemoryKib, Iterations, Parallelism))}";
    }

    public static bool PasscodeMatches(string stored, string? passcode)
    {
        if (passcode is null) return false;
        var parts = stored.Split('$');
        if (parts.Length != 6 || parts[0] != "argon2id") return false;
        var expected = Convert.FromBase64String(parts[5]);
        var actual = Derive(passcode, Convert.FromBase64String(parts[4]), int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture),
            int.Parse(parts[2], System.Globalization.CultureInfo.InvariantCulture), int.Parse(parts[3], System.Globalization.CultureInfo.InvariantCulture));
        return CryptographicOperations.FixedTimeEquals(expected, actual);
    }

    static byte[] Derive(string passcode, byte[] salt, int memoryKib, int iterations, int parallelism)
    {
        using var argon = new Argon2id(Encoding.UTF8.GetBytes(passcode))
        {
            Salt = salt,
            MemorySize = memoryKib,
            Iterations = iterations,
            DegreeOfParallelism = parallelism,
        };
        return argon.GetBytes(32);
    }

    /// <summary>
    /// A compact JWE of <paramref name="content"/> as SHL files are (alg "dir", enc "A256GCM", cty the content
    /// type), by jose-jwt. Not compressed (SHL: zip "DEF" is optional): JOSE libraries cap what they inflate
    /// (jose-jwt and npm jose at 250 KB by default; jose cannot inflate at all on Node.js 20), and a checkup
    /// PDF is larger — an uncompressed file decrypts in every viewer.
    /// </summary>
    public static string Encrypt(byte[] content, byte[] key, string contentType) =>
        Jose.JWT.EncodeBytes(content, key, Jose.JweAlgorithm.DIR, Jose.JweEncryption.A256GCM, null,
            new Dictionary<string, object> { ["cty"] = contentType });
}

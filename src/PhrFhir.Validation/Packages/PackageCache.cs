using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;

namespace PhrFhir.Validation.Packages;

/// <summary>Where a restored package came from, kept beside it in the cache.</summary>
/// <param name="Source">The folder, registry or URL it was taken from.</param>
/// <param name="Identity">What the package says it is (differs from the cache name for a build standing in).</param>
/// <param name="Sha256">The tarball's SHA-256, when it came as one.</param>
/// <param name="Restored">When.</param>
public sealed record RestoreRecord(string Source, string Identity, string? Sha256, DateTimeOffset Restored);

/// <summary>
/// The FHIR package cache: <c>&lt;root&gt;/&lt;name&gt;#&lt;version&gt;/package/</c>, the layout SUSHI, the
/// IG Publisher and FHIR servers share. A package is installed whole or not at all: it is unpacked
/// into a temporary folder inside the cache and renamed into place. Beside <c>package/</c> we keep
/// <c>phrfhir-restore.json</c> saying where it came from.
/// </summary>
internal sealed class PackageCache(string root)
{
    private const string RecordFile = "phrfhir-restore.json";
    private static readonly JsonSerializerOptions RecordJson = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public string Root { get; } = root;

    /// <summary>The <c>package/</c> folder of a package in the cache, or null when it is not there.</summary>
    public string? PackageFolder(PackageReference package)
    {
        var dir = Path.Combine(Root, package.ToString(), "package");
        return Directory.Exists(dir) ? dir : null;
    }

    /// <summary>Where a cached package came from; null when something else put it there.</summary>
    public RestoreRecord? RecordOf(PackageReference package)
    {
        var file = Path.Combine(Root, package.ToString(), RecordFile);
        try { return File.Exists(file) ? JsonSerializer.Deserialize<RestoreRecord>(File.ReadAllBytes(file), RecordJson) : null; }
        catch (JsonException) { return null; }
    }

    /// <summary>Unpacks a package tarball (npm layout: every file under <c>package/</c>) and installs it.</summary>
    /// <returns>The identity the package states, checked by <paramref name="accept"/> before it is installed.</returns>
    /// <exception cref="InvalidDataException">Not a gzip'd tar, an entry outside <c>package/</c>, or refused by <paramref name="accept"/>.</exception>
    public PackageReference InstallTarball(PackageReference package, byte[] tgz, RestoreRecord record, Func<PackageReference, string?> accept) =>
        Install(package, record, accept, target =>
        {
            using var gz = new GZipStream(new MemoryStream(tgz), CompressionMode.Decompress);
            using var tar = new TarReader(gz);
            while (tar.GetNextEntry() is { } entry)
            {
                // Regular files only: links and devices have no place in a package.
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                var name = entry.Name.Replace('\\', '/');
                if (!name.StartsWith("package/", StringComparison.Ordinal)) continue;
                var path = Path.GetFullPath(Path.Combine(target, name));
                if (!path.StartsWith(Path.Join(target, "package") + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                    throw new InvalidDataException($"the tarball entry '{entry.Name}' points outside the package");
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                entry.ExtractToFile(path, overwrite: true);
            }
        });

    /// <summary>Copies an unpacked package (a folder holding package.json, or a flat folder of resources) and installs it.</summary>
    public PackageReference InstallFolder(PackageReference package, string folder, RestoreRecord record, Func<PackageReference, string?> accept) =>
        Install(package, record, accept, target =>
        {
            var into = Path.Combine(target, "package");
            foreach (var file in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories))
            {
                var dest = Path.Combine(into, Path.GetRelativePath(folder, file));
                Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
                File.Copy(file, dest);
            }
        });

    private PackageReference Install(PackageReference package, RestoreRecord record, Func<PackageReference, string?> accept, Action<string> fill)
    {
        Directory.CreateDirectory(Root);
        var temp = Path.Combine(Root, $".restore-{package}-{Guid.NewGuid():N}");
        try
        {
            try { fill(temp); }
            catch (Exception ex) when (ex is IOException or FormatException or InvalidDataException)
            {
                throw new InvalidDataException($"it cannot be unpacked ({ex.Message})", ex);
            }
            var identity = FolderSource.Identify(Path.Combine(temp, "package"))?.Identity
                ?? throw new InvalidDataException("it holds no package/package.json and no ImplementationGuide");
            if (accept(identity) is { } refusal) throw new InvalidDataException(refusal);
            File.WriteAllBytes(Path.Combine(temp, RecordFile), JsonSerializer.SerializeToUtf8Bytes(record with { Identity = identity.ToString() }, RecordJson));
            var final = Path.Combine(Root, package.ToString());
            try { Directory.Move(temp, final); }
            catch (IOException) when (Directory.Exists(final)) { } // restored meanwhile by another process: keep that one
            return identity;
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }
}

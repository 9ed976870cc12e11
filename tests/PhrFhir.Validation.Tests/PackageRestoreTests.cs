using System.Formats.Tar;
using System.IO.Compression;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using PhrFhir.Validation.Packages;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Filling the FHIR package cache: from a folder (../shared/ref as CI uses it), from a registry
/// speaking the npm protocol and from a direct tarball URL (both served by a real HTTP server on
/// loopback, with tarballs built here from ../shared/ref), with every tarball checked.
/// </summary>
public sealed class PackageRestoreTests : IDisposable
{
    private static readonly PackageReference JpCore = new("jp-core.r4", "1.1.2");
    private static readonly PackageReference JpCoreUrl = new("jp-core.r4", "1.1.2-url");
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("phrfhir-restore-");

    private string Cache => Path.Combine(_work.FullName, "cache");

    public void Dispose() => _work.Delete(recursive: true);

    private static void SkipWithoutReference() => Skip.If(ValidatorFixture.ReferenceFolder is null, ValidatorFixture.NoReference);

    private static PackageManifest Shipped => PackageManifest.Load(PackageManifest.DefaultPath);

    /// <summary>A manifest of one family holding one package, fetched only from <paramref name="downloads"/> besides the sources.</summary>
    private static PackageManifest OneFamily(PackageReference package, string? sha256 = null, params string[] downloads) => new()
    {
        Families = new Dictionary<string, ManifestFamily> { ["test"] = new("test", [package], []) },
        Packages = new Dictionary<PackageReference, ManifestPackage> { [package] = new(package, downloads, sha256, []) },
    };

    private Task<IReadOnlyList<PackageRestoreResult>> RestoreAsync(PackageManifest manifest, params string[] sources) =>
        PackageRestore.RestoreAsync(manifest, new PackageOptions { Sources = sources, Cache = Cache, HttpTimeout = TimeSpan.FromSeconds(20) }, null, NullLogger.Instance);

    [SkippableFact]
    public async Task Restoring_from_a_folder_puts_every_package_under_its_official_name_and_version()
    {
        SkipWithoutReference();
        var results = await RestoreAsync(Shipped, ValidatorFixture.ReferenceFolder!);
        Assert.All(results, r => Assert.True(r.Available, r.Describe()));
        // Every package but our own, which is read where it ships (profiles/phrfhir.r4, "bundled"), never copied.
        Assert.True(results.All(r => r.Restored || r.Source == "bundled with the server"));
        Assert.Equal("bundled with the server", results.Single(r => r.Package.Name == "phrfhir.r4").Source);

        // An official package as it is; JAMI's temp-versioned build and a SUSHI build under the official id.
        Assert.True(File.Exists(Path.Combine(Cache, "jp-core.r4#1.1.2", "package", "package.json")));
        Assert.True(File.Exists(Path.Combine(Cache, "jp-eCheckupReport.r4#1.1.3", "package", "Bundle-Bundle-eCheckupReport-Sample-01.json")));
        Assert.True(File.Exists(Path.Combine(Cache, "jp-eCheckupReport.r4#1.5.0", "package", "ImplementationGuide-eCheckupReport.json")));
        Assert.True(File.Exists(Path.Combine(Cache, "jp-core.r4#1.1.2-url", "package", "package.json")), "the .tgz is unpacked");
        var record = JsonDocument.Parse(File.ReadAllText(Path.Combine(Cache, "jp-eCSCLINS.r4#1.5.2", "phrfhir-restore.json"))).RootElement;
        Assert.Equal("jp-eCSCLINS.r4#1.x.x-temp", record.GetProperty("identity").GetString());
        Assert.Equal(Path.Combine(ValidatorFixture.ReferenceFolder!, "jp-documents", "clins", "package"), record.GetProperty("source").GetString());

        // Second start: everything is in the cache; no source is touched (none given now) and the origin is remembered.
        var again = await RestoreAsync(Shipped);
        Assert.All(again, r => Assert.True(r.Available && !r.Restored, r.Describe()));
        Assert.StartsWith(ValidatorFixture.ReferenceFolder!, again.Single(r => r.Package == JpCoreUrl).Source);
    }

    [SkippableFact]
    public async Task A_tarball_whose_sha256_differs_from_the_manifest_is_refused()
    {
        SkipWithoutReference();
        // The same package re-compressed: well-formed, same content, other bytes than the publisher's.
        var folder = Directory.CreateDirectory(Path.Combine(_work.FullName, "mirror")).FullName;
        var original = Path.Combine(ValidatorFixture.ReferenceFolder!, "jp-core", "archives", "jp-core.r4-1.1.2-url.tgz");
        await File.WriteAllBytesAsync(Path.Combine(folder, "jp-core.r4-1.1.2-url.tgz"), Recompress(await File.ReadAllBytesAsync(original)));

        var manifest = Shipped;
        var refused = (await PackageRestore.RestoreAsync(manifest, new PackageOptions { Sources = [folder], Downloads = false, Cache = Cache }, ["jp-clins"], NullLogger.Instance))
            .Single(r => r.Package == JpCoreUrl);
        Assert.False(refused.Available);
        Assert.Contains("SHA-256", refused.Describe());
        Assert.Contains(folder, refused.Describe());
        Assert.False(Directory.Exists(Path.Combine(Cache, "jp-core.r4#1.1.2-url")));

        // The publisher's bytes pass.
        var restored = await RestoreAsync(OneFamily(JpCoreUrl, manifest.Packages[JpCoreUrl].Sha256), original);
        Assert.True(restored.Single().Available, restored.Single().Describe());
    }

    [SkippableFact]
    public async Task Restoring_from_a_registry_checks_the_shasum_and_unpacks_the_tarball()
    {
        SkipWithoutReference();
        var tarball = Tarball(Path.Combine(ValidatorFixture.ReferenceFolder!, "jp-core", "jp-core.r4-1.1.2", "package"));
        using var registry = new LocalRegistry();
        registry.Publish(JpCore, tarball);

        var result = (await RestoreAsync(OneFamily(JpCore), registry.BaseUrl)).Single();
        Assert.True(result.Available, result.Describe());
        Assert.StartsWith(registry.BaseUrl, result.Source);
        Assert.True(File.Exists(Path.Combine(Cache, "jp-core.r4#1.1.2", "package", "StructureDefinition-jp-patient.json")));
        Assert.Contains("/jp-core.r4", registry.Requests);
    }

    [SkippableFact]
    public async Task A_corrupted_tarball_is_refused_and_the_next_source_is_tried()
    {
        SkipWithoutReference();
        var tarball = Tarball(Path.Combine(ValidatorFixture.ReferenceFolder!, "jp-core", "jp-core.r4-1.1.2", "package"));
        using var corrupt = new LocalRegistry();
        var damaged = (byte[])tarball.Clone();
        damaged[damaged.Length / 2] ^= 0xFF;
        corrupt.Publish(JpCore, damaged, shasumOf: tarball); // the registry's shasum is the true one; the bytes are not
        using var good = new LocalRegistry();
        good.Publish(JpCore, tarball);

        var onlyCorrupt = (await RestoreAsync(OneFamily(JpCore), corrupt.BaseUrl)).Single();
        Assert.False(onlyCorrupt.Available);
        Assert.Contains("SHA-1", onlyCorrupt.Describe());
        Assert.False(Directory.Exists(Path.Combine(Cache, "jp-core.r4#1.1.2")), "nothing of a refused package is left in the cache");

        // Cut short in transit but with a matching shasum (a registry serving a broken upload): unpacking fails.
        using var truncated = new LocalRegistry();
        truncated.Publish(JpCore, tarball[..(tarball.Length / 2)]);
        var broken = (await RestoreAsync(OneFamily(JpCore), truncated.BaseUrl)).Single();
        Assert.False(broken.Available);
        Assert.StartsWith(truncated.BaseUrl + ": refused: it cannot be unpacked", broken.Tried.Single());
        Assert.Empty(Directory.GetFileSystemEntries(Cache)); // no half-unpacked temporary folder either

        var thenGood = (await RestoreAsync(OneFamily(JpCore), corrupt.BaseUrl, good.BaseUrl)).Single();
        Assert.True(thenGood.Available, thenGood.Describe());
        Assert.StartsWith(good.BaseUrl, thenGood.Source);
    }

    [Fact]
    public async Task An_unreachable_source_and_a_registry_without_the_package_are_reported_by_name()
    {
        var closed = $"http://127.0.0.1:{FreePort()}";
        using var empty = new LocalRegistry();
        var result = (await RestoreAsync(OneFamily(JpCore), closed, empty.BaseUrl)).Single();
        Assert.False(result.Available);
        Assert.Equal(2, result.Tried.Count);
        Assert.StartsWith(closed + ": unreachable", result.Tried[0]);
        Assert.Equal(empty.BaseUrl + ": not in this registry", result.Tried[1]);
        Assert.Contains("jp-core.r4#1.1.2 is not in the package cache", result.Describe());
    }

    [SkippableFact]
    public async Task A_direct_tarball_url_is_tried_after_the_sources_and_must_be_the_package_asked_for()
    {
        SkipWithoutReference();
        using var publisher = new LocalRegistry();
        publisher.Serve("/fhir/core/jp-core.r4-1.1.2-snap.tgz", Tarball(Path.Combine(ValidatorFixture.ReferenceFolder!, "jp-core", "jp-core.r4-1.1.2", "package")));
        publisher.Serve("/wrong.tgz", await File.ReadAllBytesAsync(Path.Combine(ValidatorFixture.ReferenceFolder!, "jp-core", "archives", "jp-core.r4-1.1.2-clins.tgz")));

        var wrong = (await RestoreAsync(OneFamily(JpCore, null, publisher.BaseUrl + "/wrong.tgz"))).Single();
        Assert.False(wrong.Available);
        Assert.Contains("it is jp-core.r4#1.1.2-clins, not jp-core.r4#1.1.2", wrong.Describe());

        var right = (await RestoreAsync(OneFamily(JpCore, null, publisher.BaseUrl + "/wrong.tgz", publisher.BaseUrl + "/fhir/core/jp-core.r4-1.1.2-snap.tgz"))).Single();
        Assert.True(right.Available, right.Describe());
        Assert.Equal(publisher.BaseUrl + "/fhir/core/jp-core.r4-1.1.2-snap.tgz", right.Source);
    }

    /// <summary>An npm-layout tarball (<c>package/…</c>) of a package folder.</summary>
    private static byte[] Tarball(string packageFolder)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true))
            TarFile.CreateFromDirectory(packageFolder, gz, includeBaseDirectory: true);
        return ms.ToArray();
    }

    private static byte[] Recompress(byte[] tgz)
    {
        using var input = new GZipStream(new MemoryStream(tgz), CompressionMode.Decompress);
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.SmallestSize, leaveOpen: true)) input.CopyTo(gz);
        return ms.ToArray();
    }

    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    /// <summary>
    /// A FHIR package registry on loopback (npm protocol: <c>GET /{name}</c> → <c>versions[v].dist.tarball</c>
    /// and <c>shasum</c>, then <c>GET</c> the tarball), also serving plain files for direct URLs.
    /// </summary>
    private sealed class LocalRegistry : IDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly Dictionary<string, byte[]> _files = new(StringComparer.Ordinal);
        private readonly Task _loop;

        public LocalRegistry()
        {
            BaseUrl = $"http://127.0.0.1:{FreePort()}";
            _listener.Prefixes.Add(BaseUrl + "/");
            _listener.Start();
            _loop = Task.Run(ServeAsync);
        }

        public string BaseUrl { get; }

        public List<string> Requests { get; } = [];

        public void Serve(string path, byte[] bytes)
        {
            lock (_files) _files[path] = bytes;
        }

        public void Publish(PackageReference package, byte[] tarball, byte[]? shasumOf = null)
        {
            var path = $"/{package.Name}/-/{package.Name}-{package.Version}.tgz";
            Serve(path, tarball);
            Serve("/" + package.Name, Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new
            {
                name = package.Name,
                versions = new Dictionary<string, object>
                {
                    [package.Version] = new
                    {
                        name = package.Name,
                        version = package.Version,
                        dist = new { shasum = Convert.ToHexStringLower(SHA1.HashData(shasumOf ?? tarball)), tarball = BaseUrl + path },
                    },
                },
            })));
        }

        private async Task ServeAsync()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext ctx;
                try { ctx = await _listener.GetContextAsync(); }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
                var path = ctx.Request.Url!.AbsolutePath;
                byte[]? body;
                lock (_files)
                {
                    Requests.Add(path);
                    _files.TryGetValue(path, out body);
                }
                ctx.Response.StatusCode = body is null ? 404 : 200;
                if (body is not null) await ctx.Response.OutputStream.WriteAsync(body);
                ctx.Response.Close();
            }
        }

        public void Dispose()
        {
            _listener.Stop();
            _listener.Close();
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
    }
}

using System.Collections.Concurrent;
using System.Xml;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Hl7.Fhir.Specification.Source;

namespace PhrFhir.Validation.Cache;

/// <summary>
/// Resolves canonicals against one <see cref="ConformancePack"/>: a dictionary lookup, then a
/// positional read and a parse the first time a resource is asked for. Misses cost a dictionary
/// lookup, which is what made the naive resolver chain slow (every miss fell through to
/// specification.zip). Each family has its own instance, because the validator's schema compiler
/// applies corrections to the StructureDefinition objects it is given.
/// </summary>
internal sealed class PackSource : IAsyncResourceResolver, IResourceResolver
{
    // Conformance resources from published packages: read what is there, never fail on a quirk.
    private static readonly FhirJsonDeserializer Json = new(new DeserializerSettings().UsingMode(DeserializationMode.Ostrich));
    private static readonly FhirXmlDeserializer Xml = new(new DeserializerSettings().UsingMode(DeserializationMode.Ostrich));

    private readonly ConformancePack _pack;
    private readonly Dictionary<string, PackEntry[]> _byUrl;
    private readonly ConcurrentDictionary<PackEntry, Lazy<Resource?>> _parsed = new();

    /// <param name="pack">The pack to resolve against.</param>
    public PackSource(ConformancePack pack)
    {
        _pack = pack;
        _byUrl = pack.Entries.Where(e => e.Url is not null)
            .GroupBy(e => e.Url!, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
    }

    public ConformancePack Pack => _pack;

    /// <summary>
    /// Finds the entry for <c>url</c> or <c>url|version</c>; the first one wins when unversioned. A version
    /// the pack does not hold resolves to the version it holds, as the HL7 validator does (the
    /// <c>|x.x.x-instance</c> build placeholders of eCheckup 1.5.0, core canonicals asked for as
    /// <c>url|4.0.1</c> whose business version differs, e.g. <c>v3-NullFlavor</c> 2018-08-12):
    /// <see cref="DocumentValidator"/> tells the sender with a warning naming both versions
    /// (<see cref="FamilyValidator.OtherVersions"/>). Only a url nobody defines stays unresolved.
    /// </summary>
    public PackEntry? Find(string canonical)
    {
        var bar = canonical.IndexOf('|');
        var url = bar < 0 ? canonical : canonical[..bar];
        var version = bar < 0 ? null : canonical[(bar + 1)..];
        var hash = url.IndexOf('#');
        if (hash >= 0) url = url[..hash];
        if (!_byUrl.TryGetValue(url, out var entries)) return null;
        if (version is null) return entries[0];
        return entries.FirstOrDefault(e => e.Version == version) ?? entries[0];
    }

    /// <summary>The version this pack holds of a canonical's url (null when it has none or the url is unknown).</summary>
    public string? VersionOf(string url) => _byUrl.TryGetValue(url, out var entries) ? entries[0].Version : null;

    /// <summary>Whether the pack holds the canonical with exactly the version it names (any version when it names none).</summary>
    public bool ContainsExactly(string canonical)
    {
        var bar = canonical.IndexOf('|');
        if (bar < 0) return _byUrl.ContainsKey(canonical);
        return _byUrl.TryGetValue(canonical[..bar], out var entries) && entries.Any(e => e.Version == canonical[(bar + 1)..]);
    }

    public bool Contains(string canonical) => Find(canonical) is not null;

    public Resource? Get(PackEntry entry) =>
        _parsed.GetOrAdd(entry, e => new Lazy<Resource?>(() => Parse(_pack.Read(e), e.Xml))).Value;

    public IEnumerable<Resource> All(string? resourceType = null) =>
        _pack.Entries.Where(e => resourceType is null || e.ResourceType == resourceType)
            .Select(Get).OfType<Resource>();

    internal static Resource? Parse(byte[] bytes, bool xml)
    {
        try
        {
            if (!xml)
            {
                var reader = new System.Text.Json.Utf8JsonReader(bytes);
                return Json.DeserializeResource(ref reader);
            }
            using var stream = new MemoryStream(bytes);
            using var xr = XmlReader.Create(stream, new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit });
            return Xml.DeserializeResource(xr);
        }
        catch (DeserializationFailedException e)
        {
            return e.PartialResult as Resource;
        }
    }

    public Resource? ResolveByCanonicalUri(string uri) => Find(uri) is { } e ? Get(e) : null;

    public Resource? ResolveByUri(string uri) => ResolveByCanonicalUri(uri);

    public Task<Resource?> ResolveByCanonicalUriAsync(string uri) => System.Threading.Tasks.Task.FromResult(ResolveByCanonicalUri(uri));

    public Task<Resource?> ResolveByUriAsync(string uri) => System.Threading.Tasks.Task.FromResult(ResolveByUri(uri));
}

using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Xml;

namespace PhrFhir.Validation.Cache;

/// <summary>
/// FHIR R4 core definitions, split out of <c>specification.zip</c> into a pack once. Looking a
/// definition up in the zip streams a 20 MB XML bundle each time (0.5–10 s per lookup, measured);
/// the pack answers from an index and reads only the resource asked for.
/// </summary>
internal static class CoreDefinitions
{
    private const string Format = "core-pack-1";

    // The bundles of specification.zip that hold what validation resolves.
    private static readonly string[] Bundles =
    [
        "profiles-types.xml", "profiles-resources.xml", "profiles-others.xml", "extension-definitions.xml",
        "valuesets.xml", "v3-codesystems.xml", "v2-tables.xml",
    ];

    private static readonly HashSet<string> Kept = ["StructureDefinition", "ValueSet", "CodeSystem"];

    public static string KeyFor(string specificationZip)
    {
        using var stream = File.OpenRead(specificationZip);
        return ConformancePack.KeyOf(Format, Convert.ToHexString(SHA256.HashData(stream)));
    }

    /// <summary>Opens the cached core pack, building it first when it is missing or stale.</summary>
    public static ConformancePack OpenOrBuild(string specificationZip, string cacheFolder)
    {
        var key = KeyFor(specificationZip);
        var path = Path.Combine(cacheFolder, "r4-core.pack");
        var pack = ConformancePack.TryOpen(path, key);
        if (pack is not null) return pack;
        ConformancePack.Write(path, key, Extract(specificationZip));
        return ConformancePack.TryOpen(path, key) ?? throw new IOException($"Could not reopen {path} after writing it.");
    }

    private static IEnumerable<PackItem> Extract(string specificationZip)
    {
        using var zip = ZipFile.OpenRead(specificationZip);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in Bundles)
        {
            var entry = zip.GetEntry(name);
            if (entry is null) continue;
            using var stream = entry.Open();
            using var reader = XmlReader.Create(stream, new XmlReaderSettings { IgnoreWhitespace = true, IgnoreComments = true, DtdProcessing = DtdProcessing.Prohibit });
            // Bundle/entry/resource/<Resource>: take each resource element whole.
            while (reader.ReadToFollowing("resource", "http://hl7.org/fhir"))
            {
                if (reader.Depth != 2) continue;
                if (!reader.Read() || reader.NodeType != XmlNodeType.Element) continue;
                var type = reader.LocalName;
                if (!Kept.Contains(type)) { reader.Skip(); continue; }
                var xml = reader.ReadOuterXml();
                var (id, url, version) = Identify(xml);
                if (url is null || !seen.Add(url + "|" + type)) continue;
                yield return new PackItem(type, id ?? "", url, version, "hl7.fhir.r4.core#4.0.1", true, Encoding.UTF8.GetBytes(xml));
            }
        }
    }

    /// <summary>Reads id, url and version from a resource's own top-level children.</summary>
    private static (string? Id, string? Url, string? Version) Identify(string xml)
    {
        string? id = null, url = null, version = null;
        using var reader = XmlReader.Create(new StringReader(xml), new XmlReaderSettings { IgnoreWhitespace = true, IgnoreComments = true });
        reader.MoveToContent();
        if (!reader.Read()) return (null, null, null);
        while (reader.NodeType == XmlNodeType.Element && reader.Depth == 1)
        {
            switch (reader.LocalName)
            {
                case "id": id = reader.GetAttribute("value"); break;
                case "url": url = reader.GetAttribute("value"); break;
                case "version": version = reader.GetAttribute("value"); break;
            }
            reader.Skip();
            if (id is not null && url is not null && version is not null) break;
        }
        return (id, url, version);
    }
}

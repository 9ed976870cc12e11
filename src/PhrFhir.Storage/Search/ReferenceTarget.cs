using System.Text.RegularExpressions;
using Hl7.Fhir.Model;

namespace PhrFhir.Storage.Search;

/// <summary>Reads "Type/id" (optionally "/_history/n", optionally behind a base URL) out of a reference.</summary>
public static partial class ReferenceTarget
{
    [GeneratedRegex(@"(?:^|/)(?<type>[A-Z][A-Za-z]+)/(?<id>[A-Za-z0-9\-\.]{1,64})(?:/_history/[A-Za-z0-9\-\.]{1,64})?$")]
    private static partial Regex TypeAndId();

    // ModelInfo.IsKnownResource costs ~60 µs a call (measured); this set answers in nanoseconds.
    static readonly HashSet<string> ResourceTypes = [.. ModelInfo.SupportedResources];

    /// <summary>True for the name of an R4 resource type ("Patient"), including the abstract Resource/DomainResource.</summary>
    public static bool IsResourceType(string name) => ResourceTypes.Contains(name) || name is "Resource" or "DomainResource";

    /// <summary>The local target of a relative reference ("Patient/1"). Absolute URLs are another server's.</summary>
    public static (string Type, string Id)? Local(string reference)
    {
        if (reference.Contains("://", StringComparison.Ordinal) || reference.StartsWith("urn:", StringComparison.Ordinal)) return null;
        return Parse(reference);
    }

    public static (string Type, string Id)? Parse(string reference)
    {
        var m = TypeAndId().Match(reference);
        if (!m.Success || !ResourceTypes.Contains(m.Groups["type"].Value)) return null;
        return (m.Groups["type"].Value, m.Groups["id"].Value);
    }

    public static string? TypeOf(string reference) => Parse(reference)?.Type;
}

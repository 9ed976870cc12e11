using JasperFx;

namespace PhrFhir.Storage;

/// <summary>
/// The current version of one FHIR resource, as a Marten document. <see cref="Json"/> is the FHIR
/// JSON exactly as the server serialised it (meta.versionId and meta.lastUpdated set), kept as
/// text so that a read can be answered with those bytes, unparsed (docs/storage.md says why).
/// Older versions live in the history table, written in the same transaction.
/// </summary>
public sealed class ResourceDocument : IRevisioned
{
    /// <summary>"{type}/{id}", the key every index and history row uses too.</summary>
    public string Id { get; set; } = "";
    public string ResourceType { get; set; } = "";
    /// <summary>The Patient this resource belongs to (its compartment): the key to distribute by.</summary>
    public string? Person { get; set; }
    /// <summary>
    /// Who first wrote the resource (the writing client's actor, "system|value", or "client:{id}"); kept
    /// across versions. Institutions read what they wrote (Security/AccessPolicy).
    /// </summary>
    public string? Writer { get; set; }
    public DateTimeOffset LastUpdated { get; set; }
    public bool Deleted { get; set; }
    /// <summary>Marten's numeric revision = FHIR meta.versionId.</summary>
    public int Version { get; set; }
    public string Json { get; set; } = "";

    public static string Key(string type, string id) => type + "/" + id;
}

/// <summary>A stored version as reads return it.</summary>
public sealed record StoredResource(string Type, string Id, int Version, DateTimeOffset LastUpdated, bool Deleted, string Json, string? Person = null, string? Writer = null)
{
    public string Key => Type + "/" + Id;
}

namespace PhrFhir.Validation;

/// <summary>Where a document family is in its start-up.</summary>
public enum FamilyState
{
    /// <summary>Its conformance cache is being opened (or built, on the first start after a package change).</summary>
    Loading,
    /// <summary>Loaded and validating; its profiles are being compiled in the background, one family at a time (requests do not wait for it).</summary>
    Warming,
    /// <summary>Validating, every root profile compiled.</summary>
    Ready,
    /// <summary>Its packages are not on this machine; documents of this family are validated against R4 core only, with a warning.</summary>
    Unavailable,
    /// <summary>Its packages are there but could not be loaded; <see cref="FamilyStatus.Reason"/> says why.</summary>
    Failed,
}

/// <summary>What the server can tell about one document family (for logs, a status page, the CapabilityStatement).</summary>
/// <param name="Id">The family id (<see cref="DocumentFamily.Id"/>).</param>
/// <param name="Title">Human-readable name.</param>
/// <param name="State">Start-up state.</param>
/// <param name="Reason">Why it is <see cref="FamilyState.Unavailable"/> or <see cref="FamilyState.Failed"/>.</param>
/// <param name="Packages">The packages it is built from, as <c>id#version</c>, root first.</param>
/// <param name="MissingDependencies">Declared dependencies not found locally (e.g. <c>jpfhir-terminology.r4#1.2.2-url</c>): bindings to their code systems are reported as not checked.</param>
/// <param name="Policy">What a write does when a document of this family has errors.</param>
/// <param name="Profiles">Number of profiles (StructureDefinitions) its root package defines.</param>
public sealed record FamilyStatus(
    string Id, string Title, FamilyState State, string? Reason,
    IReadOnlyList<string> Packages, IReadOnlyList<string> MissingDependencies, ProfilePolicy Policy, int Profiles);

using Hl7.Fhir.Model;

namespace PhrFhir.Server.Identity;

/// <summary>
/// The identity operations declared on Patient in GET /metadata (and so in the OpenAPI description).
/// Adding one here is a claim: list only what Identity/ really serves.
/// </summary>
public static class IdentityCapabilities
{
    /// <summary>Our own operations' canonical base (like our CodeSystems under phrfhir.example).</summary>
    const string Own = "http://phrfhir.example/fhir/OperationDefinition/";

    public static List<CapabilityStatement.OperationComponent> PatientOperations() =>
    [
        new()
        {
            Name = "ihe-pix", Definition = PixQuery.OperationUrl,
            Documentation = "IHE PIXm ITI-83: identifiers and Patients of the same person (sourceIdentifier=system|value, targetSystem). " +
                            "An institution sees only its own identifier domains and the person's own Patient (docs/identity.md).",
        },
        new()
        {
            Name = "match", Definition = PatientMatch.OperationUrl,
            Documentation = "IHE PDQm ITI-119: scored candidates (search.score, match-grade) for a Patient's demographics — kanji and kana names, " +
                            "birth date, sex, identifiers, phone, postal code; onlyCertainMatches, count. Only Patients the requester may read are candidates.",
        },
        new()
        {
            Name = "link", Definition = Own + "Patient-link",
            Documentation = "Links an institution's Patient to the person's own Patient (Patient.link refer/seealso): by the operator " +
                            "(person + patient or identifier), or by the person proving the institution's number (identifier; birth date must agree).",
        },
        new()
        {
            Name = "merge", Definition = Own + "Patient-merge",
            Documentation = "The operator merges two Patients of one person (R5 Patient $merge shapes: source-patient, target-patient or their " +
                            "-identifier): the source becomes inactive and replaced-by the target, its records, Consents and links follow the target.",
        },
        new()
        {
            Name = "unlink", Definition = Own + "Patient-unlink",
            Documentation = "Removes a link made by $link (patient): the operator, or the person for their own links.",
        },
    ];

    /// <summary>The identifier domains as NamingSystems (DomainNamingSystems): read, search, and the operator's create/update.</summary>
    public static CapabilityStatement.ResourceComponent NamingSystemResource() => new()
    {
        Type = "NamingSystem",
        Documentation = "Identifier domains (docs/identity.md): one NamingSystem (kind identifier) per assigning authority, with the institutions allowed " +
                        "to assign in it (extension " + DomainNamingSystems.AssignerExtension + "), and the conformance packages' NamingSystems. The operator " +
                        "sees every domain, an institution the domains it assigns in; only the operator registers or corrects one (PUT).",
        Interaction = [.. ((CapabilityStatement.TypeRestfulInteraction[])[
            CapabilityStatement.TypeRestfulInteraction.Read, CapabilityStatement.TypeRestfulInteraction.SearchType,
            CapabilityStatement.TypeRestfulInteraction.Create, CapabilityStatement.TypeRestfulInteraction.Update])
            .Select(i => new CapabilityStatement.ResourceInteractionComponent { Code = i })],
        Versioning = CapabilityStatement.ResourceVersionPolicy.NoVersion,
        ReadHistory = false,
        UpdateCreate = true,
        SearchParam = [.. DomainNamingSystems.SearchParameters.Select(p => new CapabilityStatement.SearchParamComponent
        {
            Name = p.Name, Type = p.Type, Documentation = p.Documentation,
            Definition = p.Name == "_id" ? null : "http://hl7.org/fhir/SearchParameter/NamingSystem-" + p.Name,
        })],
    };
}

using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Rest;

/// <summary>
/// GET /metadata, generated from what the server really serves: the served types, the interactions
/// <see cref="FhirEndpoints"/> maps, the search parameters the index registry holds, and the
/// profiles validation enforces on write (the loaded families' resource profiles).
/// </summary>
public sealed class CapabilityStatementBuilder(FhirStore store, IConfiguration config, PhrFhir.Validation.DocumentValidator validator, Subscriptions.SubscriptionTopics topics)
{
    static readonly CapabilityStatement.TypeRestfulInteraction[] Interactions =
    [
        CapabilityStatement.TypeRestfulInteraction.Read, CapabilityStatement.TypeRestfulInteraction.Vread,
        CapabilityStatement.TypeRestfulInteraction.Update, CapabilityStatement.TypeRestfulInteraction.Patch,
        CapabilityStatement.TypeRestfulInteraction.Delete,
        CapabilityStatement.TypeRestfulInteraction.HistoryInstance, CapabilityStatement.TypeRestfulInteraction.HistoryType,
        CapabilityStatement.TypeRestfulInteraction.Create, CapabilityStatement.TypeRestfulInteraction.SearchType,
    ];

    static readonly CapabilityStatement.TypeRestfulInteraction[] AuditInteractions =
    [
        CapabilityStatement.TypeRestfulInteraction.Read, CapabilityStatement.TypeRestfulInteraction.Vread,
        CapabilityStatement.TypeRestfulInteraction.Create, CapabilityStatement.TypeRestfulInteraction.SearchType,
    ];

    CapabilityStatement? _cached;

    public CapabilityStatement Build(string baseUrl)
    {
        var cs = (CapabilityStatement)(_cached ??= Create()).DeepCopy();
        cs.Implementation = new CapabilityStatement.ImplementationComponent { Description = "PhrFhir — PHR FHIR server", Url = baseUrl };
        // SMART App Launch: where to get a token. The embedded authorisation server's endpoints are
        // ours; an external IdP (Auth:Authority) publishes its own in /.well-known/smart-configuration.
        var security = new CapabilityStatement.SecurityComponent
        {
            Service = [new CodeableConcept("http://terminology.hl7.org/CodeSystem/restful-security-service", "SMART-on-FHIR", "SMART-on-FHIR")],
            Description = "OAuth 2.0 bearer tokens with SMART v2 scopes (Backend Services: client_credentials; apps: authorization code + PKCE); " +
                          "discovery at .well-known/smart-configuration. Access is by role and by the person's Consent (docs/consent.md).",
        };
        if (string.IsNullOrEmpty(config["Auth:Authority"]))
            security.Extension.Add(new Extension
            {
                Url = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                Extension =
                [
                    new Extension("token", new FhirUri(baseUrl.TrimEnd('/') + Security.AuthorizationServer.TokenPath)),
                    new Extension("authorize", new FhirUri(baseUrl.TrimEnd('/') + Security.PersonLogin.AuthorizePath)),
                ],
            });
        cs.Rest[0].Security = security;
        return cs;
    }

    /// <summary>How Bundle.total is given (R4 search.html#total; Storage/FhirStore.SearchAsync, docs/storage.md "Totals").</summary>
    public static readonly string SearchTotals =
        $"Search totals: without _total, Bundle.total is exact when a search has at most {SearchQuery.CountedTotalLimit} matches (counted with the page, in one statement; " +
        $"a search on one string value, which is paged by the matched value and then id, counts its first {SearchQuery.CountedTotalLimit} matching index entries, " +
        "where a resource matching by two values counts once in the total and twice towards the bound) and left out beyond that, where the next link tells there are more; _total=accurate counts every match; _total=estimate is answered " +
        "exactly (statistics-based estimates would reflect resources the requester may not read); _total=none gives no total; _summary=count " +
        "is exact. Every total counts only what the requester may read.";

    CapabilityStatement Create()
    {
        var rest = new CapabilityStatement.RestComponent
        {
            Mode = CapabilityStatement.RestfulCapabilityMode.Server,
            // docs/consent.md, "Writes": an id the requester cannot see must answer like a free one.
            Documentation = "Update-as-create (PUT to a new id) is offered only to requesters who see every resource of the type: the PHR operator " +
                            "for administrative types (updateCreate true), and with break-glass for all. Anyone else gets 405 for an id with no resource it can see. " +
                            SearchTotals,
            Interaction =
            [
                new() { Code = CapabilityStatement.SystemRestfulInteraction.Transaction },
                new() { Code = CapabilityStatement.SystemRestfulInteraction.Batch },
                new() { Code = CapabilityStatement.SystemRestfulInteraction.HistorySystem },
            ],
        };
        var enforced = validator.EnforcedProfiles;
        foreach (var type in ServedResources.Types)
        {
            // The access log has its own table and search (Audit/AuditEndpoints, Storage/AuditQuery): it offers
            // exactly the parameters that search supports, and no history, update, delete or includes.
            var audit = type == "AuditEvent";
            var parameters = store.SearchParameters.For(type).Where(p => !audit || AuditQuery.Parameters.Contains(p.Code))
                .OrderBy(p => p.Code, StringComparer.Ordinal).ToList();
            var references = parameters.Where(p => p.Type == SearchParamType.Reference).Select(p => $"{type}:{p.Code}").ToList();
            rest.Resource.Add(new CapabilityStatement.ResourceComponent
            {
                Type = type,
                Interaction = (audit ? AuditInteractions : Interactions).Select(i => new CapabilityStatement.ResourceInteractionComponent { Code = i }).ToList(),
                Versioning = audit ? CapabilityStatement.ResourceVersionPolicy.Versioned : CapabilityStatement.ResourceVersionPolicy.VersionedUpdate,
                ReadHistory = !audit,
                UpdateCreate = !audit && Security.AccessPolicy.AdministrativeTypes.Contains(type), // docs/consent.md: update-as-create only for who sees every row
                ConditionalCreate = !audit,
                ConditionalUpdate = !audit,
                ConditionalDelete = audit ? CapabilityStatement.ConditionalDeleteStatus.NotSupported : CapabilityStatement.ConditionalDeleteStatus.Single,
                ConditionalRead = CapabilityStatement.ConditionalReadStatus.NotSupported,
                SupportedProfile = enforced.GetValueOrDefault(type)?.ToList() ?? [],
                SearchInclude = audit ? [] : references,
                SearchRevInclude = audit ? [] : ["*"],
                Operation = type == "Patient" ? Identity.IdentityCapabilities.PatientOperations() : [],
                SearchParam = parameters.Select(p => new CapabilityStatement.SearchParamComponent
                {
                    Name = p.Code,
                    Definition = p.Url.Length > 0 ? p.Url : null,
                    Type = p.Type,
                    Documentation = string.IsNullOrWhiteSpace(p.Description) ? null : p.Description,
                }).ToList(),
            });
        }
        rest.Resource.Add(Identity.IdentityCapabilities.NamingSystemResource()); // identifier domains
        Subscriptions.SubscriptionCapabilities.Declare(rest.Resource.Single(r => r.Type == "Subscription"), topics); // backport IG, DSUBm
        // Every other operation the server serves (OpenApiDescription finds each one's routes and verbs).
        rest.Resource.Single(r => r.Type == "Patient").Operation.Add(Sharing.ShareEndpoints.Operation);
        rest.Resource.Single(r => r.Type == "Task").Operation.Add(Workflows.DetailedExamWorklist.Operation);
        rest.Resource.Single(r => r.Type == "DocumentReference").Operation.Add(Mhd.GenerateMetadata.Operation);
        rest.Resource.Single(r => r.Type == "AuditEvent").Operation.Add(Audit.AuditEndpoints.VerifyChainOperation);
        foreach (var resource in rest.Resource) resource.Operation.Add(Validation.ValidateOperation.Operation);
        rest.Operation.Add(Validation.ValidateOperation.Operation);
        return new CapabilityStatement
        {
            Status = PublicationStatus.Active,
            Date = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd"),
            Kind = CapabilityStatementKind.Instance,
            Software = new CapabilityStatement.SoftwareComponent { Name = "PhrFhir", Version = typeof(CapabilityStatementBuilder).Assembly.GetName().Version?.ToString() },
            FhirVersion = FHIRVersion.N4_0_1,
            Instantiates = [.. Mhd.MhdCapabilities.Instantiates, .. Subscriptions.SubscriptionCapabilities.Instantiates],
            Format = ["application/fhir+json", "application/fhir+xml"],
            Rest = [rest],
        };
    }
}

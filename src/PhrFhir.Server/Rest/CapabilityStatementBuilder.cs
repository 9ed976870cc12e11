using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Rest;

/// <summary>
/// GET /metadata, generated from what the server really serves: the served types, the interactions
/// <see cref="FhirEndpoints"/> maps, and the search parameters the index registry holds.
/// </summary>
public sealed class CapabilityStatementBuilder(FhirStore store)
{
    static readonly CapabilityStatement.TypeRestfulInteraction[] Interactions =
    [
        CapabilityStatement.TypeRestfulInteraction.Read, CapabilityStatement.TypeRestfulInteraction.Vread,
        CapabilityStatement.TypeRestfulInteraction.Update, CapabilityStatement.TypeRestfulInteraction.Delete,
        CapabilityStatement.TypeRestfulInteraction.HistoryInstance, CapabilityStatement.TypeRestfulInteraction.HistoryType,
        CapabilityStatement.TypeRestfulInteraction.Create, CapabilityStatement.TypeRestfulInteraction.SearchType,
    ];

    CapabilityStatement? _cached;

    public CapabilityStatement Build(string baseUrl)
    {
        var cs = (CapabilityStatement)(_cached ??= Create()).DeepCopy();
        cs.Implementation = new CapabilityStatement.ImplementationComponent { Description = "PhrFhir — PHR FHIR server", Url = baseUrl };
        return cs;
    }

    CapabilityStatement Create()
    {
        var rest = new CapabilityStatement.RestComponent
        {
            Mode = CapabilityStatement.RestfulCapabilityMode.Server,
            Interaction =
            [
                new() { Code = CapabilityStatement.SystemRestfulInteraction.Transaction },
                new() { Code = CapabilityStatement.SystemRestfulInteraction.Batch },
                new() { Code = CapabilityStatement.SystemRestfulInteraction.HistorySystem },
            ],
        };
        foreach (var type in ServedResources.Types)
        {
            var parameters = store.SearchParameters.For(type).OrderBy(p => p.Code, StringComparer.Ordinal).ToList();
            var references = parameters.Where(p => p.Type == SearchParamType.Reference).Select(p => $"{type}:{p.Code}").ToList();
            rest.Resource.Add(new CapabilityStatement.ResourceComponent
            {
                Type = type,
                Interaction = Interactions.Select(i => new CapabilityStatement.ResourceInteractionComponent { Code = i }).ToList(),
                Versioning = CapabilityStatement.ResourceVersionPolicy.VersionedUpdate,
                ReadHistory = true,
                UpdateCreate = true,
                ConditionalCreate = true,
                ConditionalUpdate = true,
                ConditionalDelete = CapabilityStatement.ConditionalDeleteStatus.Single,
                ConditionalRead = CapabilityStatement.ConditionalReadStatus.NotSupported,
                SearchInclude = references,
                SearchRevInclude = ["*"],
                SearchParam = parameters.Select(p => new CapabilityStatement.SearchParamComponent
                {
                    Name = p.Code,
                    Definition = p.Url.Length > 0 ? p.Url : null,
                    Type = p.Type,
                    Documentation = string.IsNullOrWhiteSpace(p.Description) ? null : p.Description,
                }).ToList(),
            });
        }
        return new CapabilityStatement
        {
            Status = PublicationStatus.Active,
            Date = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd"),
            Kind = CapabilityStatementKind.Instance,
            Software = new CapabilityStatement.SoftwareComponent { Name = "PhrFhir", Version = typeof(CapabilityStatementBuilder).Assembly.GetName().Version?.ToString() },
            FhirVersion = FHIRVersion.N4_0_1,
            Instantiates = Mhd.MhdCapabilities.Instantiates,
            Format = ["application/fhir+json", "application/fhir+xml"],
            Rest = [rest],
        };
    }
}

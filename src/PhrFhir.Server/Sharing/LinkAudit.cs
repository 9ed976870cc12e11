using Hl7.Fhir.Model;
using PhrFhir.Server.Audit;
using PhrFhir.Storage;

namespace PhrFhir.Server.Sharing;

/// <summary>
/// Every use of a share link — manifest request, file fetch, VHL search, document retrieval — allowed or
/// refused, is an AuditEvent in the person's access log (docs/sharing.md "Audit"): the patient, the link
/// (its folder List), the recipient string the requester gave, the documents served, the outcome. The
/// subtype names the event (<see cref="EventCodes"/>): `shl-manifest` with outcome 0 is "the link was
/// opened", what a subscription on opened links would listen for. Stored before the answer is sent (its
/// own transaction), so the person's log shows an access as soon as the recipient has the data.
/// </summary>
public static class LinkAudit
{
    public const string EventCodes = "http://phrfhir.example/fhir/CodeSystem/share-link-event";

    public static readonly Dictionary<string, string> Events = new()
    {
        ["shl-manifest"] = "SMART Health Link manifest request (リンクの開封)",
        ["shl-file"] = "SMART Health Link file fetch (ファイル取得)",
        ["vhl-search"] = "VHL folder search (VHL 検索)",
        ["vhl-document"] = "VHL document retrieval, ITI-68 (文書取得)",
    };

    /// <summary>Records one access. <paramref name="link"/> null: the URL named no link (nobody's log; the operator's).</summary>
    public static async System.Threading.Tasks.Task RecordAsync(HttpContext ctx, FhirStore store, string code, ShareLink? link, string? recipient,
        int status, string? failure, IEnumerable<string> served)
    {
        AuditTrail.RecordedByEndpoint(ctx); // the general trail would record it again, without the patient
        var request = ctx.Request;
        var audit = new AuditEvent
        {
            Type = new Coding("http://dicom.nema.org/resources/ontology/DCM", "110106", "Export"), // disclosure to a recipient outside the system
            Subtype = [new Coding(EventCodes, code, Events[code])],
            Action = code is "vhl-search" ? AuditEvent.AuditEventAction.E : AuditEvent.AuditEventAction.R,
            Recorded = DateTimeOffset.UtcNow,
            Outcome = status < 400 ? AuditEvent.AuditEventOutcome.N0 : status < 500 ? AuditEvent.AuditEventOutcome.N4 : AuditEvent.AuditEventOutcome.N8,
            OutcomeDesc = failure,
            Source = new AuditEvent.SourceComponent
            {
                Site = request.Host.Value,
                Observer = new ResourceReference { Display = "PhrFhir" },
                Type = [new Coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
            },
        };
        // The recipient as they named themselves (SHL `recipient`): who received the person's documents.
        // A VHL receiver is also the authenticated client of its token.
        var clientId = ctx.User.FindFirst("client_id")?.Value;
        audit.Agent.Add(new AuditEvent.AgentComponent
        {
            Type = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient"),
            Who = new ResourceReference
            {
                Identifier = new Identifier(BalpAuditEvents.ClientSystem, clientId ?? "anonymous"),
                Display = recipient is null ? null : recipient.Length > 200 ? recipient[..200] : recipient,
            },
            Requestor = true,
            Network = new AuditEvent.NetworkComponent { Address = ctx.Connection.RemoteIpAddress?.ToString() ?? "unknown", Type = AuditEvent.AuditEventAgentNetworkType.N2 },
        });
        audit.Agent.Add(new AuditEvent.AgentComponent
        {
            Type = new CodeableConcept("http://dicom.nema.org/resources/ontology/DCM", "110153", "Source Role ID"),
            Who = new ResourceReference { Display = "PhrFhir" },
            Requestor = false,
            Network = new AuditEvent.NetworkComponent { Address = Rest.FhirResponse.BaseUrl(request), Type = AuditEvent.AuditEventAgentNetworkType.N5 },
        });
        if (link is not null)
        {
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                What = new ResourceReference("Patient/" + link.Patient),
                Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
                Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
            });
            // The link is its folder List (its id is the link's): which link, never its key or passcode.
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                What = new ResourceReference("List/" + link.Id),
                Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
                Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "13", "Security Resource"),
                Name = link.Label,
                Description = "share link",
            });
        }
        foreach (var key in served)
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                What = new ResourceReference(key),
                Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
                Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "3", "Report"),
            });
        await using var tx = await store.BeginWriteAsync(CancellationToken.None);
        var row = AuditTrail.Row(audit);
        await tx.AppendAuditsAsync([row], CancellationToken.None);
        tx.RecordAuditChange(row); // Subscriptions: topic share-link-opened, in this transaction
        await tx.CommitAsync(CancellationToken.None);
    }
}

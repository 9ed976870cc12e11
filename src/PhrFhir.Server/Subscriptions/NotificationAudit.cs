using Hl7.Fhir.Model;
using PhrFhir.Server.Audit;
using PhrFhir.Storage;

namespace PhrFhir.Server.Subscriptions;

/// <summary>
/// IHE DSUBm ITI-112 Resource Notify, audited by the Resource Notification Broker (profile
/// IHE.DSUBm.ResourceNotify.Audit.Broker, on BALP PatientCreate): one AuditEvent per event notification
/// sent and per patient its events are about — subtypes `create` and `ITI-112`, the recipient as the
/// client agent (Source Role ID) and this server as the server agent (Destination Role ID), the patient,
/// and the notification Bundle as the data entity (role Job). It lands in that patient's access log, so
/// the person sees who was told about their records. Handshakes and heartbeats name no patient and are
/// not audited; a failed attempt is audited with its outcome.
/// </summary>
public static class NotificationAudit
{
    public static async System.Threading.Tasks.Task RecordAsync(FhirStore store, string subscriptionId, SubscriptionDefinition definition, Bundle notification,
        IReadOnlyList<SubscriptionEvent> events, string? failure, CancellationToken ct)
    {
        // The endpoint's scheme, host and port only: its path or query may carry a secret of the recipient.
        var recipient = new Uri(definition.Endpoint).GetLeftPart(UriPartial.Authority);
        var rows = events.GroupBy(e => e.Person).Select(g => AuditTrail.Row(Build(subscriptionId, definition, recipient, notification, g.Key, g.ToList(), failure))).ToList();
        await using var tx = await store.BeginWriteAsync(ct);
        await tx.AppendAuditsAsync(rows, ct);
        await tx.CommitAsync(ct);
    }

    static AuditEvent Build(string subscriptionId, SubscriptionDefinition definition, string recipient, Bundle notification, string? person,
        List<SubscriptionEvent> events, string? failure)
    {
        var audit = new AuditEvent
        {
            Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"),
            Subtype = [new Coding("http://hl7.org/fhir/restful-interaction", "create", "create"), new Coding("urn:ihe:event-type-code", "ITI-112", "Resource Notify")],
            Action = AuditEvent.AuditEventAction.C,
            Recorded = DateTimeOffset.UtcNow,
            Outcome = failure is null ? AuditEvent.AuditEventOutcome.N0 : AuditEvent.AuditEventOutcome.N8,
            OutcomeDesc = failure,
            Source = new AuditEvent.SourceComponent
            {
                Observer = new ResourceReference { Display = "PhrFhir" },
                Type = [new Coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
            },
        };
        audit.Agent.Add(new AuditEvent.AgentComponent // the Resource Notification Recipient
        {
            Type = new CodeableConcept("http://dicom.nema.org/resources/ontology/DCM", "110153", "Source Role ID"),
            Who = new ResourceReference { Identifier = new Identifier(BalpAuditEvents.ClientSystem, definition.Subscriber.ClientId ?? "unknown"), Display = recipient },
            Requestor = false,
            Network = new AuditEvent.NetworkComponent { Address = recipient, Type = AuditEvent.AuditEventAgentNetworkType.N5 },
        });
        audit.Agent.Add(new AuditEvent.AgentComponent // this server, the Resource Notification Broker
        {
            Type = new CodeableConcept("http://dicom.nema.org/resources/ontology/DCM", "110152", "Destination Role ID"),
            Who = new ResourceReference { Display = "PhrFhir" },
            Requestor = true,
            Network = new AuditEvent.NetworkComponent { Address = definition.BaseUrl, Type = AuditEvent.AuditEventAgentNetworkType.N5 },
        });
        if (person is not null)
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                What = new ResourceReference("Patient/" + person),
                Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
                Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
            });
        audit.Entity.Add(new AuditEvent.EntityComponent
        {
            What = new ResourceReference { Identifier = new Identifier("urn:ietf:rfc:3986", "urn:uuid:" + notification.Id), Display = "Bundle" },
            Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
            Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "20", "Job"),
            Description = $"Subscription/{subscriptionId} events {events[0].Number}..{events[^1].Number}",
        });
        foreach (var key in events.Select(e => e.Key).Distinct())
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                What = new ResourceReference(key),
                Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
                Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "4", "Domain Resource"),
            });
        return audit;
    }
}

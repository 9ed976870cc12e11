using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Storage;
using static PhrFhir.Server.Tests.Audit.PersonAccessLogTests;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// AuditEvents live in a lean append-only table of their own (issue #12), searched by its own columns:
/// the parameters it supports (and only those) are in the CapabilityStatement, paging and totals work,
/// and no generic index rows or documents are written for them.
/// </summary>
[Collection("server")]
public sealed class AccessLogSearchTests(ServerFixture server)
{
    async Task<string> ReadPatientTwiceAsync()
    {
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("頁") }] })), HttpStatusCode.Created);
        for (var i = 0; i < 2; i++) Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync($"Patient/{patient.Id}")).StatusCode);
        return patient.Id;
    }

    [Fact]
    public async System.Threading.Tasks.Task The_access_log_pages_newest_first_with_its_total()
    {
        var patient = await ReadPatientTwiceAsync();
        await PollAsync(server.Operator, $"patient=Patient/{patient}&_count=10", l => l.Count >= 3); // create + 2 reads
        var first = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?patient=Patient/{patient}&subtype=read&_count=1&_total=accurate"), HttpStatusCode.OK);
        Assert.Equal(2, first.Total);
        var next = first.Link.Single(l => l.Relation == "next").Url!;
        var second = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(next), HttpStatusCode.OK);
        Assert.Single(second.Entry);
        Assert.DoesNotContain(second.Link, l => l.Relation == "next");
        Assert.True(((AuditEvent)first.Entry[0].Resource).Recorded >= ((AuditEvent)second.Entry[0].Resource).Recorded);
        var oldestFirst = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?patient=Patient/{patient}&subtype=read&_sort=date&_count=1"), HttpStatusCode.OK);
        Assert.Equal(second.Entry[0].Resource.Id, oldestFirst.Entry[0].Resource.Id);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_CapabilityStatement_offers_for_AuditEvent_exactly_the_parameters_the_access_log_supports()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        var audit = cs.Rest[0].Resource.Single(r => r.Type == "AuditEvent");
        var offered = audit.SearchParam.Select(p => p.Name).ToHashSet();
        Assert.Subset(AuditQuery.Parameters.ToHashSet(), offered);
        foreach (var name in offered)
            Assert.True((await server.Operator.GetAsync($"AuditEvent?{name}=x&_count=0")).StatusCode != HttpStatusCode.InternalServerError, name);
        Assert.DoesNotContain(audit.Interaction, i => i.Code is CapabilityStatement.TypeRestfulInteraction.Update or CapabilityStatement.TypeRestfulInteraction.Delete);
        // Anything else is refused as unsupported, not silently ignored.
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync("AuditEvent?address=127.0.0.1"), HttpStatusCode.BadRequest);
        Assert.Contains("address", refused.Issue[0].Diagnostics);
    }

    [Fact]
    public async System.Threading.Tasks.Task An_AuditEvent_is_one_row_of_the_audit_table_and_nothing_else()
    {
        var patient = await ReadPatientTwiceAsync();
        var read = (await PollAsync(server.Operator, $"patient=Patient/{patient}&subtype=read", l => l.Count > 0))[0];
        var store = server.Services.GetRequiredService<FhirStore>();
        await using var cmd = store.DataSource.CreateCommand(
            "select (select count(*) from fhir.audit_event where id = $1), (select count(*) from fhir.mt_doc_resourcedocument where id = $1), " +
            "(select count(*) from fhir.ix_token where rkey = $1) + (select count(*) from fhir.ix_reference where rkey = $1) + (select count(*) from fhir.ix_date where rkey = $1)");
        cmd.Parameters.Add(new() { Value = "AuditEvent/" + read.Id });
        await using var r = await cmd.ExecuteReaderAsync();
        Assert.True(await r.ReadAsync());
        Assert.Equal((1L, 0L, 0L), (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2)));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_client_records_an_AuditEvent_which_lands_in_its_patients_log()
    {
        var patient = await ReadPatientTwiceAsync();
        var posted = new AuditEvent
        {
            Type = new Coding("http://dicom.nema.org/resources/ontology/DCM", "110106", "Export"),
            Action = AuditEvent.AuditEventAction.R,
            Recorded = DateTimeOffset.UtcNow,
            Outcome = AuditEvent.AuditEventOutcome.N0,
            Agent = [new AuditEvent.AgentComponent { Who = new ResourceReference { Display = "kiosk" }, Requestor = true }],
            Source = new AuditEvent.SourceComponent { Observer = new ResourceReference { Display = "kiosk" } },
            Entity = [new AuditEvent.EntityComponent { What = new ResourceReference("Patient/" + patient), Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1"), Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "1") }],
        };
        var created = await Fhir.ExpectAsync<AuditEvent>(await server.Operator.PostAsync("AuditEvent", Fhir.Json(posted)), HttpStatusCode.Created);
        var found = await PollAsync(server.Operator, $"patient=Patient/{patient}&type=110106", l => l.Count > 0);
        Assert.Equal(created.Id, Assert.Single(found).Id);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PutAsync($"AuditEvent/{created.Id}", Fhir.Json(created)), HttpStatusCode.MethodNotAllowed);
        await Fhir.ExpectAsync<AuditEvent>(await server.Operator.GetAsync($"AuditEvent/{created.Id}/_history/1"), HttpStatusCode.OK);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync($"AuditEvent/{created.Id}/_history/2"), HttpStatusCode.NotFound);
    }
}

using System.Net;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Audit.PersonAccessLogTests;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// Every attempt leaves its AuditEvent — allowed, refused or failed — in the log of the patient it
/// reached for, with its own outcome (issue #11, finding 8).
/// </summary>
[Collection("server")]
public sealed class AuditAttemptTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    async Task<string> PatientAsync() => (await Fhir.ExpectAsync<Patient>(
        await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("試行") }] })), HttpStatusCode.Created)).Id;

    [Fact]
    public async System.Threading.Tasks.Task A_write_refused_inside_its_transaction_is_audited_as_failed_in_the_patients_log()
    {
        var patient = await PatientAsync();
        // The second document reuses the first one's uniqueId: the registry refuses it (409) inside the
        // transaction, after the write was staged for this patient, and the transaction rolls back.
        DocumentReference Document(string uid) => new()
        {
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", uid),
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference("Patient/" + patient),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Url = "http://example.org/kenshin.txt" } }],
        };
        var uid = "urn:oid:2.999." + DateTime.UtcNow.Ticks;
        await Fhir.ExpectAsync<DocumentReference>(await _http.PostAsync("DocumentReference", Fhir.Json(Document(uid))), HttpStatusCode.Created);
        var response = await _http.PostAsync("DocumentReference", Fhir.Json(Document(uid)));
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);

        var events = await PollAsync(server.Operator, $"patient=Patient/{patient}&action=C&_count=50",
            l => l.Any(a => a.Outcome != AuditEvent.AuditEventOutcome.N0));
        var failed = Assert.Single(events, a => a.Outcome != AuditEvent.AuditEventOutcome.N0);
        Assert.Equal(ServerFixture.InstitutionClient, ClientOf(failed));
        Assert.Equal($"Patient/{patient}", PatientOf(failed));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_batch_entry_refused_on_another_persons_record_is_audited_in_that_persons_log()
    {
        var patient = await PatientAsync(); // written by test-institution: test-institution-writer may not see it
        using var other = await server.ClientAsync("test-institution-writer");
        var batch = new Bundle
        {
            Type = Bundle.BundleType.Batch,
            Entry = [new Bundle.EntryComponent { Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.GET, Url = "Patient/" + patient } }],
        };
        var answer = await Fhir.ExpectAsync<Bundle>(await other.PostAsync("", Fhir.Json(batch)), HttpStatusCode.OK);
        Assert.StartsWith("404", answer.Entry[0].Response.Status);

        var refused = Assert.Single(await PollAsync(server.Operator, $"patient=Patient/{patient}&outcome=4&_count=50", l => l.Count > 0));
        Assert.Equal("test-institution-writer", ClientOf(refused));
        Assert.Contains(refused.Entity, e => e.What?.Reference == $"Patient/{patient}" && e.Type?.Code == "2");
    }

    [Fact]
    public async System.Threading.Tasks.Task A_batch_entry_that_reads_records_its_own_patient_and_outcome()
    {
        var patient = await PatientAsync();
        var batch = new Bundle
        {
            Type = Bundle.BundleType.Batch,
            Entry = [new Bundle.EntryComponent { Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.GET, Url = "Patient/" + patient } }],
        };
        var answer = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(batch)), HttpStatusCode.OK);
        Assert.StartsWith("200", answer.Entry[0].Response.Status);

        var read = Assert.Single(await PollAsync(server.Operator, $"patient=Patient/{patient}&subtype=transaction&_count=50", l => l.Count > 0));
        Assert.Equal(AuditEvent.AuditEventOutcome.N0, read.Outcome);
        Assert.Equal(ServerFixture.InstitutionClient, ClientOf(read));
    }
}

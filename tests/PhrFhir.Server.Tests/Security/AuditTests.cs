using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Storage;

namespace PhrFhir.Server.Tests.Security;

/// <summary>Every access leaves an AuditEvent; the trail is append-only and tamper-evident.</summary>
[Collection("server")]
public sealed class AuditTests(ServerFixture server)
{
    readonly HttpClient _http = server.Operator;

    async Task<Bundle> AuditsAsync(string query) =>
        await Fhir.ExpectAsync<Bundle>(await _http.GetAsync("AuditEvent?" + query + "&_count=50"), HttpStatusCode.OK);

    /// <summary>Reads are audited asynchronously (a batch every ~200 ms): wait a little for them.</summary>
    async Task<Bundle> EventuallyAsync(string query)
    {
        for (var i = 0; i < 50; i++)
        {
            var found = await AuditsAsync(query);
            if (found.Total > 0) return found;
            await System.Threading.Tasks.Task.Delay(100);
        }
        return await AuditsAsync(query);
    }

    async Task<Patient> PatientAsync() => await Fhir.ExpectAsync<Patient>(
        await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("監査") }] })), HttpStatusCode.Created);

    [Fact]
    public async System.Threading.Tasks.Task A_write_is_audited_in_its_own_transaction()
    {
        var patient = await PatientAsync();
        // No waiting: the AuditEvent committed with the Patient.
        var audits = await AuditsAsync($"entity=Patient/{patient.Id}&action=C");
        var audit = (AuditEvent)Assert.Single(audits.Entry).Resource;
        Assert.Equal(AuditEvent.AuditEventOutcome.N0, audit.Outcome);
        Assert.Equal("create", audit.Subtype.Single().Code);
        Assert.Equal(ServerFixture.OperatorClient, audit.Agent.First(a => a.Requestor == true).Who.Identifier.Value);
        Assert.Equal(TimeSpan.Zero, audit.Recorded!.Value.Offset); // UTC
        // One version only, and it can be read as that version.
        await Fhir.ExpectAsync<AuditEvent>(await _http.GetAsync($"AuditEvent/{audit.Id}/_history/1"), HttpStatusCode.OK);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_read_and_a_refused_request_are_audited()
    {
        var patient = await PatientAsync();
        await _http.GetAsync($"Patient/{patient.Id}");
        var read = await EventuallyAsync($"entity=Patient/{patient.Id}&action=R");
        Assert.Equal("read", ((AuditEvent)read.Entry[0].Resource).Subtype.Single().Code);

        using var reader = await server.ClientAsync("test-institution-reader");
        Assert.Equal(HttpStatusCode.Forbidden, (await reader.DeleteAsync($"Patient/{patient.Id}")).StatusCode);
        var refused = await EventuallyAsync($"entity=Patient/{patient.Id}&action=D");
        var audit = (AuditEvent)refused.Entry[0].Resource;
        Assert.Equal(AuditEvent.AuditEventOutcome.N4, audit.Outcome);
        Assert.Equal("test-institution-reader", audit.Agent.First(a => a.Requestor == true).Who.Identifier.Value);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_login_is_audited_without_the_secret()
    {
        await server.TokenAsync("test-institution-reader");
        var logins = await EventuallyAsync("type=http://dicom.nema.org/resources/ontology/DCM|110114");
        Assert.NotEqual(0, logins.Total);
        var json = await (await _http.GetAsync("AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110114&_count=50")).Content.ReadAsStringAsync();
        Assert.Contains("test-institution-reader", json);
        Assert.DoesNotContain(ServerFixture.Secret, json);
    }

    [Fact]
    public async System.Threading.Tasks.Task AuditEvents_cannot_be_changed_or_deleted()
    {
        var patient = await PatientAsync();
        var audit = (AuditEvent)(await AuditsAsync($"entity=Patient/{patient.Id}&action=C")).Entry[0].Resource;
        await Fhir.ExpectAsync<OperationOutcome>(await _http.DeleteAsync($"AuditEvent/{audit.Id}"), HttpStatusCode.MethodNotAllowed);
        audit.OutcomeDesc = "changed";
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PutAsync($"AuditEvent/{audit.Id}", Fhir.Json(audit)), HttpStatusCode.MethodNotAllowed);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_request_refused_for_a_control_character_is_audited_and_the_trail_keeps_going()
    {
        // The search names a patient "a<NUL>b": its AuditEvent used to hold U+0000, which PostgreSQL refuses,
        // and the writer retried that batch for ever, so no later read was ever recorded.
        var since = Uri.EscapeDataString(DateTimeOffset.UtcNow.AddSeconds(-1).ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.GetAsync("Observation?patient=a%00b")).StatusCode);
        AuditEvent? refused = null;
        for (var i = 0; i < 50 && refused is null; i++, await System.Threading.Tasks.Task.Delay(100))
            refused = (await AuditsAsync($"outcome=4&date=ge{since}")).Entry.Select(e => (AuditEvent)e.Resource)
                .FirstOrDefault(a => a.Entity.Any(x => x.What?.Reference == "Patient/a\uFFFDb")); // recorded as sent, the NUL replaced
        Assert.NotNull(refused);

        var patient = await PatientAsync();
        await _http.GetAsync($"Patient/{patient.Id}");
        Assert.NotEqual(0, (await EventuallyAsync($"entity=Patient/{patient.Id}&action=R")).Total);
    }
}

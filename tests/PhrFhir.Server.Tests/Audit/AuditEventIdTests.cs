using System.Net;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Audit.PersonAccessLogTests;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// AuditEvent ids are time-ordered UUIDs (version 7, RFC 9562), so the audit table's unique id index grows at
/// its right edge: random ids made every append touch a random page of an index as large as the trail
/// (docs/performance.md, "Read and background").
/// </summary>
[Collection("server")]
public sealed class AuditEventIdTests(ServerFixture server)
{
    [Fact]
    public async System.Threading.Tasks.Task AuditEvent_ids_are_version_7_UUIDs_that_sort_in_the_order_they_were_recorded()
    {
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("順") }] })), HttpStatusCode.Created);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync($"Patient/{patient.Id}")).StatusCode);
            await System.Threading.Tasks.Task.Delay(5); // distinct milliseconds: the order then comes from the time part alone
        }
        var events = await PollAsync(server.Operator, $"patient=Patient/{patient.Id}&_sort=date", l => l.Count >= 4); // create + 3 reads
        foreach (var e in events)
            Assert.True(Guid.TryParse(e.Id, out var id) && id.Version == 7, $"AuditEvent/{e.Id} is not a version 7 UUID");
        var byRecorded = events.OrderBy(e => e.Recorded).Select(e => e.Id).ToList();
        Assert.Equal(byRecorded, events.Select(e => e.Id).Order(StringComparer.Ordinal).ToList());
    }
}

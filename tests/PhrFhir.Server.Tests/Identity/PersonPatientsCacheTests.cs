using System.Net;
using System.Net.Http.Headers;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Identity.LinkedConsentCacheTests;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// Which Patients a person's token covers is held in memory (Security/PersonPatients): a link made or removed
/// changes what the person sees at once in the process that made it, and in every other process as soon as
/// PostgreSQL's NOTIFY reaches it.
/// </summary>
[Collection("server")]
public sealed class PersonPatientsCacheTests(ServerFixture server)
{
    [Fact]
    public async System.Threading.Tasks.Task A_link_removed_or_made_changes_what_the_person_sees_at_once_in_every_process()
    {
        var run = Fhir.Unique();
        var person = await ThePersonAsync(server);
        var (record, observation) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-person-cache:{run}", "K1");
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(record)))), HttpStatusCode.OK);
        await using var other = await server.StartInstanceAsync();
        using var me = await server.ClientAsync("test-person-linked");
        var token = await server.TokenAsync("test-person-linked");
        async Task<HttpStatusCode> ReadThere()
        {
            var request = new HttpRequestMessage(HttpMethod.Get, $"Observation/{observation.Id}");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            return (await other.Anonymous.SendAsync(request)).StatusCode;
        }
        async Task<HttpStatusCode> ReadHere() => (await me.GetAsync($"Observation/{observation.Id}")).StatusCode;

        // Both processes now hold the person's Patients, the linked record among them.
        Assert.Equal(HttpStatusCode.OK, await ReadHere());
        Assert.Equal(HttpStatusCode.OK, await ReadThere());

        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$unlink", Link(("patient", Ref(record)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.NotFound, await ReadHere());
        Assert.Empty((await Fhir.ExpectAsync<Bundle>(await me.GetAsync($"Observation?subject=Patient/{record.Id}"), HttpStatusCode.OK)).Entry);
        Assert.Equal(HttpStatusCode.NotFound, await EventuallyAsync(ReadThere, HttpStatusCode.NotFound));

        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(record)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.OK, await ReadHere());
        Assert.Equal(HttpStatusCode.OK, await EventuallyAsync(ReadThere, HttpStatusCode.OK));

        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$unlink", Link(("patient", Ref(record)))), HttpStatusCode.OK);
    }
}

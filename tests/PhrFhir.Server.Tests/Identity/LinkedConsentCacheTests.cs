using System.Net;
using System.Net.Http.Headers;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// Which Consents govern a Patient's records (the person's, through fhir.person_link) is held in memory beside
/// the Consents themselves (Security/ConsentRules): a link made or removed changes what a Consent covers at once
/// in the process that made it, and in every other process as soon as PostgreSQL's NOTIFY reaches it.
/// </summary>
[Collection("server")]
public sealed class LinkedConsentCacheTests(ServerFixture server)
{
    [Fact]
    public async System.Threading.Tasks.Task A_link_made_after_the_consents_are_held_in_memory_extends_the_consent_at_once_in_every_process()
    {
        var run = Fhir.Unique();
        var person = await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier($"urn:test:phr-person:{run}", "P")],
            BirthDate = BirthDate,
        })), HttpStatusCode.Created);
        var (institutional, observation) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-cache:{run}", "C1");
        await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(PatientMergeTests.PermitPhysician(person))), HttpStatusCode.Created);
        await using var other = await server.StartInstanceAsync();
        using var physician = await server.ClientAsync("test-physician");
        var token = await server.TokenAsync("test-physician");
        async Task<HttpStatusCode> ReadThere(string url)
        {
            var request = new HttpRequestMessage(HttpMethod.Get, url);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            return (await other.Anonymous.SendAsync(request)).StatusCode;
        }
        async Task<List<string>> SearchHere() =>
            [.. (await Fhir.ExpectAsync<Bundle>(await physician.GetAsync($"Observation?subject=Patient/{institutional.Id}"), HttpStatusCode.OK)).Entry.Select(e => e.Resource.Id)];

        // The Consent's own notification lands first; then both processes hold the Consents, and that the
        // institution's Patient is no one's: its record is hidden (a read and a search confined to that Patient).
        await System.Threading.Tasks.Task.Delay(1000);
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);
        Assert.Empty(await SearchHere());
        Assert.Equal(HttpStatusCode.NotFound, await ReadThere($"Observation/{observation.Id}"));

        // Linked here: this process knows before $link is answered.
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(institutional)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);
        Assert.Equal([observation.Id], await SearchHere());
        // The other process, once the notification reaches it.
        Assert.Equal(HttpStatusCode.OK, await EventuallyAsync(() => ReadThere($"Observation/{observation.Id}"), HttpStatusCode.OK));

        // Unlinked: hidden again, here at once and there too.
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$unlink", Link(("patient", Ref(institutional)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);
        Assert.Empty(await SearchHere());
        Assert.Equal(HttpStatusCode.NotFound, await EventuallyAsync(() => ReadThere($"Observation/{observation.Id}"), HttpStatusCode.NotFound));

        // Linked again, after the unlink was held in memory: covered again at once.
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(institutional)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_patient_merged_into_the_person_after_the_consents_are_held_in_memory_is_covered_by_the_persons_consent_at_once()
    {
        var run = Fhir.Unique();
        var person = await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier($"urn:test:phr-person:{run}", "P")],
            BirthDate = BirthDate,
        })), HttpStatusCode.Created);
        var (duplicate, observation) = await InstitutionRecordAsync(server.Http, $"urn:test:duplicate:{run}", "D1");
        await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(PatientMergeTests.PermitPhysician(person))), HttpStatusCode.Created);
        using var physician = await server.ClientAsync("test-physician");
        await System.Threading.Tasks.Task.Delay(1000);
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);

        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$merge",
            Link(("source-patient", Ref(duplicate)), ("target-patient", Ref(person)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);
        // Named by the merged-away Patient's reference, the search finds it too.
        Assert.Equal([observation.Id], (await Fhir.ExpectAsync<Bundle>(await physician.GetAsync($"Observation?subject=Patient/{duplicate.Id}"), HttpStatusCode.OK))
            .Entry.Select(e => e.Resource.Id));
    }

    internal static async Task<HttpStatusCode> EventuallyAsync(Func<Task<HttpStatusCode>> attempt, HttpStatusCode expected)
    {
        var status = await attempt();
        for (var i = 0; i < 50 && status != expected; i++)
        {
            await System.Threading.Tasks.Task.Delay(50);
            status = await attempt();
        }
        return status;
    }
}

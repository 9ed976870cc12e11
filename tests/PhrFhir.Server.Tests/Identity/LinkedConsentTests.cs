using System.Net;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// A Consent recorded on the person's own Patient governs their linked institutions' records too
/// (docs/identity.md, "Consents cover linked records"), for as long as the link stands.
/// </summary>
[Collection("server")]
public sealed class LinkedConsentTests(ServerFixture server)
{
    [Fact]
    public async System.Threading.Tasks.Task A_consent_on_the_persons_patient_covers_their_linked_institutions_records_until_unlinked()
    {
        var run = Fhir.Unique();
        var person = await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier($"urn:test:phr-person:{run}", "P")],
            BirthDate = BirthDate,
        })), HttpStatusCode.Created);
        var (institutional, observation) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-consent:{run}", "C1");
        var (unlinked, elsewhere) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-consent:{run}", "C2");
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(institutional)))), HttpStatusCode.OK);
        using var physician = await server.ClientAsync("test-physician");
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);

        await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(PatientMergeTests.PermitPhysician(person))), HttpStatusCode.Created);

        // Read, and a search confined to the linked Patient (Consents read per patient).
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);
        var found = await Fhir.ExpectAsync<Bundle>(await physician.GetAsync($"Observation?subject=Patient/{institutional.Id}"), HttpStatusCode.OK);
        Assert.Equal([observation.Id], found.Entry.Select(e => e.Resource.Id));
        // A record of someone not linked to the person stays hidden.
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{elsewhere.Id}")).StatusCode);
        Assert.NotEqual(unlinked.Id, institutional.Id);

        // Unlinked, the Consent no longer reaches the institution's record.
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$unlink", Link(("patient", Ref(institutional)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{observation.Id}")).StatusCode);
        Assert.Empty((await Fhir.ExpectAsync<Bundle>(await physician.GetAsync($"Observation?subject=Patient/{institutional.Id}"), HttpStatusCode.OK)).Entry);
    }
}

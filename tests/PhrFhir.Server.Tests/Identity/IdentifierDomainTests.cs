using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// Identifier domains (docs/identity.md): an institution assigns identifiers only in its own domains, a
/// system nobody registered becomes the first assigner's, JP Core's institution-specific system belongs
/// to the institution with that number, and one value names one person — refused collisions name the
/// domain, never the other Patient.
/// </summary>
[Collection("server")]
public sealed class IdentifierDomainTests(ServerFixture server)
{
    static Patient With(string system, string value) => new() { Identifier = [new Identifier(system, value)], Name = [new HumanName { Family = "照合" }] };

    static string Text(OperationOutcome oo) => oo.Issue[0].Diagnostics ?? "";

    [Fact]
    public async System.Threading.Tasks.Task A_system_nobody_registered_becomes_the_domain_of_its_first_assigner()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "1"))), HttpStatusCode.Created);
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "2"))), HttpStatusCode.Created);

        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await other.PostAsync("Patient", Fhir.Json(With(system, "3"))), HttpStatusCode.Forbidden);
        Assert.Contains(system, Text(refused));
        Assert.Equal("Patient.identifier[0]", refused.Issue[0].Expression.Single());
        // Nothing was stored: the operator, who sees every Patient, finds only the first institution's two.
        var all = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"Patient?identifier={system}|&_total=accurate"), HttpStatusCode.OK);
        Assert.Equal(2, all.Total);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_colliding_identifier_is_refused_naming_the_domain_and_not_the_other_patient()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        var first = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "42"))), HttpStatusCode.Created);
        var collision = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "42"))), HttpStatusCode.Conflict);
        Assert.Contains(system, Text(collision));
        Assert.DoesNotContain(first.Id, Text(collision));
        Assert.DoesNotContain("照合", Text(collision));
        Assert.Matches("[\u3040-\u30ff]", Text(collision)); // English and Japanese, as every refusal

        // Updating the holder itself is no collision; giving the value to a second Patient by update is.
        first.Gender = AdministrativeGender.Female;
        await Fhir.ExpectAsync<Patient>(await server.Http.PutAsync($"Patient/{first.Id}", Fhir.Json(first)), HttpStatusCode.OK);
        var second = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "43"))), HttpStatusCode.Created);
        second.Identifier.Add(new Identifier(system, "42"));
        await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PutAsync($"Patient/{second.Id}", Fhir.Json(second)), HttpStatusCode.Conflict);
        var stored = await Fhir.ExpectAsync<Patient>(await server.Http.GetAsync($"Patient/{second.Id}"), HttpStatusCode.OK);
        Assert.Equal(["43"], stored.Identifier.Select(i => i.Value));
    }

    [Fact]
    public async System.Threading.Tasks.Task Two_patients_with_one_value_in_one_transaction_are_refused_as_a_whole()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry = [.. Enumerable.Range(0, 2).Select(_ => new Bundle.EntryComponent
            {
                FullUrl = "urn:uuid:" + Guid.NewGuid(), Resource = With(system, "7"),
                Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" },
            })],
        };
        await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.Conflict);
        var all = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"Patient?identifier={system}|7&_total=accurate"), HttpStatusCode.OK);
        Assert.Equal(0, all.Total);
    }

    [Fact]
    public async System.Threading.Tasks.Task JP_Cores_institution_patient_id_system_belongs_to_the_institution_with_that_number()
    {
        // The fixture's institution is 1310000001, the other institution 1310000003 (actor identifiers).
        const string own = "urn:oid:1.2.392.100495.20.3.51.11310000001";
        const string others = "urn:oid:1.2.392.100495.20.3.51.11310000003";
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(own, Fhir.Unique("p")))), HttpStatusCode.Created);
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(With(others, Fhir.Unique("p")))), HttpStatusCode.Forbidden);
        Assert.Contains(others, Text(refused));
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        await Fhir.ExpectAsync<Patient>(await other.PostAsync("Patient", Fhir.Json(With(others, Fhir.Unique("p")))), HttpStatusCode.Created);
        // The operator assigns in any domain (registering a person on an institution's behalf).
        await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(With(others, Fhir.Unique("p")))), HttpStatusCode.Created);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_person_adds_no_identifier_to_their_record_but_their_own()
    {
        // The shared test person's Patient (registered by the institution, as the other tests do), then their token.
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient") { Content = Fhir.Json(With("urn:oid:1.2.392.100495.20.3.51.11312345678", "00012345")) };
        request.Headers.TryAddWithoutValidation("If-None-Exist", "identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|00012345");
        var id = (await Fhir.ReadAsync<Patient>(await server.Http.SendAsync(request))).Id;
        using var person = await server.ClientAsync("test-person");
        var me = await Fhir.ExpectAsync<Patient>(await person.GetAsync($"Patient/{id}"), HttpStatusCode.OK);
        me.Identifier.Add(new Identifier("urn:oid:1.2.392.100495.20.3.51.11310000001", Fhir.Unique("n")));
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await person.PutAsync($"Patient/{me.Id}", Fhir.Json(me)), HttpStatusCode.Forbidden);
        Assert.Contains("$link", Text(refused));
    }

    [Fact]
    public async System.Threading.Tasks.Task Patient_link_is_not_written_by_plain_writes()
    {
        var target = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Active = true })), HttpStatusCode.Created);
        var linking = new Patient { Link = [new Patient.LinkComponent { Other = new ResourceReference($"Patient/{target.Id}"), Type = Patient.LinkType.Seealso }] };
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(linking)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("Patient.link", refused.Issue[0].Expression.Single());
    }
}

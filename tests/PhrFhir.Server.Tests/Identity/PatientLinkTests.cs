using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// Linking institutions' Patients to the person's own Patient (Patient/$link, $unlink), what the person
/// then sees, and ITI-67 by any linked identifier (docs/identity.md).
/// </summary>
[Collection("server")]
public sealed class PatientLinkTests(ServerFixture server)
{
    public const string PersonSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    public const string PersonValue = "00099999"; // test-person-linked
    public const string BirthDate = "1980-04-01";

    /// <summary>The linked test person's own Patient, registered by the operator (repeatably).</summary>
    public static async Task<Patient> ThePersonAsync(ServerFixture server)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient
            {
                Identifier = [new Identifier(PersonSystem, PersonValue)],
                BirthDate = BirthDate,
                Gender = AdministrativeGender.Male,
                Name = [new HumanName { Family = "山田", Given = ["太郎"] }],
            }),
        };
        request.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={PersonSystem}|{PersonValue}");
        var response = await server.Operator.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        return await Fhir.ReadAsync<Patient>(response);
    }

    /// <summary>An institution's own Patient of the person, with one Observation.</summary>
    public static async Task<(Patient Patient, Observation Observation)> InstitutionRecordAsync(HttpClient institution, string system, string value, string birthDate = BirthDate)
    {
        var patient = await Fhir.ExpectAsync<Patient>(await institution.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier(system, value)],
            BirthDate = birthDate,
            Gender = AdministrativeGender.Male,
            Name = [new HumanName { Family = "山田", Given = ["太郎"] }],
        })), HttpStatusCode.Created);
        var observation = await Fhir.ExpectAsync<Observation>(await institution.PostAsync("Observation", Fhir.Json(new Observation
        {
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "8480-6", "収縮期血圧"),
            Subject = new ResourceReference($"Patient/{patient.Id}"),
            Value = new Quantity(128, "mm[Hg]"),
        })), HttpStatusCode.Created);
        return (patient, observation);
    }

    public static StringContent Link(params (string Name, DataType Value)[] parameters) =>
        Fhir.Json(new Parameters { Parameter = [.. parameters.Select(p => new Parameters.ParameterComponent { Name = p.Name, Value = p.Value })] });

    public static ResourceReference Ref(Patient p) => new($"Patient/{p.Id}");

    [Fact]
    public async System.Threading.Tasks.Task Two_institutions_and_the_employers_records_linked_to_one_person_are_all_theirs()
    {
        var run = Fhir.Unique();
        var person = await ThePersonAsync(server);
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var (a, obsA) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-a:{run}", "A1");
        var (b, obsB) = await InstitutionRecordAsync(other, $"urn:test:hospital-b:{run}", "B1");
        // The employer's number (社員番号), registered for it by the operator.
        var employee = await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier($"urn:test:employer:{run}", "E1")],
            BirthDate = BirthDate,
        })), HttpStatusCode.Created);

        // The operator links two of them; the person proves the hospital's number themselves.
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(a)))), HttpStatusCode.OK);
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link",
            Link(("person", Ref(person)), ("identifier", new Identifier($"urn:test:employer:{run}", "E1")))), HttpStatusCode.OK);
        using var me = await server.ClientAsync("test-person-linked");
        var answer = await Fhir.ExpectAsync<Parameters>(await me.PostAsync("Patient/$link", Link(("identifier", new Identifier($"urn:test:hospital-b:{run}", "B1")))), HttpStatusCode.OK);
        Assert.Equal($"Patient/{b.Id}", ((ResourceReference)answer.Parameter.Single(p => p.Name == "patient").Value).Reference);

        // The person's token covers every linked record: both institutions' observations, all four Patients.
        Assert.Equal(HttpStatusCode.OK, (await me.GetAsync($"Observation/{obsA.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await me.GetAsync($"Observation/{obsB.Id}")).StatusCode);
        var mine = await Fhir.ExpectAsync<Bundle>(await me.GetAsync("Patient?_count=100"), HttpStatusCode.OK);
        Assert.Superset(new HashSet<string> { person.Id, a.Id, b.Id, employee.Id }, mine.Entry.Select(e => e.Resource.Id).ToHashSet());

        // The links are FHIR's (R4 Patient.link), versioned: the institution's Patient refers to the person's.
        var linkedA = await Fhir.ExpectAsync<Patient>(await server.Http.GetAsync($"Patient/{a.Id}"), HttpStatusCode.OK);
        Assert.Equal("2", linkedA.Meta.VersionId);
        Assert.Equal((Patient.LinkType.Refer, $"Patient/{person.Id}"), (linkedA.Link.Single().Type!.Value, linkedA.Link.Single().Other.Reference));
        var personNow = await Fhir.ExpectAsync<Patient>(await me.GetAsync($"Patient/{person.Id}"), HttpStatusCode.OK);
        Assert.Superset(new HashSet<string> { $"Patient/{a.Id}", $"Patient/{b.Id}", $"Patient/{employee.Id}" },
            personNow.Link.Where(l => l.Type == Patient.LinkType.Seealso).Select(l => l.Other.Reference).ToHashSet());

        // The institution's plain update keeps the links it does not send.
        linkedA.Link = [];
        linkedA.Gender = AdministrativeGender.Other;
        var updated = await Fhir.ExpectAsync<Patient>(await server.Http.PutAsync($"Patient/{a.Id}", Fhir.Json(linkedA)), HttpStatusCode.OK);
        Assert.Single(updated.Link);

        // Unlinking ends the person's access to that institution's records at once.
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$unlink", Link(("patient", Ref(a)))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.NotFound, (await me.GetAsync($"Observation/{obsA.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await me.GetAsync($"Observation/{obsB.Id}")).StatusCode);
        Assert.Empty((await Fhir.ExpectAsync<Patient>(await server.Http.GetAsync($"Patient/{a.Id}"), HttpStatusCode.OK)).Link);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_persons_failed_proof_answers_the_same_whatever_the_reason_and_links_nothing()
    {
        var run = Fhir.Unique();
        await ThePersonAsync(server);
        var (wrongBirthDate, obs) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-a:{run}", "X1", birthDate: "1979-12-31");
        using var me = await server.ClientAsync("test-person-linked");

        async Task<string> Attempt(string system, string value)
        {
            var response = await me.PostAsync("Patient/$link", Link(("identifier", new Identifier(system, value))));
            var oo = await Fhir.ReadAsync<OperationOutcome>(response);
            return $"{(int)response.StatusCode} {oo.Issue[0].Code} {oo.Issue[0].Diagnostics}";
        }
        var birthDateDiffers = await Attempt($"urn:test:kenshin-a:{run}", "X1");
        Assert.StartsWith("404", birthDateDiffers);
        Assert.Equal(birthDateDiffers, await Attempt($"urn:test:kenshin-a:{run}", "no-such-number"));
        Assert.Equal(birthDateDiffers, await Attempt($"urn:test:unknown-domain:{run}", "X1"));
        Assert.Equal(HttpStatusCode.NotFound, (await me.GetAsync($"Observation/{obs.Id}")).StatusCode);
        Assert.Empty((await Fhir.ExpectAsync<Patient>(await server.Http.GetAsync($"Patient/{wrongBirthDate.Id}"), HttpStatusCode.OK)).Link);
    }

    [Fact]
    public async System.Threading.Tasks.Task Only_the_operator_or_the_person_links_and_a_record_belongs_to_one_person()
    {
        var run = Fhir.Unique();
        var person = await ThePersonAsync(server);
        var (a, _) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-a:{run}", "A1");
        await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(a)))), HttpStatusCode.Forbidden);

        var someoneElse = await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(new Patient { BirthDate = "1990-01-01" })), HttpStatusCode.Created);
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(someoneElse)), ("patient", Ref(a)))), HttpStatusCode.OK);
        // Already someone else's record: the operator is told to unlink first; the person is told nothing.
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(a)))), HttpStatusCode.Conflict);
        using var me = await server.ClientAsync("test-person-linked");
        await Fhir.ExpectAsync<OperationOutcome>(await me.PostAsync("Patient/$link", Link(("identifier", new Identifier($"urn:test:kenshin-a:{run}", "A1")))), HttpStatusCode.NotFound);
        // Nor can the person unlink someone else's link.
        await Fhir.ExpectAsync<OperationOutcome>(await me.PostAsync("Patient/$unlink", Link(("patient", Ref(a)))), HttpStatusCode.NotFound);
        // Bad input is a 400, not a failure.
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PostAsync("Patient/$link", Link(("person", new FhirString("x")))), HttpStatusCode.BadRequest);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PostAsync("Patient/$link", Fhir.Json(new Patient())), HttpStatusCode.BadRequest);
    }

    [Fact]
    public async System.Threading.Tasks.Task ITI_67_finds_the_persons_documents_by_any_linked_identifier()
    {
        var run = Fhir.Unique();
        var person = await ThePersonAsync(server);
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var (a, _) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-a:{run}", "A1");
        var (b, _) = await InstitutionRecordAsync(other, $"urn:test:hospital-b:{run}", "B1");
        // An institution files a document under its own Patient (its own patient id).
        var document = await Fhir.ExpectAsync<DocumentReference>(await server.Http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = Ref(a),
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "健診結果"u8.ToArray() } }],
        })), HttpStatusCode.Created);
        foreach (var p in new[] { a, b })
            await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(p)))), HttpStatusCode.OK);

        using var me = await server.ClientAsync("test-person-linked");
        foreach (var identifier in new[] { $"{PersonSystem}|{PersonValue}", $"urn:test:kenshin-a:{run}|A1", $"urn:test:hospital-b:{run}|B1" })
        {
            var found = await Fhir.ExpectAsync<Bundle>(await me.GetAsync($"DocumentReference?patient.identifier={Uri.EscapeDataString(identifier)}&status=current"), HttpStatusCode.OK);
            Assert.True(found.Entry.Any(e => e.Resource.Id == document.Id), $"ITI-67 by {identifier} did not find the document");
        }
        // The institution that wrote it finds it by its own number; the other institution, which may not
        // see it, does not find it by its own number either.
        var own = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"DocumentReference?patient.identifier={Uri.EscapeDataString($"urn:test:kenshin-a:{run}|A1")}"), HttpStatusCode.OK);
        Assert.Contains(own.Entry, e => e.Resource.Id == document.Id);
        var theirs = await Fhir.ExpectAsync<Bundle>(await other.GetAsync($"DocumentReference?patient.identifier={Uri.EscapeDataString($"urn:test:hospital-b:{run}|B1")}"), HttpStatusCode.OK);
        Assert.Empty(theirs.Entry);
    }
}

using System.Net;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// Patient/$merge (docs/identity.md, "Merge"): two registrations of one person become one — the source
/// inactive and replaced-by the target, its links, documents and Consents following the survivor, both
/// identifiers finding them, the person's token still working.
/// </summary>
[Collection("server")]
public sealed class PatientMergeTests(ServerFixture server)
{
    const string PersonValue = "00099990"; // test-person-merged
    const string Physician = "urn:oid:1.2.392.100495.20.3.41|1234567"; // test-physician

    async Task<Patient> RegisterAsync(Identifier identifier) =>
        await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [identifier],
            BirthDate = "1975-05-05",
            Name = [new HumanName { Family = "統合", Given = ["次郎"] }],
        })), HttpStatusCode.Created);

    static async Task<DocumentReference> DocumentAsync(HttpClient writer, Patient subject) =>
        await Fhir.ExpectAsync<DocumentReference>(await writer.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = Ref(subject),
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "健診結果"u8.ToArray() } }],
        })), HttpStatusCode.Created);

    /// <summary>A Consent permitting test-physician (named by its identifier) for treatment.</summary>
    public static Consent PermitPhysician(Patient p) => new()
    {
        Status = Consent.ConsentState.Active,
        Scope = new CodeableConcept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
        Category = [new CodeableConcept("http://loinc.org", "59284-0", "Consent")],
        Patient = Ref(p),
        Policy = [new Consent.PolicyComponent { Uri = "http://phrfhir.example/fhir/policy/sharing" }],
        Provision = new Consent.provisionComponent
        {
            Type = Consent.ConsentProvisionType.Permit,
            Actor = [new Consent.provisionActorComponent
            {
                Role = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"),
                Reference = new ResourceReference { Identifier = new Identifier(Physician.Split('|')[0], Physician.Split('|')[1]) },
            }],
            Purpose = [new Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "TREAT")],
        },
    };

    [Fact]
    public async System.Threading.Tasks.Task A_merge_moves_documents_consents_and_links_to_the_survivor_and_both_identifiers_find_them()
    {
        var run = Fhir.Unique();
        var duplicateId = new Identifier($"urn:test:phr-registration:{run}", "B");
        var source = await RegisterAsync(new Identifier(PersonSystem, PersonValue)); // the person's token binds to it
        // A second registration of the same person, made by a checkup institution.
        var target = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Identifier = [duplicateId], BirthDate = "1975-05-05" })), HttpStatusCode.Created);
        using var me = await server.ClientAsync("test-person-merged");
        var (institutional, observation) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-merge:{run}", "L1", "1975-05-05");
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(source)), ("patient", Ref(institutional)))), HttpStatusCode.OK);
        var sourceDocument = await DocumentAsync(me, source); // the person's own upload
        var targetDocument = await DocumentAsync(server.Http, target);
        await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(PermitPhysician(source))), HttpStatusCode.Created);
        using var physician = await server.ClientAsync("test-physician");
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"DocumentReference/{sourceDocument.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"DocumentReference/{targetDocument.Id}")).StatusCode);

        var answer = await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$merge",
            Link(("source-patient", Ref(source)), ("target-patient-identifier", duplicateId))), HttpStatusCode.OK);
        var result = (Patient)answer.Parameter.Single(p => p.Name == "result").Resource;
        Assert.Equal(target.Id, result.Id);
        Assert.Contains(result.Link, l => l.Type == Patient.LinkType.Replaces && l.Other.Reference == $"Patient/{source.Id}");
        Assert.Contains(result.Link, l => l.Type == Patient.LinkType.Seealso && l.Other.Reference == $"Patient/{institutional.Id}");
        Assert.Contains(result.Identifier, i => i.System == PersonSystem && i.Value == PersonValue && i.Use == Identifier.IdentifierUse.Old);
        Assert.IsType<OperationOutcome>(answer.Parameter.Single(p => p.Name == "outcome").Resource);

        // Versioned: the source is a new version, inactive and replaced-by the survivor; the institution's record refers to the survivor.
        var merged = await Fhir.ExpectAsync<Patient>(await server.Operator.GetAsync($"Patient/{source.Id}"), HttpStatusCode.OK);
        Assert.Equal((false, "3"), (merged.Active, merged.Meta.VersionId)); // registered, linked (seealso), merged
        Assert.Equal((Patient.LinkType.ReplacedBy, $"Patient/{target.Id}"), (merged.Link.Single().Type!.Value, merged.Link.Single().Other.Reference));
        var history = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"Patient/{source.Id}/_history"), HttpStatusCode.OK);
        Assert.Equal(3, history.Entry.Count);
        var linked = await Fhir.ExpectAsync<Patient>(await server.Http.GetAsync($"Patient/{institutional.Id}"), HttpStatusCode.OK);
        Assert.Equal($"Patient/{target.Id}", linked.Link.Single(l => l.Type == Patient.LinkType.Refer).Other.Reference);

        // The Consent recorded on the source now governs the survivor's records.
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"DocumentReference/{targetDocument.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"DocumentReference/{sourceDocument.Id}")).StatusCode);

        // The person's token, bound to the merged-away registration, covers the survivor's records and the linked ones,
        // and either identifier finds both documents (ITI-67 patient.identifier), as it finds both Patients.
        Assert.Equal(HttpStatusCode.OK, (await me.GetAsync($"DocumentReference/{targetDocument.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await me.GetAsync($"Observation/{observation.Id}")).StatusCode);
        foreach (var identifier in new[] { $"{PersonSystem}|{PersonValue}", $"{duplicateId.System}|{duplicateId.Value}" })
        {
            var found = await Fhir.ExpectAsync<Bundle>(await me.GetAsync($"DocumentReference?patient.identifier={Uri.EscapeDataString(identifier)}"), HttpStatusCode.OK);
            Assert.Superset(new HashSet<string> { sourceDocument.Id, targetDocument.Id }, found.Entry.Select(e => e.Resource.Id).ToHashSet());
        }
        var patients = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"Patient?identifier={Uri.EscapeDataString($"{PersonSystem}|{PersonValue}")}"), HttpStatusCode.OK);
        Assert.Equal(new HashSet<string> { source.Id, target.Id }, patients.Entry.Select(e => e.Resource.Id).ToHashSet());

        // A merge is not undone by $unlink, nor done twice.
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PostAsync("Patient/$unlink", Link(("patient", Ref(source)))), HttpStatusCode.UnprocessableEntity);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PostAsync("Patient/$merge", Link(("source-patient", Ref(source)), ("target-patient", Ref(target)))), HttpStatusCode.UnprocessableEntity);
    }

    public static TheoryData<string, string, HttpStatusCode> Refusals => new()
    {
        { "institution", "source+target", HttpStatusCode.Forbidden },
        { "operator", "same", HttpStatusCode.BadRequest },
        { "operator", "no target", HttpStatusCode.BadRequest },
        { "operator", "preview", HttpStatusCode.BadRequest },
        { "operator", "unknown identifier", HttpStatusCode.UnprocessableEntity },
        { "operator", "unknown patient", HttpStatusCode.NotFound },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public async System.Threading.Tasks.Task A_merge_is_the_operators_and_bad_input_merges_nothing(string who, string input, HttpStatusCode status)
    {
        var a = await RegisterAsync(new Identifier($"urn:test:phr-registration:{Fhir.Unique()}", "A"));
        var b = await RegisterAsync(new Identifier($"urn:test:phr-registration:{Fhir.Unique()}", "B"));
        var body = input switch
        {
            "same" => Link(("source-patient", Ref(a)), ("target-patient", Ref(a))),
            "no target" => Link(("source-patient", Ref(a))),
            "preview" => Link(("source-patient", Ref(a)), ("target-patient", Ref(b)), ("preview", new FhirBoolean(true))),
            "unknown identifier" => Link(("source-patient-identifier", new Identifier("urn:test:nobody", Fhir.Unique())), ("target-patient", Ref(b))),
            "unknown patient" => Link(("source-patient", new ResourceReference("Patient/" + Fhir.Unique())), ("target-patient", Ref(b))),
            _ => Link(("source-patient", Ref(a)), ("target-patient", Ref(b))),
        };
        var client = who == "operator" ? server.Operator : server.Http;
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(await client.PostAsync("Patient/$merge", body), status);
        Assert.Matches("[\u3040-\u30ff]", outcome.Issue[0].Diagnostics ?? "");
        var after = await Fhir.ExpectAsync<Patient>(await server.Operator.GetAsync($"Patient/{a.Id}"), HttpStatusCode.OK);
        Assert.Equal(("1", 0), (after.Meta.VersionId, after.Link.Count));
    }
}

using System.Net;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// ITI-65 / ITI-105 naming the subject by identifier (docs/identity.md, "Documents by identifier"): the
/// institution's own patient number, as `Patient?identifier=` or an identifier alone, files the document
/// under the person its Patient is linked to; an identifier it may not name is the same 422 as an unknown one.
/// </summary>
[Collection("server")]
public sealed class SubjectByIdentifierTests(ServerFixture server)
{
    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    const string Rfc3986 = "urn:ietf:rfc:3986";

    static string NewOid() => "urn:oid:2.25." + new System.Numerics.BigInteger(Guid.NewGuid().ToByteArray(), isUnsigned: true);

    static DocumentReference Document(ResourceReference subject, string binaryUrl) => new()
    {
        MasterIdentifier = new Identifier(Rfc3986, NewOid()) { Use = Identifier.IdentifierUse.Usual },
        Status = DocumentReferenceStatus.Current,
        Subject = subject,
        Type = new CodeableConcept("http://loinc.org", "53576-5", "健康診断結果報告書"),
        Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Language = "ja", Url = binaryUrl } }],
    };

    /// <summary>An ITI-65 Minimal submission naming the patient by <paramref name="subject"/> in the SubmissionSet and the document.</summary>
    static Bundle ProvideDocumentBundle(Func<ResourceReference> subject)
    {
        string setUrl = "urn:uuid:" + Guid.NewGuid(), docUrl = "urn:uuid:" + Guid.NewGuid(), binaryUrl = "urn:uuid:" + Guid.NewGuid();
        var set = new List
        {
            Extension = [new Extension(Mhd + "ihe-sourceId", new Identifier(Rfc3986, NewOid()))],
            Identifier = [new Identifier(Rfc3986, NewOid()) { Use = Identifier.IdentifierUse.Usual }],
            Status = List.ListStatus.Current,
            Mode = ListMode.Working,
            Code = new CodeableConcept("https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset"),
            Subject = subject(),
            Date = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssK", System.Globalization.CultureInfo.InvariantCulture),
            Entry = [new List.EntryComponent { Item = new ResourceReference(docUrl) }],
        };
        static Bundle.EntryComponent Entry(Resource r, string url, string fullUrl) =>
            new() { FullUrl = fullUrl, Resource = r, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = url } };
        return new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Meta = new Meta { Profile = [Mhd + "IHE.MHD.Minimal.ProvideBundle"] },
            Entry =
            [
                Entry(set, "List", setUrl),
                Entry(Document(subject(), binaryUrl), "DocumentReference", docUrl),
                Entry(new Binary { ContentType = "text/plain", Data = "健診結果"u8.ToArray() }, "Binary", binaryUrl),
            ],
        };
    }

    [Fact]
    public async System.Threading.Tasks.Task A_document_naming_the_institutions_patient_number_is_filed_under_the_linked_person()
    {
        var run = Fhir.Unique();
        var person = await ThePersonAsync(server);
        var system = $"urn:test:kenshin-number:{run}";
        var (own, _) = await InstitutionRecordAsync(server.Http, system, "A-1");
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(own)))), HttpStatusCode.OK);
        using var me = await server.ClientAsync("test-person-linked");

        // ITI-105 with the conditional reference.
        var published = await Fhir.ExpectAsync<DocumentReference>(await server.Http.PostAsync("DocumentReference",
            Fhir.Json(new DocumentReference
            {
                Status = DocumentReferenceStatus.Current,
                MasterIdentifier = new Identifier(Rfc3986, NewOid()),
                Subject = new ResourceReference($"Patient?identifier={Uri.EscapeDataString(system)}|A-1"),
                Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "健診結果"u8.ToArray() } }],
            })), HttpStatusCode.Created);
        Assert.Equal($"Patient/{person.Id}", published.Subject.Reference);
        Assert.Equal(HttpStatusCode.OK, (await me.GetAsync($"DocumentReference/{published.Id}")).StatusCode);

        // ITI-65 with the patient named by identifier alone (SubmissionSet and document).
        var bundle = ProvideDocumentBundle(() => new ResourceReference { Identifier = new Identifier(system, "A-1") });
        var response = await Fhir.ExpectAsync<Bundle>(await server.Http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        var location = response.Entry[1].Response.Location;
        var documentId = location[(location.IndexOf("DocumentReference/", StringComparison.Ordinal) + 18)..].Split('/')[0];
        var stored = await Fhir.ExpectAsync<DocumentReference>(await me.GetAsync($"DocumentReference/{documentId}"), HttpStatusCode.OK);
        Assert.Equal($"Patient/{person.Id}", stored.Subject.Reference);
        // ITI-68: the document's bytes are the person's too.
        var bytes = await Fhir.ExpectAsync<Binary>(await me.GetAsync(stored.Content[0].Attachment.Url), HttpStatusCode.OK);
        Assert.Equal("健診結果", System.Text.Encoding.UTF8.GetString(bytes.Data));

        // ITI-67 by the institution's own number finds both (the document's subject is the person's Patient).
        var found = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"DocumentReference?patient.identifier={Uri.EscapeDataString(system)}|A-1"), HttpStatusCode.OK);
        Assert.Superset(new HashSet<string> { published.Id, documentId }, found.Entry.Select(e => e.Resource.Id).ToHashSet());
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_generated_DocumentReference_is_filed_under_the_person_linked_to_the_documents_patient()
    {
        // ITI-106: the HS037 report names the patient by the institution's number (a copy with a new number).
        var document = PhrFhir.Server.Tests.Mhd.PublishTests.Hs037(out var patientId, out _);
        var person = await ThePersonAsync(server);
        var (own, _) = await InstitutionRecordAsync(server.Http, patientId.System, patientId.Value);
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(own)))), HttpStatusCode.OK);

        var output = await Fhir.ExpectAsync<Parameters>(await server.Http.PostAsync("DocumentReference/$generate-metadata", PhrFhir.Server.Tests.Mhd.PublishTests.Parameters(document)), HttpStatusCode.OK);
        var reference = ((ResourceReference)output.Parameter.Single(p => p.Name == "DocumentReference").Value).Reference;
        using var me = await server.ClientAsync("test-person-linked");
        var stored = await Fhir.ExpectAsync<DocumentReference>(await me.GetAsync(reference), HttpStatusCode.OK);
        Assert.Equal($"Patient/{person.Id}", stored.Subject.Reference);
        // ITI-68: the person reads the report's bytes.
        Assert.Equal(HttpStatusCode.OK, (await me.GetAsync(stored.Content[0].Attachment.Url)).StatusCode);
        // The SubmissionSet too, and ITI-67 by the institution's number finds the document.
        var sets = await Fhir.ExpectAsync<Bundle>(await me.GetAsync($"List?patient={person.Id}&code=submissionset&_total=accurate"), HttpStatusCode.OK);
        Assert.Contains(sets.Entry.Select(e => (List)e.Resource), l => l.Entry.Any(x => x.Item.Reference.EndsWith(reference, StringComparison.Ordinal)));
        var found = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync(
            $"DocumentReference?patient.identifier={Uri.EscapeDataString(patientId.System)}|{patientId.Value}"), HttpStatusCode.OK);
        Assert.Contains(found.Entry, e => reference.EndsWith(e.Resource.Id, StringComparison.Ordinal));
    }

    [Fact]
    public async System.Threading.Tasks.Task An_identifier_the_institution_may_not_name_answers_like_an_unknown_one_and_stores_nothing()
    {
        var run = Fhir.Unique();
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var othersSystem = $"urn:test:hospital-number:{run}";
        await InstitutionRecordAsync(other, othersSystem, "B-1"); // another institution's patient, in its domain

        async Task<string> Refused(string reference)
        {
            var marker = Fhir.Unique("refused");
            var response = await server.Http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
            {
                Status = DocumentReferenceStatus.Current,
                MasterIdentifier = new Identifier(Rfc3986, NewOid()),
                Description = marker,
                Subject = new ResourceReference(reference),
                Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "x"u8.ToArray() } }],
            }));
            var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.UnprocessableEntity);
            Assert.Equal("XDSUnknownPatientId", outcome.Issue[0].Details?.Text);
            Assert.EndsWith("subject", outcome.Issue[0].Expression.Single()); // ITI-105 answers as the entry of its Bundle
            var stored = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"DocumentReference?description={marker}"), HttpStatusCode.OK); // the writer would see its own
            Assert.Empty(stored.Entry);
            return outcome.Issue[0].Diagnostics!;
        }
        var hidden = await Refused($"Patient?identifier={othersSystem}|B-1");
        var unknown = await Refused($"Patient?identifier={othersSystem}|NO-SUCH");
        Assert.Contains($"{othersSystem}|B-1", hidden);
        Assert.Equal(unknown.Replace("NO-SUCH", "B-1"), hidden);
        Assert.Matches("[\u3040-\u30ff]", hidden);

        var malformed = await server.Http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference("Patient?name=山田"),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "x"u8.ToArray() } }],
        }));
        await Fhir.ExpectAsync<OperationOutcome>(malformed, HttpStatusCode.BadRequest);
    }
}

using System.Net;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using PhrFhir.Server.Tests.Mhd;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// A write on a resource the requester cannot see answers exactly what the same write answers on an id
/// that does not exist (docs/consent.md, "Writes"): institution B against what institution A wrote.
/// Each cell sends the request twice — at A's hidden resource and at a free id — and compares the answers
/// with the id masked.
/// </summary>
[Collection("server")]
public sealed class HiddenResourceTests(ServerFixture server)
{
    const string PersonSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";

    /// <summary>A's Patient and DocumentReference (written by the fixture's institution).</summary>
    async Task<(Patient Patient, DocumentReference Document)> HiddenAsync()
    {
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier(PersonSystem, Fhir.Unique("h"))],
            Name = [new HumanName { Family = "秘匿", Given = ["太郎"] }],
        })), HttpStatusCode.Created);
        var document = await Fhir.ExpectAsync<DocumentReference>(await server.Http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference($"Patient/{patient.Id}"),
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "紹介状"u8.ToArray() } }],
        })), HttpStatusCode.Created);
        return (patient, document);
    }

    /// <summary>Status, ETag presence and body, with the id the request named masked.</summary>
    static async Task<string> AnswerAsync(HttpResponseMessage response, string id)
    {
        var body = await response.Content.ReadAsStringAsync();
        // Bundles and created resources carry fresh ids and times of their own: compare their shape only.
        body = Regex.Replace(body.Replace(id, "{id}"), "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{uuid}");
        body = Regex.Replace(body, "\"(lastUpdated|lastModified|etag|location|versionId)\":\"[^\"]*\"", "\"$1\":\"…\"");
        return $"{(int)response.StatusCode} etag={response.Headers.ETag is not null} {body}";
    }

    public static TheoryData<string> Writes() => ["PUT", "PUT If-Match", "PATCH", "DELETE", "PUT in a transaction", "DELETE in a transaction", "raw Binary PUT"];

    [Theory]
    [MemberData(nameof(Writes))]
    public async System.Threading.Tasks.Task A_write_on_a_resource_one_cannot_see_answers_as_on_an_id_that_does_not_exist(string write)
    {
        var (_, hidden) = await HiddenAsync();
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var missing = Fhir.Unique("free-");
        var binary = hidden.Content[0].Attachment.Url.Split('/')[^1];

        HttpRequestMessage Request(string id)
        {
            var changed = new DocumentReference
            {
                Id = id,
                Status = DocumentReferenceStatus.EnteredInError,
                Subject = hidden.Subject,
                Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Url = "http://example.org/x.txt" } }],
            };
            HttpRequestMessage InTransaction(Bundle.HTTPVerb verb) => new(HttpMethod.Post, "")
            {
                Content = Fhir.Json(new Bundle
                {
                    Type = Bundle.BundleType.Transaction,
                    Entry = [new Bundle.EntryComponent { Resource = verb == Bundle.HTTPVerb.PUT ? changed : null, Request = new Bundle.RequestComponent { Method = verb, Url = $"DocumentReference/{id}" } }],
                }),
            };
            switch (write)
            {
                case "PUT": return new(HttpMethod.Put, $"DocumentReference/{id}") { Content = Fhir.Json(changed) };
                case "PUT If-Match":
                    var ifMatch = new HttpRequestMessage(HttpMethod.Put, $"DocumentReference/{id}") { Content = Fhir.Json(changed) };
                    ifMatch.Headers.TryAddWithoutValidation("If-Match", "W/\"1\"");
                    return ifMatch;
                case "PATCH":
                    var op = new Parameters.ParameterComponent { Name = "operation" };
                    op.Part.Add(new() { Name = "type", Value = new Code("replace") });
                    op.Part.Add(new() { Name = "path", Value = new FhirString("DocumentReference.status") });
                    op.Part.Add(new() { Name = "value", Value = new Code("entered-in-error") });
                    return new(HttpMethod.Patch, $"DocumentReference/{id}") { Content = Fhir.Json(new Parameters { Parameter = [op] }) };
                case "DELETE": return new(HttpMethod.Delete, $"DocumentReference/{id}");
                case "PUT in a transaction": return InTransaction(Bundle.HTTPVerb.PUT);
                case "DELETE in a transaction": return InTransaction(Bundle.HTTPVerb.DELETE);
                default:
                    var raw = new HttpRequestMessage(HttpMethod.Put, $"Binary/{(id == hidden.Id ? binary : id)}") { Content = new ByteArrayContent("%PDF overwritten"u8.ToArray()) };
                    raw.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/pdf");
                    return raw;
            }
        }

        var atHidden = await AnswerAsync(await other.SendAsync(Request(hidden.Id)), write == "raw Binary PUT" ? binary : hidden.Id);
        var atMissing = await AnswerAsync(await other.SendAsync(Request(missing)), missing);
        Assert.True(atHidden == atMissing, $"[{write}] hidden: {atHidden}\n missing: {atMissing}");
        Assert.False(atHidden.StartsWith('2') && write.StartsWith("PUT", StringComparison.Ordinal), $"[{write}] update-as-create by an institution: {atHidden}");
        // A's document is untouched.
        var kept = await Fhir.ExpectAsync<DocumentReference>(await server.Http.GetAsync($"DocumentReference/{hidden.Id}"), HttpStatusCode.OK);
        Assert.Equal(DocumentReferenceStatus.Current, kept.Status);
        Assert.Equal("1", kept.Meta.VersionId);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_operator_still_creates_a_patient_at_an_id_of_its_choosing()
    {
        var id = Fhir.Unique("op-");
        var created = await server.Operator.PutAsync($"Patient/{id}", Fhir.Json(new Patient { Id = id, Name = [new HumanName { Family = "登録" }] }));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        // The CapabilityStatement says so: updateCreate for administrative types only.
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        Assert.True(cs.Rest[0].Resource.Single(r => r.Type == "Patient").UpdateCreate);
        Assert.False(cs.Rest[0].Resource.Single(r => r.Type == "DocumentReference").UpdateCreate);
    }

    [Fact]
    public async System.Threading.Tasks.Task Conditional_writes_match_only_what_the_requester_sees_and_a_hidden_match_changes_nothing()
    {
        var (patient, hidden) = await HiddenAsync();
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var hiddenIdentifier = $"{PersonSystem}|{patient.Identifier[0].Value}";
        var freeIdentifier = $"{PersonSystem}|{Fhir.Unique("f")}";

        async Task<string> Create(string identifier, string criteria)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
            {
                // Carrying the value in B's own identifier domain (PersonSystem is A's: Identity/IdentifierDomains).
                Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:test:hidden-resource-b", Fhir.Unique("b"))] }),
            };
            request.Headers.TryAddWithoutValidation("If-None-Exist", criteria);
            var response = await other.SendAsync(request);
            return $"{(int)response.StatusCode} {(await Fhir.ReadAsync<Resource>(response)).TypeName}";
        }
        // If-None-Exist: by identifier, and through a chain and a _has that only A's rows would satisfy.
        Assert.Equal(await Create(freeIdentifier, $"identifier={freeIdentifier}"), await Create(hiddenIdentifier, $"identifier={hiddenIdentifier}"));
        Assert.Equal("201 Patient", await Create(hiddenIdentifier, $"_has:DocumentReference:subject:_id={hidden.Id}"));

        // Conditional update and delete by A's masterIdentifier: nothing of A's is touched.
        var update = await other.PutAsync($"DocumentReference?identifier={Uri.EscapeDataString(hidden.MasterIdentifier.Value)}", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Url = "http://example.org/y.txt" } }],
        }));
        Assert.Equal(HttpStatusCode.Created, update.StatusCode);
        Assert.NotEqual(hidden.Id, (await Fhir.ReadAsync<DocumentReference>(update)).Id);
        Assert.Equal(HttpStatusCode.NoContent, (await other.DeleteAsync($"DocumentReference?subject.identifier={Uri.EscapeDataString(hiddenIdentifier)}")).StatusCode);
        var kept = await Fhir.ExpectAsync<DocumentReference>(await server.Http.GetAsync($"DocumentReference/{hidden.Id}"), HttpStatusCode.OK);
        Assert.Equal("1", kept.Meta.VersionId);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_submission_for_a_patient_the_submitter_cannot_see_is_refused_as_for_an_unknown_patient()
    {
        MhdExamples.SkipIfAbsent();
        var (patient, _) = await HiddenAsync();
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var missing = Fhir.Unique("no-such-");

        async Task<string> Submit(string id)
        {
            var bundle = MhdExamples.Load<Bundle>("Bundle-ex-minimalProvideDocumentBundleSimple.json");
            MhdExamples.MakeUniqueIds(bundle);
            foreach (var doc in bundle.Entry.Select(e => e.Resource).OfType<DocumentReference>()) doc.Subject = new ResourceReference($"Patient/{id}");
            foreach (var set in bundle.Entry.Select(e => e.Resource).OfType<List>()) set.Subject = new ResourceReference($"Patient/{id}");
            var response = await other.PostAsync("", Fhir.Json(bundle));
            var oo = await Fhir.ReadAsync<OperationOutcome>(response);
            return $"{(int)response.StatusCode} {oo.Issue[0].Details?.Text} {oo.Issue[0].Diagnostics?.Replace(id, "{id}")} {string.Join(",", oo.Issue[0].Expression)}";
        }
        var atHidden = await Submit(patient.Id);
        Assert.Equal(await Submit(missing), atHidden);
        Assert.Contains("XDSUnknownPatientId", atHidden);
    }
}

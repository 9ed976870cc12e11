using System.Net;
using System.Security.Cryptography;
using System.Text;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Mhd;

/// <summary>IHE MHD ITI-65 against the official examples and the documented error cases.</summary>
[Collection("server")]
public sealed class ProvideDocumentBundleTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    public static TheoryData<string> Examples()
    {
        var data = new TheoryData<string>();
        foreach (var f in MhdExamples.ProvideBundles()) data.Add(f);
        if (data.Count == 0) data.Add("(MHD examples absent)");
        return data;
    }

    /// <summary>The resources the examples refer to as already registered (Patient/ex-patient, …).</summary>
    async System.Threading.Tasks.Task PrerequisitesAsync()
    {
        foreach (var file in new[] { "Patient-ex-patient.json", "DocumentReference-ex-documentreference.json", "DocumentReference-ex-DocumentReferenceComprehensive.json" })
        {
            var r = MhdExamples.Load<Resource>(file);
            if ((await _http.GetAsync($"{r.TypeName}/{r.Id}")).StatusCode == HttpStatusCode.OK) continue;
            await server.SeedAsync(r); // at the example's own id, as this institution's
        }
    }

    async Task<DocumentReference> FreshTargetAsync()
    {
        // The replace example supersedes DocumentReference/ex-documentreference: give each test a current one.
        var target = MhdExamples.Load<DocumentReference>("DocumentReference-ex-documentreference.json");
        target.Status = DocumentReferenceStatus.Current;
        target.MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:1.2.3." + Random.Shared.NextInt64(1, long.MaxValue));
        await server.SeedAsync(target);
        return target;
    }

    [SkippableTheory]
    [MemberData(nameof(Examples))]
    public async System.Threading.Tasks.Task Every_official_Provide_Document_Bundle_example_is_accepted(string file)
    {
        MhdExamples.SkipIfAbsent();
        await PrerequisitesAsync();
        var bundle = MhdExamples.Load<Bundle>(file);
        MhdExamples.MakeUniqueIds(bundle);
        if (file.Contains("Replace", StringComparison.Ordinal))
        {
            await FreshTargetAsync();
            FixReplaceExampleSize(bundle);
        }
        // The add-to-folder example updates a Folder that already exists (a PUT to its id): register it first.
        foreach (var folder in bundle.Entry.Where(e => e.Request?.Method == Bundle.HTTPVerb.PUT).Select(e => e.Resource).OfType<List>())
        {
            var existing = (List)folder.DeepCopy();
            existing.Entry.Clear();
            await server.SeedAsync(existing);
        }

        var response = await _http.PostAsync("", Fhir.Json(bundle));
        var result = await Fhir.ExpectAsync<Bundle>(response, HttpStatusCode.OK);
        Assert.Equal(Bundle.BundleType.TransactionResponse, result.Type);
        Assert.All(result.Entry, e => Assert.True(e.Response.Status.StartsWith('2'), $"{file}: entry answered {e.Response.Status}"));

        // Each document is registered and its bytes come back exactly from attachment.url (ITI-68).
        foreach (var (doc, i) in bundle.Entry.Select((e, i) => (e.Resource as DocumentReference, i)).Where(x => x.Item1 is not null))
        {
            var stored = (DocumentReference)result.Entry[i].Resource;
            var url = stored.Content[0].Attachment.Url;
            var binaryEntry = bundle.Entry.FirstOrDefault(e => e.FullUrl == doc!.Content[0].Attachment.Url);
            if (binaryEntry?.Resource is Binary binary)
            {
                Assert.StartsWith(server.BaseUrl.ToString().TrimEnd('/'), url);
                var get = new HttpRequestMessage(HttpMethod.Get, url);
                get.Headers.TryAddWithoutValidation("Accept", "*/*"); // ITI-68: the document itself, not its FHIR Binary form
                var bytes = await (await _http.SendAsync(get)).Content.ReadAsByteArrayAsync();
                Assert.Equal(binary.Data, bytes);
            }
        }
    }

    /// <summary>The published Replace example states attachment.size 24 for a 23-byte document.</summary>
    static void FixReplaceExampleSize(Bundle bundle)
    {
        var doc = bundle.Entry.Select(e => e.Resource).OfType<DocumentReference>().Single();
        var binary = (Binary)bundle.Entry.Single(e => e.FullUrl == doc.Content[0].Attachment.Url).Resource;
        doc.Content[0].Attachment.SizeUnsignedInt = binary.Data.Length;
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task The_published_Replace_example_is_refused_for_its_wrong_size_and_nothing_is_stored()
    {
        MhdExamples.SkipIfAbsent();
        await PrerequisitesAsync();
        await FreshTargetAsync();
        var bundle = MhdExamples.Load<Bundle>("Bundle-ex-comprehensiveProvideDocumentBundleReplace.json");
        MhdExamples.MakeUniqueIds(bundle);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("XDSNonIdenticalSize", oo.Issue[0].Details.Text);
        await AssertNothingStoredAsync(bundle);
        var target = await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync("DocumentReference/ex-documentreference"), HttpStatusCode.OK);
        Assert.Equal(DocumentReferenceStatus.Current, target.Status);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task Replacing_supersedes_the_old_document_atomically_and_a_superseded_one_cannot_be_replaced()
    {
        MhdExamples.SkipIfAbsent();
        await PrerequisitesAsync();
        var target = await FreshTargetAsync();
        // Without the example's own PATCH: the registry supersedes the target itself.
        var bundle = MhdExamples.Load<Bundle>("Bundle-ex-comprehensiveProvideDocumentBundleReplace.json");
        bundle.Entry.RemoveAll(e => e.Request.Method == Bundle.HTTPVerb.PATCH);
        MhdExamples.MakeUniqueIds(bundle);
        FixReplaceExampleSize(bundle);
        await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        var old = await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync($"DocumentReference/{target.Id}"), HttpStatusCode.OK);
        Assert.Equal(DocumentReferenceStatus.Superseded, old.Status);
        var current = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?_id={target.Id}&status=current"), HttpStatusCode.OK);
        Assert.Equal(0, current.Total); // a superseded document is not returned by status=current

        var again = MhdExamples.Load<Bundle>("Bundle-ex-comprehensiveProvideDocumentBundleReplace.json");
        again.Entry.RemoveAll(e => e.Request.Method == Bundle.HTTPVerb.PATCH);
        MhdExamples.MakeUniqueIds(again);
        FixReplaceExampleSize(again);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(again)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("XDSRegistryMetadataError", oo.Issue[0].Details.Text);
        await AssertNothingStoredAsync(again);
    }

    /// <summary>
    /// The profile check of an ITI-65 entry still bites after the same metadata was accepted before: bindings remember
    /// the codes they accepted (RememberingBindingValidator), never the ones they refused. A DocumentReference whose
    /// attachment.contentType is not a media type (a required binding of the Minimal profile) is refused with 422 at
    /// that DocumentReference, and nothing of the submission is stored.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_DocumentReference_breaking_the_Minimal_profile_is_refused_at_it_even_after_valid_ones_were_accepted()
    {
        MhdExamples.SkipIfAbsent();
        await PrerequisitesAsync();
        const string Example = "Bundle-ex-minimalProvideDocumentBundleSimple.json";
        for (var i = 0; i < 2; i++)
        {
            var valid = MhdExamples.Load<Bundle>(Example);
            MhdExamples.MakeUniqueIds(valid);
            await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(valid)), HttpStatusCode.OK);
        }

        var broken = MhdExamples.Load<Bundle>(Example);
        MhdExamples.MakeUniqueIds(broken);
        var at = broken.Entry.FindIndex(e => e.Resource is DocumentReference);
        ((DocumentReference)broken.Entry[at].Resource).Content[0].Attachment.ContentType = "pdf";
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(broken)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains(oo.Issue, i => i.Severity == OperationOutcome.IssueSeverity.Error
            && i.Expression.Any(x => x.StartsWith($"Bundle.entry[{at}].resource", StringComparison.Ordinal) && x.Contains(".contentType", StringComparison.Ordinal)));
        await AssertNothingStoredAsync(broken);
    }

    public static TheoryData<string, string, HttpStatusCode> Mutations => new()
    {
        { "unknown patient", "XDSUnknownPatientId", HttpStatusCode.UnprocessableEntity },
        { "untrusted absolute patient", "XDSUnknownPatientId", HttpStatusCode.UnprocessableEntity },
        { "hash mismatch", "XDSNonIdenticalHash", HttpStatusCode.UnprocessableEntity },
        { "size mismatch", "XDSNonIdenticalSize", HttpStatusCode.UnprocessableEntity },
        { "missing SubmissionSet", "XDSRegistryMetadataError", HttpStatusCode.BadRequest },
        { "two SubmissionSets", "XDSRegistryMetadataError", HttpStatusCode.BadRequest },
        { "document not in SubmissionSet", "XDSRegistryMetadataError", HttpStatusCode.BadRequest },
        { "duplicate masterIdentifier in message", "XDSRegistryDuplicateUniqueIdInMessage", HttpStatusCode.UnprocessableEntity },
        { "SubmissionSet lists a missing entry", "UnresolvedReferenceException", HttpStatusCode.BadRequest },
        { "attachment names a missing entry", "XDSMissingDocument", HttpStatusCode.UnprocessableEntity },
        { "document subject differs from SubmissionSet", "XDSPatientIdDoesNotMatch", HttpStatusCode.UnprocessableEntity },
    };

    [SkippableTheory]
    [MemberData(nameof(Mutations))]
    public async System.Threading.Tasks.Task A_broken_submission_is_refused_with_its_XDS_error_and_nothing_is_stored(string mutation, string xdsCode, HttpStatusCode status)
    {
        MhdExamples.SkipIfAbsent();
        await PrerequisitesAsync();
        var bundle = MhdExamples.Load<Bundle>("Bundle-ex-comprehensiveProvideDocumentBundleMultiple.json");
        MhdExamples.MakeUniqueIds(bundle);
        var set = bundle.Entry.Select(e => e.Resource).OfType<List>().First();
        var docs = bundle.Entry.Select(e => e.Resource).OfType<DocumentReference>().ToList();
        switch (mutation)
        {
            case "unknown patient":
                foreach (var d in docs) d.Subject = new ResourceReference("Patient/no-such-patient");
                set.Subject = new ResourceReference("Patient/no-such-patient");
                break;
            case "untrusted absolute patient":
                foreach (var d in docs) d.Subject = new ResourceReference("http://elsewhere.example/fhir/Patient/1");
                set.Subject = new ResourceReference("http://elsewhere.example/fhir/Patient/1");
                break;
            case "hash mismatch": docs[0].Content[0].Attachment.Hash = SHA1.HashData("something else"u8.ToArray()); break;
            case "size mismatch": docs[1].Content[0].Attachment.SizeUnsignedInt += 1; break;
            case "missing SubmissionSet": bundle.Entry.RemoveAll(e => e.Resource == set); break;
            case "two SubmissionSets":
                var copy = (List)set.DeepCopy();
                bundle.Entry.Add(new Bundle.EntryComponent { FullUrl = "urn:uuid:" + Guid.NewGuid(), Resource = copy, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "List" } });
                break;
            case "document not in SubmissionSet": set.Entry.RemoveAt(1); break;
            case "duplicate masterIdentifier in message": docs[1].MasterIdentifier.Value = docs[0].MasterIdentifier.Value; break;
            case "SubmissionSet lists a missing entry": set.Entry.Add(new List.EntryComponent { Item = new ResourceReference("urn:uuid:" + Guid.NewGuid()) }); break;
            case "attachment names a missing entry": docs[0].Content[0].Attachment.Url = "urn:uuid:" + Guid.NewGuid(); break;
            case "document subject differs from SubmissionSet": docs[0].Subject = new ResourceReference("Patient/someone-else"); break;
        }
        var response = await _http.PostAsync("", Fhir.Json(bundle));
        var oo = await Fhir.ExpectAsync<OperationOutcome>(response, status);
        Assert.True(xdsCode == oo.Issue[0].Details?.Text, $"[{mutation}] expected {xdsCode}, got {oo.Issue[0].Details?.Text}: {oo.Issue[0].Diagnostics}");
        Assert.NotEmpty(oo.Issue[0].Expression);
        await AssertNothingStoredAsync(bundle);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_masterIdentifier_already_registered_is_refused()
    {
        MhdExamples.SkipIfAbsent();
        await PrerequisitesAsync();
        var first = MhdExamples.Load<Bundle>("Bundle-ex-comprehensiveProvideDocumentBundleSimple.json");
        MhdExamples.MakeUniqueIds(first);
        await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(first)), HttpStatusCode.OK);

        var second = MhdExamples.Load<Bundle>("Bundle-ex-comprehensiveProvideDocumentBundleSimple.json");
        var uid = first.Entry.Select(e => e.Resource).OfType<DocumentReference>().Single().MasterIdentifier.Value;
        second.Entry.Select(e => e.Resource).OfType<DocumentReference>().Single().MasterIdentifier.Value = uid;
        var setId = second.Entry.Select(e => e.Resource).OfType<List>().Single().Identifier[0];
        setId.Value += "." + Random.Shared.NextInt64(1, long.MaxValue);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(second)), HttpStatusCode.Conflict);
        Assert.Equal("XDSDuplicateUniqueIdInRegistry", oo.Issue[0].Details.Text);
        var sets = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"List?identifier={Uri.EscapeDataString(setId.Value)}"), HttpStatusCode.OK);
        Assert.Equal(0, sets.Total);
    }

    async System.Threading.Tasks.Task AssertNothingStoredAsync(Bundle bundle)
    {
        foreach (var doc in bundle.Entry.Select(e => e.Resource).OfType<DocumentReference>())
        {
            if (doc.MasterIdentifier?.Value is not { } uid) continue;
            var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?identifier={Uri.EscapeDataString(uid)}"), HttpStatusCode.OK);
            Assert.True(found.Total == 0, $"a DocumentReference with masterIdentifier {uid} was stored");
        }
    }
}

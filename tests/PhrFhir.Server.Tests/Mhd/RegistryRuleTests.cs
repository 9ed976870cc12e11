using System.Net;
using System.Net.Http.Headers;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests.Mhd;

/// <summary>
/// The MHDS registry rules hold on every path that writes a DocumentReference or a List, not only inside
/// ITI-65 (docs/mhd.md "Registry rules"): one cell per rule × write path, each refused with the rule's XDS
/// code in issue.details and nothing stored. Each cell builds its own small registry (a patient, stored
/// bytes, a registered document and SubmissionSet, a superseded document), so cells never share state.
/// </summary>
[Collection("server")]
public sealed class RegistryRuleTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;
    const string Rfc3986 = "urn:ietf:rfc:3986";
    const string ListTypes = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes";
    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";

    const string DuplicateDocumentUid = "duplicate masterIdentifier";
    const string DuplicateSetUid = "duplicate SubmissionSet uniqueId";
    const string ListsItself = "List lists itself";
    const string ReplacesSuperseded = "replaces a superseded document";
    const string UnknownSubject = "unknown subject";
    const string HashOfStoredBytes = "hash differs from the stored bytes";

    static readonly string[] Rules = [DuplicateDocumentUid, DuplicateSetUid, ListsItself, ReplacesSuperseded, UnknownSubject, HashOfStoredBytes];
    static readonly string[] Paths = ["POST", "POST If-None-Exist", "PUT", "PATCH", "conditional PUT", "batch", "transaction", "ITI-65", "ITI-105"];

    static bool Applies(string rule, string path) => (rule, path) switch
    {
        (ListsItself, "POST" or "POST If-None-Exist") => false, // the sender of a create does not know the new List's id
        // ITI-105 carries a DocumentReference with its bytes inline; the server assembles the SubmissionSet.
        (_, "ITI-105") => rule is DuplicateDocumentUid or ReplacesSuperseded or UnknownSubject,
        _ => true,
    };

    public static TheoryData<string, string> Cells()
    {
        var data = new TheoryData<string, string>();
        foreach (var rule in Rules)
            foreach (var path in Paths)
                if (Applies(rule, path)) data.Add(rule, path);
        return data;
    }

    static (HttpStatusCode Status, string Code) Expected(string rule) => rule switch
    {
        DuplicateDocumentUid or DuplicateSetUid => (HttpStatusCode.Conflict, "XDSDuplicateUniqueIdInRegistry"),
        ListsItself or ReplacesSuperseded => (HttpStatusCode.UnprocessableEntity, "XDSRegistryMetadataError"),
        UnknownSubject => (HttpStatusCode.UnprocessableEntity, "XDSUnknownPatientId"),
        HashOfStoredBytes => (HttpStatusCode.UnprocessableEntity, "XDSNonIdenticalHash"),
        _ => throw new ArgumentException(rule),
    };

    /// <summary>What a cell's registry already holds.</summary>
    sealed record World(string Patient, byte[] Bytes, string Binary, string CurrentDoc, string TakenDocUid, string TakenSetUid, string SupersededDoc);

    static string NewOid() => "urn:oid:2.25." + new BigInteger(Guid.NewGuid().ToByteArray(), isUnsigned: true);

    static DocumentReference Document(World w, string description) => new()
    {
        MasterIdentifier = new Identifier(Rfc3986, NewOid()) { Use = Identifier.IdentifierUse.Usual },
        Status = DocumentReferenceStatus.Current,
        Subject = new ResourceReference("Patient/" + w.Patient),
        Type = new CodeableConcept("http://loinc.org", "53576-5", "健康診断結果報告書"),
        Description = description,
        Content = [new DocumentReference.ContentComponent { Attachment = new Attachment
        {
            ContentType = "text/plain", Language = "ja", Url = "Binary/" + w.Binary, SizeUnsignedInt = w.Bytes.Length, Hash = SHA1.HashData(w.Bytes),
        } }],
    };

    static List SubmissionSet(World w, string title, string item) => new()
    {
        Extension = [new Extension(Mhd + "ihe-sourceId", new Identifier(Rfc3986, NewOid()))],
        Identifier = [new Identifier(Rfc3986, NewOid()) { Use = Identifier.IdentifierUse.Usual }],
        Status = List.ListStatus.Current,
        Mode = ListMode.Working,
        Title = title,
        Code = new CodeableConcept(ListTypes, "submissionset"),
        Subject = new ResourceReference("Patient/" + w.Patient),
        Date = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssK", System.Globalization.CultureInfo.InvariantCulture),
        Entry = [new List.EntryComponent { Item = new ResourceReference(item) }],
    };

    async Task<T> CreateAsync<T>(T resource) where T : Resource =>
        await Fhir.ExpectAsync<T>(await _http.PostAsync(resource.TypeName, Fhir.Json(resource)), HttpStatusCode.Created);

    /// <summary>Creates a valid resource with a server-assigned id, for a cell that then updates it.</summary>
    async Task<string> OriginalAsync(Resource valid) =>
        (await Fhir.ExpectAsync<Resource>(await _http.PostAsync(valid.TypeName, Fhir.Json(valid)), HttpStatusCode.Created)).Id!;

    async Task<World> WorldAsync()
    {
        var patient = await CreateAsync(new Patient { Name = [new HumanName { Family = Fhir.Unique("登録"), Given = ["花子"] }] });
        var bytes = Encoding.UTF8.GetBytes("健康診断結果のお知らせ " + Guid.NewGuid());
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("text/plain");
        var binary = await _http.PostAsync("Binary", content);
        Assert.Equal(HttpStatusCode.Created, binary.StatusCode);
        var w = new World(patient.Id!, bytes, binary.Headers.Location!.Segments[^3].TrimEnd('/'), "", "", "", "");

        var current = await CreateAsync(Document(w, "current"));
        var taken = await CreateAsync(Document(w, "taken"));
        var set = await CreateAsync(SubmissionSet(w, "taken", "DocumentReference/" + taken.Id));
        // A plain REST create that replaces another document supersedes it (the same rule as ITI-65).
        var old = await CreateAsync(Document(w, "old"));
        var replacement = Document(w, "replacement");
        replacement.RelatesTo = [new DocumentReference.RelatesToComponent { Code = DocumentRelationshipType.Replaces, Target = new ResourceReference("DocumentReference/" + old.Id) }];
        await CreateAsync(replacement);
        return w with { CurrentDoc = current.Id!, TakenDocUid = taken.MasterIdentifier!.Value!, TakenSetUid = set.Identifier[0].Value!, SupersededDoc = old.Id! };
    }

    /// <summary>Makes a valid resource break the rule; <paramref name="self"/> is how the List can name itself on this path.</summary>
    static void Break(string rule, Resource resource, World w, string? self)
    {
        switch (rule, resource)
        {
            case (DuplicateDocumentUid, DocumentReference doc): doc.MasterIdentifier!.Value = w.TakenDocUid; break;
            case (DuplicateSetUid, List list): list.Identifier[0].Value = w.TakenSetUid; break;
            case (ListsItself, List list): list.Entry.Add(new List.EntryComponent { Item = new ResourceReference(self) }); break;
            case (ReplacesSuperseded, DocumentReference doc):
                doc.RelatesTo = [new DocumentReference.RelatesToComponent { Code = DocumentRelationshipType.Replaces, Target = new ResourceReference("DocumentReference/" + w.SupersededDoc) }];
                break;
            case (UnknownSubject, DocumentReference doc): doc.Subject = new ResourceReference("Patient/nobody-" + Guid.NewGuid().ToString("N")[..12]); break;
            case (HashOfStoredBytes, DocumentReference doc): doc.Content[0].Attachment.Hash = SHA1.HashData("other bytes"u8.ToArray()); break;
            default: throw new ArgumentException($"{rule} does not apply to a {resource.TypeName}");
        }
    }

    /// <summary>The same fault as a FHIRPath Patch of the valid resource (plus the marker).</summary>
    static Parameters Patch(string rule, Resource valid, World w, string marker)
    {
        var patch = new Parameters();
        void Replace(string path, DataType value)
        {
            var op = new Parameters.ParameterComponent { Name = "operation" };
            op.Part.Add(new() { Name = "type", Value = new Code("replace") });
            op.Part.Add(new() { Name = "path", Value = new FhirString(path) });
            op.Part.Add(new() { Name = "value", Value = value });
            patch.Parameter.Add(op);
        }
        if (valid is List) Replace("List.title", new FhirString(marker));
        else Replace("DocumentReference.description", new FhirString(marker));
        switch (rule)
        {
            case DuplicateDocumentUid: Replace("DocumentReference.masterIdentifier.value", new FhirString(w.TakenDocUid)); break;
            case DuplicateSetUid: Replace("List.identifier[0].value", new FhirString(w.TakenSetUid)); break;
            case ListsItself: Replace("List.entry[0].item.reference", new FhirString("List/" + valid.Id)); break;
            case ReplacesSuperseded: // the valid document appends to a current one; the patch turns that into replacing a superseded one
                Replace("DocumentReference.relatesTo[0].code", new Code("replaces"));
                Replace("DocumentReference.relatesTo[0].target.reference", new FhirString("DocumentReference/" + w.SupersededDoc));
                break;
            case UnknownSubject: Replace("DocumentReference.subject.reference", new FhirString("Patient/nobody-" + Guid.NewGuid().ToString("N")[..12])); break;
            case HashOfStoredBytes: Replace("DocumentReference.content[0].attachment.hash", new Base64Binary(SHA1.HashData("other bytes"u8.ToArray()))); break;
        }
        return patch;
    }

    static Bundle.EntryComponent Entry(Resource resource, Bundle.HTTPVerb method, string url, string? fullUrl = null) =>
        new() { FullUrl = fullUrl, Resource = resource, Request = new Bundle.RequestComponent { Method = method, Url = url } };

    [Theory]
    [MemberData(nameof(Cells))]
    public async Task Every_write_path_refuses_what_the_registry_rules_forbid_and_stores_nothing(string rule, string path)
    {
        var w = await WorldAsync();
        var marker = Fhir.Unique("broken");
        var id = Fhir.Unique("r");
        var isList = rule is DuplicateSetUid or ListsItself;
        Resource Valid(string text) => isList ? SubmissionSet(w, text, "DocumentReference/" + w.CurrentDoc) : Document(w, text);
        Resource Broken(string? self)
        {
            var r = Valid(marker);
            Break(rule, r, w, self);
            return r;
        }
        var type = isList ? "List" : "DocumentReference";

        HttpResponseMessage response;
        switch (path)
        {
            case "POST":
                response = await _http.PostAsync(type, Fhir.Json(Broken(null)));
                break;
            case "POST If-None-Exist":
                var conditional = new HttpRequestMessage(HttpMethod.Post, type) { Content = Fhir.Json(Broken(null)) };
                conditional.Headers.Add("If-None-Exist", "_id=" + id); // matches nothing: a create
                response = await _http.SendAsync(conditional);
                break;
            // Updates start from a valid original the server created (a PUT choosing a new id is refused to
            // an institution, docs/consent.md "Writes"); the broken version then goes to that id.
            case "PUT":
                var originalId = await OriginalAsync(Valid("original"));
                var update = Broken($"List/{originalId}");
                update.Id = originalId;
                response = await _http.PutAsync($"{type}/{originalId}", Fhir.Json(update));
                break;
            case "PATCH":
                var valid = Valid("original");
                if (rule == ReplacesSuperseded)
                    ((DocumentReference)valid).RelatesTo = [new DocumentReference.RelatesToComponent { Code = DocumentRelationshipType.Appends, Target = new ResourceReference("DocumentReference/" + w.CurrentDoc) }];
                valid.Id = await OriginalAsync(valid);
                response = await _http.PatchAsync($"{type}/{valid.Id}", Fhir.Json(Patch(rule, valid, w, marker)));
                break;
            case "conditional PUT":
                var matchedId = await OriginalAsync(Valid("original"));
                var conditionalUpdate = Broken($"List/{matchedId}");
                conditionalUpdate.Id = matchedId;
                response = await _http.PutAsync($"{type}?_id={matchedId}", Fhir.Json(conditionalUpdate)); // matches the original: its update
                break;
            case "batch":
                var batchedId = await OriginalAsync(Valid("original"));
                var inBatch = Broken($"List/{batchedId}");
                inBatch.Id = batchedId;
                var batch = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(new Bundle
                {
                    Type = Bundle.BundleType.Batch,
                    Entry = [Entry(inBatch, Bundle.HTTPVerb.PUT, $"{type}/{batchedId}")],
                })), HttpStatusCode.OK);
                // A batch entry fails alone: its response carries the status and the OperationOutcome.
                var answer = batch.Entry.Single().Response!;
                var (status, code) = Expected(rule);
                Assert.True(answer.Status!.StartsWith(((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal),
                    $"[{rule} × {path}] expected {(int)status}, got {answer.Status}");
                Assert.Equal(code, ((OperationOutcome)answer.Outcome!).Issue[0].Details?.Text);
                await AssertNothingStoredAsync(marker, rule, path);
                return;
            case "transaction":
                var fullUrl = "urn:uuid:" + Guid.NewGuid();
                var inTransaction = Broken(fullUrl);
                // A transaction carrying a SubmissionSet is an ITI-65 submission (the next path): here a Folder,
                // whose uniqueId shares the SubmissionSets' registry.
                if (inTransaction is List folder) folder.Code = new CodeableConcept(ListTypes, "folder");
                response = await _http.PostAsync("", Fhir.Json(new Bundle
                {
                    Type = Bundle.BundleType.Transaction,
                    Entry = [Entry(inTransaction, Bundle.HTTPVerb.POST, type, fullUrl)],
                }));
                break;
            case "ITI-65":
                response = await _http.PostAsync("", Fhir.Json(ProvideDocumentBundle(rule, w, marker)));
                break;
            case "ITI-105":
                var inline = (DocumentReference)Broken(null);
                inline.Content[0].Attachment = new Attachment { ContentType = "text/plain", Language = "ja", Data = w.Bytes };
                response = await _http.PostAsync("DocumentReference", Fhir.Json(inline));
                break;
            default: throw new ArgumentException(path);
        }
        var (expectedStatus, expectedCode) = Expected(rule);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expectedStatus, $"[{rule} × {path}] expected {(int)expectedStatus}, got {(int)response.StatusCode}: {body}");
        var outcome = await Fhir.ReadAsync<OperationOutcome>(response);
        Assert.True(expectedCode == outcome.Issue[0].Details?.Text, $"[{rule} × {path}] expected {expectedCode}, got {outcome.Issue[0].Details?.Text}: {outcome.Issue[0].Diagnostics}");
        await AssertNothingStoredAsync(marker, rule, path);
    }

    /// <summary>An ITI-65 Minimal submission (SubmissionSet, DocumentReference, its bytes) with the rule broken in the resource it concerns.</summary>
    static Bundle ProvideDocumentBundle(string rule, World w, string marker)
    {
        string setUrl = "urn:uuid:" + Guid.NewGuid(), docUrl = "urn:uuid:" + Guid.NewGuid(), binaryUrl = "urn:uuid:" + Guid.NewGuid();
        var doc = Document(w, marker);
        doc.Content[0].Attachment.Url = binaryUrl;
        var set = SubmissionSet(w, marker, docUrl);
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Meta = new Meta { Profile = [Mhd + "IHE.MHD.Minimal.ProvideBundle"] },
            Entry =
            [
                Entry(set, Bundle.HTTPVerb.POST, "List", setUrl),
                Entry(doc, Bundle.HTTPVerb.POST, "DocumentReference", docUrl),
                Entry(new Binary { ContentType = "text/plain", Data = w.Bytes }, Bundle.HTTPVerb.POST, "Binary", binaryUrl),
            ],
        };
        if (rule == HashOfStoredBytes)
        {
            bundle.Entry.RemoveAt(2); // the document's bytes are already on the server
            doc.Content[0].Attachment.Url = "Binary/" + w.Binary;
        }
        Break(rule, rule is DuplicateSetUid or ListsItself ? set : doc, w, setUrl);
        set.Subject = new ResourceReference(doc.Subject!.Reference); // the SubmissionSet's patient is the document's
        return bundle;
    }

    async Task AssertNothingStoredAsync(string marker, string rule, string path)
    {
        var docs = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?description={marker}"), HttpStatusCode.OK);
        Assert.True(docs.Total == 0, $"[{rule} × {path}] the refused DocumentReference was stored");
        var lists = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"List?title={marker}"), HttpStatusCode.OK);
        Assert.True(lists.Total == 0, $"[{rule} × {path}] the refused List was stored");
    }

    [Fact]
    public async Task A_plain_create_that_replaces_a_document_supersedes_it()
    {
        var w = await WorldAsync();
        var old = await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync("DocumentReference/" + w.SupersededDoc), HttpStatusCode.OK);
        Assert.Equal(DocumentReferenceStatus.Superseded, old.Status);
        Assert.Equal("2", old.Meta?.VersionId);
    }

    [Fact]
    public async Task A_plain_List_with_the_same_identifier_neither_blocks_nor_hides_a_SubmissionSets_uniqueId()
    {
        // The uniqueId rule spans SubmissionSets and Folders only; the server looks the identifier up first and
        // the List type only when something carries it, so both steps are exercised here.
        var w = await WorldAsync();
        var doc = await CreateAsync(Document(w, "shared uniqueId"));
        var uid = NewOid();
        await CreateAsync(new List
        {
            Identifier = [new Identifier(Rfc3986, uid) { Use = Identifier.IdentifierUse.Usual }],
            Status = List.ListStatus.Current, Mode = ListMode.Working, Title = "健診の控え",
        });
        var set = SubmissionSet(w, "first with the identifier", "DocumentReference/" + doc.Id);
        set.Identifier[0].Value = uid;
        await CreateAsync(set);

        var folder = SubmissionSet(w, "second with the identifier", "DocumentReference/" + doc.Id);
        folder.Identifier[0].Value = uid;
        folder.Code = new CodeableConcept(ListTypes, "folder");
        var refused = await _http.PostAsync("List", Fhir.Json(folder));
        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        Assert.Equal("XDSDuplicateUniqueIdInRegistry", (await Fhir.ReadAsync<OperationOutcome>(refused)).Issue[0].Details?.Text);
    }

    [Fact]
    public async Task An_update_that_keeps_the_documents_own_uniqueId_is_accepted()
    {
        var w = await WorldAsync();
        var doc = await CreateAsync(Document(w, "mine"));
        doc.Description = "mine, corrected";
        await Fhir.ExpectAsync<DocumentReference>(await _http.PutAsync($"DocumentReference/{doc.Id}", Fhir.Json(doc)), HttpStatusCode.OK);
    }

    [Fact]
    public async Task A_size_that_differs_from_the_stored_bytes_is_refused()
    {
        var w = await WorldAsync();
        var doc = Document(w, Fhir.Unique("size"));
        doc.Content[0].Attachment.SizeUnsignedInt = w.Bytes.Length + 1;
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("DocumentReference", Fhir.Json(doc)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("XDSNonIdenticalSize", outcome.Issue[0].Details?.Text);
        Assert.Equal("DocumentReference.content[0].attachment.size", outcome.Issue[0].Expression.Single());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task In_a_transaction_the_bytes_of_a_later_entry_are_compared_before_commit(bool matching)
    {
        var w = await WorldAsync();
        var marker = Fhir.Unique("later");
        string patientUrl = "urn:uuid:" + Guid.NewGuid(), binaryUrl = "urn:uuid:" + Guid.NewGuid();
        var bytes = Encoding.UTF8.GetBytes("紹介状 " + marker);
        var doc = Document(w, marker);
        doc.Subject = new ResourceReference(patientUrl); // a Patient this same transaction registers, in a later entry
        doc.Content[0].Attachment.Url = binaryUrl;
        doc.Content[0].Attachment.SizeUnsignedInt = bytes.Length;
        doc.Content[0].Attachment.Hash = SHA1.HashData(matching ? bytes : w.Bytes);
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                Entry(doc, Bundle.HTTPVerb.POST, "DocumentReference", "urn:uuid:" + Guid.NewGuid()),
                Entry(new Binary { ContentType = "text/plain", Data = bytes }, Bundle.HTTPVerb.POST, "Binary", binaryUrl),
                Entry(new Patient { Name = [new HumanName { Family = marker }] }, Bundle.HTTPVerb.POST, "Patient", patientUrl),
            ],
        };
        var response = await _http.PostAsync("", Fhir.Json(bundle));
        if (matching)
        {
            await Fhir.ExpectAsync<Bundle>(response, HttpStatusCode.OK);
            return;
        }
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.UnprocessableEntity);
        Assert.Equal("XDSNonIdenticalHash", outcome.Issue[0].Details?.Text);
        await AssertNothingStoredAsync(marker, HashOfStoredBytes, "transaction, bytes in a later entry");
        var patients = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={marker}"), HttpStatusCode.OK);
        Assert.Equal(0, patients.Total);
    }

    [Theory]
    [InlineData("DocumentReference")]
    [InlineData("List")]
    public async Task Concurrent_writes_of_one_uniqueId_register_exactly_one(string type)
    {
        var w = await WorldAsync();
        var uid = NewOid();
        var marker = Fhir.Unique("race");
        Resource Copy()
        {
            Resource r = type == "List" ? SubmissionSet(w, marker, "DocumentReference/" + w.CurrentDoc) : Document(w, marker);
            if (r is List l) l.Identifier[0].Value = uid;
            else ((DocumentReference)r).MasterIdentifier!.Value = uid;
            return r;
        }
        var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => _http.PostAsync(type, Fhir.Json(Copy()))));
        Assert.Equal(1, answers.Count(a => a.StatusCode == HttpStatusCode.Created));
        Assert.Equal(5, answers.Count(a => a.StatusCode == HttpStatusCode.Conflict));
        var stored = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"{type}?identifier={Uri.EscapeDataString(uid)}"), HttpStatusCode.OK);
        Assert.Equal(1, stored.Total);
    }

    [Fact]
    public async Task Transactions_racing_for_two_uniqueIds_in_opposite_orders_register_one_and_answer_the_other_409()
    {
        var w = await WorldAsync();
        Bundle Transaction(string first, string second)
        {
            var bundle = new Bundle { Type = Bundle.BundleType.Transaction };
            foreach (var uid in new[] { first, second })
            {
                var doc = Document(w, Fhir.Unique("pair"));
                doc.MasterIdentifier!.Value = uid;
                bundle.Entry.Add(Entry(doc, Bundle.HTTPVerb.POST, "DocumentReference", "urn:uuid:" + Guid.NewGuid()));
            }
            return bundle;
        }
        // Each pair takes the uniqueId locks in opposite orders: PostgreSQL may end one as a deadlock,
        // which must read as a conflict like any lost race, never a 500.
        var pairs = Enumerable.Range(0, 4).Select(_ => (A: NewOid(), B: NewOid())).ToList();
        var answers = await Task.WhenAll(pairs.SelectMany(p => new[] { Transaction(p.A, p.B), Transaction(p.B, p.A) })
            .Select(b => _http.PostAsync("", Fhir.Json(b))));
        for (var i = 0; i < pairs.Count; i++)
        {
            var statuses = new[] { answers[2 * i].StatusCode, answers[2 * i + 1].StatusCode };
            Assert.True(statuses.Count(s => s == HttpStatusCode.OK) == 1 && statuses.Count(s => s == HttpStatusCode.Conflict) == 1,
                $"pair {i}: {string.Join(", ", statuses.Select(s => (int)s))}");
        }
    }

    [Theory]
    [InlineData(Bundle.BundleType.Batch)]
    [InlineData(Bundle.BundleType.Transaction)]
    public async Task A_Bundle_with_a_repeated_fullUrl_is_refused_and_stores_nothing(Bundle.BundleType type)
    {
        var family = Fhir.Unique("重複");
        var fullUrl = "urn:uuid:" + Guid.NewGuid();
        var bundle = new Bundle
        {
            Type = type,
            Entry =
            [
                Entry(new Patient { Name = [new HumanName { Family = family }] }, Bundle.HTTPVerb.POST, "Patient", fullUrl),
                Entry(new Patient { Name = [new HumanName { Family = family, Given = ["二"] }] }, Bundle.HTTPVerb.POST, "Patient", fullUrl),
            ],
        };
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.BadRequest);
        Assert.Equal("Bundle.entry[1].fullUrl", outcome.Issue[0].Expression.Single());
        var stored = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={family}"), HttpStatusCode.OK);
        Assert.Equal(0, stored.Total);
    }

    /// <summary>
    /// The checks of a transaction's later entries see what its earlier entries queued, although the versions are
    /// sent together at commit (WriteTransaction: a read flushes only what it could see): a Patient the known-patient
    /// rule accepted for one document does not let another document's unknown Patient through, and a document's
    /// uniqueId taken by an earlier entry of the same transaction is refused.
    /// </summary>
    [Theory]
    [InlineData(UnknownSubject)]
    [InlineData(DuplicateDocumentUid)]
    public async Task In_a_transaction_a_later_document_meets_the_rules_against_the_earlier_entries(string rule)
    {
        var w = await WorldAsync();
        var marker = Fhir.Unique("later-rule");
        var first = Document(w, marker);
        var second = Document(w, marker);
        if (rule == UnknownSubject) Break(rule, second, w, null);
        else second.MasterIdentifier!.Value = first.MasterIdentifier!.Value;
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                Entry(first, Bundle.HTTPVerb.POST, "DocumentReference", "urn:uuid:" + Guid.NewGuid()),
                Entry(second, Bundle.HTTPVerb.POST, "DocumentReference", "urn:uuid:" + Guid.NewGuid()),
            ],
        };
        var (status, code) = Expected(rule);
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), status);
        Assert.Equal(code, outcome.Issue[0].Details?.Text);
        Assert.StartsWith("Bundle.entry[1].resource", outcome.Issue[0].Expression.Single());
        await AssertNothingStoredAsync(marker, rule, "transaction, second document");
    }
}

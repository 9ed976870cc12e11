using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Server.Tests.Audit;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests.Sharing;

/// <summary>
/// SMART Health Links (docs/sharing.md): the person shares chosen documents by link and QR; the recipient
/// opens the manifest (no token) and decrypts the files; wrong passcodes are counted atomically; revocation
/// and expiry answer 404; the same link is a VHL folder search; every access is in the person's log.
/// </summary>
[Collection("server")]
public sealed class ShareLinkTests(ServerFixture server)
{
    const string PersonSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";

    sealed record Shared(string Patient, HttpClient Person, List<(string Id, byte[] Bytes)> Documents);

    /// <summary>The person ("test-person") with three documents of their own, pushed by their app (ITI-105).</summary>
    async Task<Shared> PersonWithDocumentsAsync(int count = 3)
    {
        var register = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, "00012345")], Name = [new HumanName { Family = "山田" }] }),
        };
        register.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={PersonSystem}|00012345");
        Assert.True((await server.Http.SendAsync(register)).IsSuccessStatusCode);
        var person = await server.ClientAsync("test-person");
        var patient = ((Bundle)await Fhir.ExpectAsync<Bundle>(await person.GetAsync("Patient"), HttpStatusCode.OK)).Entry.Single().Resource.Id;
        var documents = new List<(string, byte[])>();
        for (var i = 0; i < count; i++)
        {
            var bytes = Encoding.UTF8.GetBytes($"健康診断結果 {i} {Guid.NewGuid()}");
            var doc = await Fhir.ExpectAsync<DocumentReference>(await person.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
            {
                Status = DocumentReferenceStatus.Current,
                MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:1.2.392.200119.6.999." + Random.Shared.NextInt64(1, long.MaxValue)),
                Subject = new ResourceReference("Patient/" + patient),
                Type = new CodeableConcept("http://loinc.org", "53576-5", "健康診断結果報告書"),
                Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = bytes } }],
            })), HttpStatusCode.Created);
            documents.Add((doc.Id, bytes));
        }
        return new Shared(patient, person, documents);
    }

    static Parameters ShareParameters(IEnumerable<string> documents, string? passcode = null, bool longTerm = false, string? label = "主治医へ",
        DateTimeOffset? expires = null, bool? directFile = null, bool? preEncrypt = null)
    {
        var p = new Parameters();
        foreach (var d in documents) p.Parameter.Add(new() { Name = "documentReference", Value = new ResourceReference("DocumentReference/" + d) });
        if (passcode is not null) p.Parameter.Add(new() { Name = "passcode", Value = new FhirString(passcode) });
        if (label is not null) p.Parameter.Add(new() { Name = "label", Value = new FhirString(label) });
        p.Parameter.Add(new() { Name = "expires", Value = new Instant(expires ?? DateTimeOffset.UtcNow.AddDays(7)) });
        if (longTerm) p.Parameter.Add(new() { Name = "longTerm", Value = new FhirBoolean(true) });
        if (directFile is { } u) p.Parameter.Add(new() { Name = "directFile", Value = new FhirBoolean(u) });
        if (preEncrypt is { } pe) p.Parameter.Add(new() { Name = "preEncrypt", Value = new FhirBoolean(pe) });
        return p;
    }

    sealed record Issued(string Shlink, JsonElement Payload, byte[] Qr, string LinkId, string Consent);

    static async Task<Issued> ShareAsync(Shared s, Parameters parameters)
    {
        var result = await Fhir.ExpectAsync<Parameters>(await s.Person.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(parameters)), HttpStatusCode.Created);
        var shlink = ((FhirString)result.GetSingle("shlink").Value).Value;
        Assert.StartsWith("shlink:/", shlink, StringComparison.Ordinal);
        var payload = JsonDocument.Parse(System.Buffers.Text.Base64Url.DecodeFromChars(shlink.AsSpan("shlink:/".Length))).RootElement.Clone();
        return new Issued(shlink, payload, ((Attachment)result.GetSingle("qr").Value).Data, ((FhirString)result.GetSingle("link").Value).Value,
            ((ResourceReference)result.GetSingle("consent").Value).Reference);
    }

    static string Url(Issued link) => link.Payload.GetProperty("url").GetString()!;

    static byte[] Key(Issued link) => System.Buffers.Text.Base64Url.DecodeFromChars(link.Payload.GetProperty("key").GetString()!);

    static Task<HttpResponseMessage> ManifestAsync(Issued link, string? passcode, int? embeddedLengthMax = null, string recipient = "Dr. 佐藤 (佐藤内科)")
    {
        var body = new Dictionary<string, object> { ["recipient"] = recipient };
        if (passcode is not null) body["passcode"] = passcode;
        if (embeddedLengthMax is { } max) body["embeddedLengthMax"] = max;
        return new HttpClient().PostAsJsonAsync(Url(link), body); // no token: the URL is the capability
    }

    /// <summary>The documents each file decrypts to (jose-jwt here; tests/api/shl-decrypt.mjs checks the same with npm jose).</summary>
    static async Task<List<Bundle>> FilesAsync(Issued link, HttpResponseMessage manifest)
    {
        Assert.Equal(HttpStatusCode.OK, manifest.StatusCode);
        var files = JsonDocument.Parse(await manifest.Content.ReadAsStringAsync()).RootElement.GetProperty("files");
        var bundles = new List<Bundle>();
        foreach (var file in files.EnumerateArray())
        {
            Assert.Equal("application/fhir+json", file.GetProperty("contentType").GetString());
            string jwe;
            if (file.TryGetProperty("embedded", out var embedded)) jwe = embedded.GetString()!;
            else
            {
                var fetched = await new HttpClient().GetAsync(file.GetProperty("location").GetString());
                Assert.Equal(HttpStatusCode.OK, fetched.StatusCode);
                Assert.Equal("application/jose", fetched.Content.Headers.ContentType?.MediaType);
                jwe = await fetched.Content.ReadAsStringAsync();
            }
            var header = Jose.JWT.Headers(jwe);
            Assert.Equal("dir", header["alg"]);
            Assert.Equal("A256GCM", header["enc"]);
            Assert.Equal("application/fhir+json", header["cty"]);
            var plain = Jose.JWT.DecodeBytes(jwe, Key(link));
            bundles.Add(new FhirJsonDeserializer().Deserialize<Bundle>(Encoding.UTF8.GetString(plain)));
        }
        return bundles;
    }

    static List<(string Id, byte[] Bytes)> Contents(IEnumerable<Bundle> files) =>
        [.. files.Select(b => (b.Entry.Select(e => e.Resource).OfType<DocumentReference>().Single().Id, b.Entry.Select(e => e.Resource).OfType<Binary>().Single().Data))];

    [Fact]
    public async Task Sharing_two_documents_with_a_passcode_gives_a_link_whose_payload_and_QR_decode_to_it()
    {
        var s = await PersonWithDocumentsAsync(2);
        var link = await ShareAsync(s, ShareParameters(s.Documents.Select(d => d.Id), passcode: "1234"));

        Assert.True(Url(link).Length <= 128, Url(link));
        Assert.Equal(32, Key(link).Length);
        Assert.Equal("P", link.Payload.GetProperty("flag").GetString());
        Assert.Equal(1, link.Payload.GetProperty("v").GetInt32());
        Assert.Equal("主治医へ", link.Payload.GetProperty("label").GetString());
        Assert.True(link.Payload.GetProperty("exp").GetInt64() > DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        Assert.EndsWith("/shl/" + link.LinkId, Url(link), StringComparison.Ordinal);
        Assert.Matches("^[A-Za-z0-9]{43}$", link.LinkId);

        var image = StbImageSharp.ImageResult.FromMemory(link.Qr, StbImageSharp.ColorComponents.RedGreenBlue);
        var luminance = new ZXing.RGBLuminanceSource(image.Data, image.Width, image.Height, ZXing.RGBLuminanceSource.BitmapFormat.RGB24);
        var decoded = new ZXing.QrCode.QRCodeReader().decode(new ZXing.BinaryBitmap(new ZXing.Common.HybridBinarizer(luminance)));
        Assert.Equal(link.Shlink, decoded.Text);

        // The link is recorded as the person's PCF Consent naming exactly those documents, and as a folder List.
        var consent = await Fhir.ExpectAsync<Consent>(await s.Person.GetAsync(link.Consent), HttpStatusCode.OK);
        Assert.Equal(Consent.ConsentState.Active, consent.Status);
        Assert.Equal(s.Documents.Select(d => "DocumentReference/" + d.Id).Order(), consent.Provision.Data.Select(d => d.Reference.Reference).Order());
        Assert.Equal(link.LinkId, consent.Provision.Actor.Single().Reference.Identifier.Value);
        var folder = await Fhir.ExpectAsync<List>(await s.Person.GetAsync("List/" + link.LinkId), HttpStatusCode.OK);
        Assert.Equal("folder", folder.Code.Coding.Single().Code);
        Assert.Equal(2, folder.Entry.Count);
    }

    public static TheoryData<string, string> RefusedShares => new()
    {
        { "passcode with directFile (P with U)", """{"resourceType":"Parameters","parameter":[{"name":"documentReference","valueReference":{"reference":"DocumentReference/DOC"}},{"name":"passcode","valueString":"1234"},{"name":"directFile","valueBoolean":true}]}""" },
        { "label over 80 characters", """{"resourceType":"Parameters","parameter":[{"name":"documentReference","valueReference":{"reference":"DocumentReference/DOC"}},{"name":"label","valueString":"LONG"}]}""" },
        { "expiry in the past", """{"resourceType":"Parameters","parameter":[{"name":"documentReference","valueReference":{"reference":"DocumentReference/DOC"}},{"name":"expires","valueInstant":"2020-01-01T00:00:00Z"}]}""" },
        { "no document", """{"resourceType":"Parameters","parameter":[{"name":"label","valueString":"x"}]}""" },
        { "unknown parameter", """{"resourceType":"Parameters","parameter":[{"name":"documentReference","valueReference":{"reference":"DocumentReference/DOC"}},{"name":"everything","valueBoolean":true}]}""" },
    };

    [Theory]
    [MemberData(nameof(RefusedShares))]
    public async Task Invalid_share_requests_are_refused_with_400_and_store_nothing(string why, string body)
    {
        var s = await PersonWithDocumentsAsync(1);
        var before = await LinkCountAsync(s);
        var response = await s.Person.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(body.Replace("DOC", s.Documents[0].Id).Replace("LONG", new string('あ', 81))));
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{why}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        Assert.Equal(before, await LinkCountAsync(s));
    }

    static async Task<int> LinkCountAsync(Shared s)
    {
        var response = await s.Person.GetAsync($"Patient/{s.Patient}/$share");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        // Parsed as plain JSON: a person without links gets an empty Parameters, which the strict parser refuses.
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.TryGetProperty("parameter", out var p) ? p.GetArrayLength() : 0;
    }

    [Fact]
    public async Task Only_the_persons_own_documents_can_be_shared_and_only_by_them()
    {
        var s = await PersonWithDocumentsAsync(1);
        var other = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("他人") }] })), HttpStatusCode.Created);
        var theirs = await Fhir.ExpectAsync<DocumentReference>(await server.Http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:1.2.392.200119.6.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Subject = new ResourceReference("Patient/" + other.Id),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = [1, 2, 3] } }],
        })), HttpStatusCode.Created);
        // Someone else's document answers as a missing one.
        var missing = await s.Person.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(ShareParameters(["no-such-document"])));
        var hidden = await s.Person.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(ShareParameters([theirs.Id])));
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, hidden.StatusCode);
        // Another patient's share operation, and an institution sharing the person's documents: 403.
        Assert.Equal(HttpStatusCode.Forbidden, (await s.Person.PostAsync($"Patient/{other.Id}/$share", Fhir.Json(ShareParameters([theirs.Id])))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await server.Http.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(ShareParameters([s.Documents[0].Id])))).StatusCode);
    }

    [Fact]
    public async Task The_right_passcode_gives_a_manifest_whose_files_decrypt_to_exactly_the_shared_documents()
    {
        var s = await PersonWithDocumentsAsync(3);
        var shared = s.Documents.Take(2).ToList();
        var link = await ShareAsync(s, ShareParameters(shared.Select(d => d.Id), passcode: "secret-9"));

        var byLocation = Contents(await FilesAsync(link, await ManifestAsync(link, "secret-9")));
        Assert.Equal(shared.OrderBy(d => d.Id).Select(d => (d.Id, Convert.ToBase64String(d.Bytes))),
            byLocation.OrderBy(d => d.Id).Select(d => (d.Id, Convert.ToBase64String(d.Bytes))));
        // Embedded when small enough: the same contents.
        var embedded = await ManifestAsync(link, "secret-9", embeddedLengthMax: 1_000_000);
        var body = await embedded.Content.ReadAsStringAsync();
        Assert.DoesNotContain("location", body, StringComparison.Ordinal);
        Assert.Equal(byLocation.OrderBy(d => d.Id).Select(d => d.Id), Contents(await FilesAsync(link, new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent(body) })).OrderBy(d => d.Id).Select(d => d.Id));

        // No passcode: 401 with the attempts left (SHL), one attempt fewer.
        var none = await ManifestAsync(link, null);
        Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
        Assert.Equal(4, JsonDocument.Parse(await none.Content.ReadAsStringAsync()).RootElement.GetProperty("remainingAttempts").GetInt32());
        // No recipient: 400.
        Assert.Equal(HttpStatusCode.BadRequest, (await new HttpClient().PostAsJsonAsync(Url(link), new { passcode = "secret-9" })).StatusCode);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[]")]
    [InlineData("{}")]
    [InlineData("""{"recipient": 5}""")]
    [InlineData("""{"recipient": "Dr. 佐藤", "embeddedLengthMax": "a lot"}""")]
    [InlineData("""{"recipient": "Dr. 佐藤", "passcode": ["1234"]}""")]
    public async Task Malformed_manifest_requests_answer_400_with_an_OperationOutcome(string body)
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id]));
        var response = await new HttpClient().PostAsync(Url(link), new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{body}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        Assert.Equal("OperationOutcome", JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("resourceType").GetString());
    }

    [Fact]
    public async Task Twenty_parallel_wrong_passcodes_get_exactly_five_401s_and_then_the_link_is_dead()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], passcode: "right-one"));
        var answers = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => ManifestAsync(link, "wrong-" + i)));
        var refused = answers.Where(a => a.StatusCode == HttpStatusCode.Unauthorized).ToList();
        Assert.True(answers.All(a => a.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.NotFound),
            string.Join(", ", answers.Select(a => (int)a.StatusCode)) + ": " + string.Join(" | ", await Task.WhenAll(answers.Where(a => a.StatusCode is not (HttpStatusCode.Unauthorized or HttpStatusCode.NotFound)).Select(a => a.Content.ReadAsStringAsync()))));
        Assert.Equal(5, refused.Count);
        Assert.Equal(15, answers.Count(a => a.StatusCode == HttpStatusCode.NotFound));
        var remaining = await Task.WhenAll(refused.Select(async r => JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("remainingAttempts").GetInt32()));
        Assert.Equal([0, 1, 2, 3, 4], remaining.Order()); // each attempt took its own decrement
        Assert.Equal(HttpStatusCode.NotFound, (await ManifestAsync(link, "right-one")).StatusCode);
    }

    [Fact]
    public async Task Location_urls_expire()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id]));
        var manifest = JsonDocument.Parse(await (await ManifestAsync(link, null)).Content.ReadAsStringAsync()).RootElement;
        var location = manifest.GetProperty("files")[0].GetProperty("location").GetString()!;
        Assert.Equal(HttpStatusCode.OK, (await new HttpClient().GetAsync(location)).StatusCode);
        // An hour later (the row's expiry moved into the past, as time would).
        var store = server.Services.GetRequiredService<PhrFhir.Storage.FhirStore>();
        await using (var cmd = store.DataSource.CreateCommand("update fhir.share_file set expires = now() - interval '1 second' where token = $1"))
        {
            cmd.Parameters.Add(new() { Value = location[(location.LastIndexOf('/') + 1)..] });
            Assert.Equal(1, await cmd.ExecuteNonQueryAsync());
        }
        Assert.Equal(HttpStatusCode.NotFound, (await new HttpClient().GetAsync(location)).StatusCode);
    }

    [Fact]
    public async Task Revoking_a_link_makes_its_manifest_and_locations_404_at_once()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id]));
        var manifest = JsonDocument.Parse(await (await ManifestAsync(link, null)).Content.ReadAsStringAsync()).RootElement;
        var location = manifest.GetProperty("files")[0].GetProperty("location").GetString()!;

        var started = DateTimeOffset.UtcNow;
        Assert.Equal(HttpStatusCode.NoContent, (await s.Person.DeleteAsync($"Patient/{s.Patient}/$share/{link.LinkId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await ManifestAsync(link, null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await new HttpClient().GetAsync(location)).StatusCode);
        Assert.True(DateTimeOffset.UtcNow - started < TimeSpan.FromSeconds(1));

        var consent = await Fhir.ExpectAsync<Consent>(await s.Person.GetAsync(link.Consent), HttpStatusCode.OK);
        Assert.Equal(Consent.ConsentState.Inactive, consent.Status);
        var listed = (await Fhir.ExpectAsync<Parameters>(await s.Person.GetAsync($"Patient/{s.Patient}/$share"), HttpStatusCode.OK))
            .Parameter.Single(p => p.Part.Any(x => x.Name == "id" && ((FhirString)x.Value).Value == link.LinkId));
        Assert.True(((FhirBoolean)listed.Part.Single(x => x.Name == "revoked").Value).Value);
        Assert.False(((FhirBoolean)listed.Part.Single(x => x.Name == "active").Value).Value);
        Assert.Equal(1, ((Integer)listed.Part.Single(x => x.Name == "timesOpened").Value).Value);
        Assert.Equal("主治医へ", ((FhirString)listed.Part.Single(x => x.Name == "label").Value).Value);
        Assert.Equal(HttpStatusCode.NotFound, (await s.Person.DeleteAsync($"Patient/{s.Patient}/$share/{link.LinkId}")).StatusCode);
    }

    [Fact]
    public async Task Making_the_links_Consent_inactive_revokes_it_too()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id]));
        Assert.Equal(HttpStatusCode.OK, (await ManifestAsync(link, null)).StatusCode);
        var consent = await Fhir.ExpectAsync<Consent>(await s.Person.GetAsync(link.Consent), HttpStatusCode.OK);
        consent.Status = Consent.ConsentState.Inactive;
        Assert.Equal(HttpStatusCode.OK, (await s.Person.PutAsync(link.Consent, Fhir.Json(consent))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await ManifestAsync(link, null)).StatusCode);
    }

    [Fact]
    public async Task A_long_term_link_polled_too_often_answers_429_with_Retry_After()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], longTerm: true));
        Assert.Equal("L", link.Payload.GetProperty("flag").GetString());
        Assert.Equal(HttpStatusCode.OK, (await ManifestAsync(link, null)).StatusCode);
        var again = await ManifestAsync(link, null);
        Assert.Equal((HttpStatusCode)429, again.StatusCode);
        Assert.NotNull(again.Headers.RetryAfter);
    }

    [Fact]
    public async Task A_direct_file_link_answers_its_one_file_to_a_GET()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], directFile: true));
        Assert.Equal("U", link.Payload.GetProperty("flag").GetString());
        var response = await new HttpClient().GetAsync(Url(link) + "?recipient=" + Uri.EscapeDataString("救急外来"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var plain = Jose.JWT.DecodeBytes(await response.Content.ReadAsStringAsync(), Key(link));
        Assert.Equal(s.Documents[0].Bytes, new FhirJsonDeserializer().Deserialize<Bundle>(Encoding.UTF8.GetString(plain)).Entry.Select(e => e.Resource).OfType<Binary>().Single().Data);
    }

    [Fact]
    public async Task The_VHL_folder_search_returns_the_same_documents_and_ITI_68_serves_their_bytes()
    {
        var s = await PersonWithDocumentsAsync(3);
        var shared = s.Documents.Take(2).ToList();
        var link = await ShareAsync(s, ShareParameters(shared.Select(d => d.Id), passcode: "vhl-pass"));
        using var physician = await server.ClientAsync("test-physician");
        var form = new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["_id"] = link.LinkId,
            ["code"] = "folder",
            ["status"] = "current",
            ["_include"] = "List:item",
            ["recipient"] = "Dr. 佐藤",
            ["passcode"] = "vhl-pass",
        });
        var bundle = await Fhir.ExpectAsync<Bundle>(await physician.PostAsync("List/_search", form), HttpStatusCode.OK);
        Assert.Equal(link.LinkId, bundle.Entry.Select(e => e.Resource).OfType<List>().Single().Id);
        var docs = bundle.Entry.Select(e => e.Resource).OfType<DocumentReference>().ToList();
        Assert.Equal(shared.Select(d => d.Id).Order(), docs.Select(d => d.Id).Order());
        foreach (var doc in docs)
        {
            var raw = new HttpRequestMessage(HttpMethod.Get, doc.Content[0].Attachment.Url);
            var bytes = await (await new HttpClient().SendAsync(raw)).Content.ReadAsByteArrayAsync();
            Assert.Equal(shared.Single(d => d.Id == doc.Id).Bytes, bytes);
        }
        // Without the link the physician sees none of it; with a wrong passcode, 401.
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync("List/" + link.LinkId)).StatusCode);
        var wrong = new FormUrlEncodedContent(new Dictionary<string, string> { ["_id"] = link.LinkId, ["recipient"] = "Dr. 佐藤", ["passcode"] = "nope" });
        Assert.Equal(HttpStatusCode.Unauthorized, (await physician.PostAsync("List/_search", wrong)).StatusCode);
    }

    [Fact]
    public async Task Every_access_to_a_link_allowed_or_refused_is_in_the_persons_access_log()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], passcode: "log-pass"));
        var recipient = Fhir.Unique("Dr. ");
        Assert.Equal(HttpStatusCode.Unauthorized, (await ManifestAsync(link, "wrong", recipient: recipient)).StatusCode);
        var manifest = JsonDocument.Parse(await (await ManifestAsync(link, "log-pass", recipient: recipient)).Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.OK, (await new HttpClient().GetAsync(manifest.GetProperty("files")[0].GetProperty("location").GetString())).StatusCode);

        var log = await PersonAccessLogTests.PollAsync(s.Person, "entity=List/" + link.LinkId + "&_count=100", l => l.Count >= 3);
        var mine = log.Where(a => a.Agent.Any(g => g.Who?.Display == recipient)).ToList();
        Assert.All(mine, a => Assert.Equal("Patient/" + s.Patient, PersonAccessLogTests.PatientOf(a)));
        Assert.Single(mine, a => a.Subtype.Any(c => c.Code == "shl-manifest") && a.Outcome == AuditEvent.AuditEventOutcome.N4);
        var opened = Assert.Single(mine, a => a.Subtype.Any(c => c.Code == "shl-manifest") && a.Outcome == AuditEvent.AuditEventOutcome.N0);
        Assert.Contains(opened.Entity, e => e.What?.Reference == "DocumentReference/" + s.Documents[0].Id);
        Assert.Single(mine, a => a.Subtype.Any(c => c.Code == "shl-file") && a.Outcome == AuditEvent.AuditEventOutcome.N0);
        // Nothing secret is in the log: neither the passcode nor the key.
        Assert.DoesNotContain(mine, a => new FhirJsonSerializer().SerializeToString(a).Contains("log-pass", StringComparison.Ordinal));
    }

    /// <summary>The link's rows as PostgreSQL holds them (fhir.share_link and its stored files), as JSON text.</summary>
    async Task<string> StoredRowsAsync(string linkId)
    {
        var store = server.Services.GetRequiredService<PhrFhir.Storage.FhirStore>();
        await using var cmd = store.DataSource.CreateCommand(
            "select row_to_json(l)::text || coalesce((select string_agg(row_to_json(f)::text, '') from fhir.share_link_file f where f.link = l.id), '') from fhir.share_link l where l.id = $1");
        cmd.Parameters.Add(new() { Value = linkId });
        return (string)(await cmd.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task A_pre_encrypted_link_keeps_no_key_and_serves_the_files_encrypted_at_issue()
    {
        var s = await PersonWithDocumentsAsync(3);
        var shared = s.Documents.Take(2).ToList();
        // A third shared document that is no checkup record (those are kept five years), deleted below.
        var note = await Fhir.ExpectAsync<DocumentReference>(await s.Person.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:1.2.392.200119.6.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Subject = new ResourceReference("Patient/" + s.Patient),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "メモ"u8.ToArray() } }],
        })), HttpStatusCode.Created);
        var link = await ShareAsync(s, ShareParameters([.. shared.Select(d => d.Id), note.Id], passcode: "sealed-1", preEncrypt: true));
        Assert.Equal(HttpStatusCode.NoContent, (await s.Person.DeleteAsync("DocumentReference/" + note.Id)).StatusCode);

        // The server kept the ciphertext and not the key: in no form (base64url, base64, hex) is it in the rows.
        var stored = await server.Services.GetRequiredService<PhrFhir.Storage.FhirStore>().ShareLinkAsync(link.LinkId, default);
        Assert.True(stored!.PreEncrypted);
        Assert.Null(stored.ContentKey);
        var rows = await StoredRowsAsync(link.LinkId);
        Assert.Contains("eyJ", rows, StringComparison.Ordinal); // the JWEs are there (a protected header is base64url JSON)
        foreach (var form in new[] { link.Payload.GetProperty("key").GetString()!, Convert.ToBase64String(Key(link)), Convert.ToHexString(Key(link)) })
            Assert.DoesNotContain(form, rows, StringComparison.OrdinalIgnoreCase);

        // So every file the manifest answers (location and embedded) is one encrypted at issue, and it decrypts
        // with the payload's key to exactly the shared documents — but for the one deleted since, which the
        // server (checking the document, not the file it cannot read) no longer serves.
        var byLocation = Contents(await FilesAsync(link, await ManifestAsync(link, "sealed-1")));
        Assert.Equal(shared.OrderBy(d => d.Id).Select(d => (d.Id, Convert.ToBase64String(d.Bytes))),
            byLocation.OrderBy(d => d.Id).Select(d => (d.Id, Convert.ToBase64String(d.Bytes))));
        var embedded = await (await ManifestAsync(link, "sealed-1", embeddedLengthMax: 1_000_000)).Content.ReadAsStringAsync();
        Assert.DoesNotContain("location", embedded, StringComparison.Ordinal);
        Assert.Equal(2, Contents(await FilesAsync(link, new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent(embedded) })).Count);


        var listed = (await Fhir.ExpectAsync<Parameters>(await s.Person.GetAsync($"Patient/{s.Patient}/$share"), HttpStatusCode.OK))
            .Parameter.Single(p => p.Part.Any(x => x.Name == "id" && ((FhirString)x.Value).Value == link.LinkId));
        Assert.True(((FhirBoolean)listed.Part.Single(x => x.Name == "preEncrypted").Value).Value);
    }

    [Fact]
    public async Task Pre_encryption_with_a_long_term_link_is_refused_with_422_and_stores_nothing()
    {
        var s = await PersonWithDocumentsAsync(1);
        var before = await LinkCountAsync(s);
        var response = await s.Person.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(ShareParameters([s.Documents[0].Id], longTerm: true, preEncrypt: true)));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.UnprocessableEntity);
        Assert.Contains("longTerm", outcome.Issue[0].Diagnostics ?? outcome.Issue[0].Details?.Text, StringComparison.Ordinal);
        Assert.Equal(before, await LinkCountAsync(s));
    }

    [Fact]
    public async Task With_Sharing_PreEncrypt_links_that_are_not_long_term_are_pre_encrypted_unless_the_share_says_otherwise()
    {
        var s = await PersonWithDocumentsAsync(1);
        var store = server.Services.GetRequiredService<PhrFhir.Storage.FhirStore>();
        // The server setting, switched on for this test only (the fixture's server reads its options per request).
        var options = server.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<PhrFhir.Server.Sharing.SharingOptions>>().Value;
        options.PreEncrypt = true;
        try
        {
            var byDefault = await ShareAsync(s, ShareParameters([s.Documents[0].Id]));
            var longTerm = await ShareAsync(s, ShareParameters([s.Documents[0].Id], longTerm: true));
            var optedOut = await ShareAsync(s, ShareParameters([s.Documents[0].Id], preEncrypt: false));
            Assert.True((await store.ShareLinkAsync(byDefault.LinkId, default))!.PreEncrypted);
            Assert.False((await store.ShareLinkAsync(longTerm.LinkId, default))!.PreEncrypted);
            Assert.False((await store.ShareLinkAsync(optedOut.LinkId, default))!.PreEncrypted);
            Assert.Equal(s.Documents[0].Bytes, Contents(await FilesAsync(byDefault, await ManifestAsync(byDefault, null))).Single().Bytes);
        }
        finally
        {
            options.PreEncrypt = false;
        }
    }

    [Fact]
    public async Task Revoking_a_pre_encrypted_link_404s_at_once_and_deletes_its_ciphertext()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], preEncrypt: true));
        var manifest = JsonDocument.Parse(await (await ManifestAsync(link, null)).Content.ReadAsStringAsync()).RootElement;
        var location = manifest.GetProperty("files")[0].GetProperty("location").GetString()!;
        Assert.Equal(HttpStatusCode.OK, (await new HttpClient().GetAsync(location)).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await s.Person.DeleteAsync($"Patient/{s.Patient}/$share/{link.LinkId}")).StatusCode);
        // The very next requests, nothing cached: 404.
        Assert.Equal(HttpStatusCode.NotFound, (await ManifestAsync(link, null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await new HttpClient().GetAsync(location)).StatusCode);
        Assert.DoesNotContain("eyJ", await StoredRowsAsync(link.LinkId), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_direct_file_link_can_be_pre_encrypted()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], directFile: true, preEncrypt: true));
        var response = await new HttpClient().GetAsync(Url(link) + "?recipient=" + Uri.EscapeDataString("救急外来"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var plain = Jose.JWT.DecodeBytes(await response.Content.ReadAsStringAsync(), Key(link));
        Assert.Equal(s.Documents[0].Bytes, new FhirJsonDeserializer().Deserialize<Bundle>(Encoding.UTF8.GetString(plain)).Entry.Select(e => e.Resource).OfType<Binary>().Single().Data);
    }

    [Fact]
    public async Task The_VHL_search_of_a_pre_encrypted_link_answers_422_and_spends_no_passcode_attempt()
    {
        var s = await PersonWithDocumentsAsync(1);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], passcode: "vhl-sealed", preEncrypt: true));
        using var physician = await server.ClientAsync("test-physician");
        var form = new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["_id"] = link.LinkId,
            ["code"] = "folder",
            ["status"] = "current",
            ["_include"] = "List:item",
            ["recipient"] = "Dr. 佐藤",
            ["passcode"] = "wrong",
        });
        var refused = await physician.PostAsync("List/_search", form);
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(refused, HttpStatusCode.UnprocessableEntity);
        Assert.Contains("manifest", outcome.Issue[0].Diagnostics ?? outcome.Issue[0].Details?.Text, StringComparison.Ordinal);
        Assert.Equal(5, (await server.Services.GetRequiredService<PhrFhir.Storage.FhirStore>().ShareLinkAsync(link.LinkId, default))!.AttemptsLeft);
        // The SHL manifest still serves it.
        Assert.Single(Contents(await FilesAsync(link, await ManifestAsync(link, "vhl-sealed"))));
    }

    static Parameters AddParameters(string link, params string[] documents)
    {
        var p = new Parameters();
        foreach (var d in documents) p.Parameter.Add(new() { Name = "documentReference", Value = new ResourceReference("DocumentReference/" + d) });
        p.Parameter.Add(new() { Name = "link", Value = new FhirString(link) });
        return p;
    }

    [Fact]
    public async Task Documents_added_to_a_long_term_link_are_in_its_next_manifest_its_Consent_and_its_folder()
    {
        var s = await PersonWithDocumentsAsync(3);
        var link = await ShareAsync(s, ShareParameters([s.Documents[0].Id], longTerm: true));
        var added = await Fhir.ExpectAsync<Parameters>(
            await s.Person.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(AddParameters(link.LinkId, s.Documents[1].Id, s.Documents[2].Id, s.Documents[0].Id))), HttpStatusCode.OK);
        // The same link: the recipient's shlink (and QR) stay valid.
        Assert.Equal(link.Shlink, ((FhirString)added.GetSingle("shlink").Value).Value);

        var files = Contents(await FilesAsync(link, await ManifestAsync(link, null)));
        Assert.Equal(s.Documents.Select(d => d.Id).Order(), files.Select(f => f.Id).Order());
        var consent = await Fhir.ExpectAsync<Consent>(await s.Person.GetAsync(link.Consent), HttpStatusCode.OK);
        Assert.Equal(s.Documents.Select(d => "DocumentReference/" + d.Id).Order(), consent.Provision.Data.Select(d => d.Reference.Reference).Order());
        var folder = await Fhir.ExpectAsync<List>(await s.Person.GetAsync("List/" + link.LinkId), HttpStatusCode.OK);
        Assert.Equal(3, folder.Entry.Count);
    }

    [Fact]
    public async Task Documents_are_added_only_to_the_persons_own_active_long_term_link()
    {
        var s = await PersonWithDocumentsAsync(2);
        var fixedSet = await ShareAsync(s, ShareParameters([s.Documents[0].Id]));
        var longTerm = await ShareAsync(s, ShareParameters([s.Documents[0].Id], longTerm: true));
        async Task<HttpResponseMessage> Add(Parameters p) => await s.Person.PostAsync($"Patient/{s.Patient}/$share", Fhir.Json(p));

        var notLong = await Fhir.ExpectAsync<OperationOutcome>(await Add(AddParameters(fixedSet.LinkId, s.Documents[1].Id)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("long-term", notLong.Issue[0].Diagnostics ?? notLong.Issue[0].Details?.Text, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await Add(AddParameters(LinkSecretsLikeId(), s.Documents[1].Id))).StatusCode);
        var withLabel = AddParameters(longTerm.LinkId, s.Documents[1].Id);
        withLabel.Parameter.Add(new() { Name = "label", Value = new FhirString("x") });
        Assert.Equal(HttpStatusCode.BadRequest, (await Add(withLabel)).StatusCode);
        // Revoked: 404, and nothing was added along the way.
        Assert.Equal(HttpStatusCode.NoContent, (await s.Person.DeleteAsync($"Patient/{s.Patient}/$share/{longTerm.LinkId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Add(AddParameters(longTerm.LinkId, s.Documents[1].Id))).StatusCode);
        var store = server.Services.GetRequiredService<PhrFhir.Storage.FhirStore>();
        Assert.Equal([s.Documents[0].Id], (await store.ShareLinkAsync(longTerm.LinkId, default))!.Documents);
        Assert.Equal([s.Documents[0].Id], (await store.ShareLinkAsync(fixedSet.LinkId, default))!.Documents);
    }

    static string LinkSecretsLikeId() => new string('a', 43);
}

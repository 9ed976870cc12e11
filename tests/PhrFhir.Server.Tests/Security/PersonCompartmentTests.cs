using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// The person (client "test-person", patient/*.cruds, actor = the identifier below) sees only their own
/// compartment; everyone else's data answers as if it did not exist.
/// </summary>
[Collection("server")]
public sealed class PersonCompartmentTests(ServerFixture server)
{
    const string PersonSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    const string PersonValue = "00012345";
    readonly HttpClient _http = server.Http;

    async Task<Patient> ThePersonAsync()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, PersonValue)], Name = [new HumanName { Family = "本人", Given = ["花子"] }] }),
        };
        request.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={PersonSystem}|{PersonValue}");
        var response = await _http.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        return await Fhir.ReadAsync<Patient>(response);
    }

    async Task<Patient> SomeoneElseAsync() => await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient",
        Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("他人") }] })), HttpStatusCode.Created);

    async Task<Observation> ObservationAsync(Patient p, string tag) => await Fhir.ExpectAsync<Observation>(await _http.PostAsync("Observation",
        Fhir.Json(new Observation
        {
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "8480-6", "収縮期血圧"),
            Subject = new ResourceReference($"Patient/{p.Id}"),
            Value = new Quantity(142, "mm[Hg]"),
            Meta = new Meta { Tag = [new Coding("urn:phrfhir:test", tag)] },
        })), HttpStatusCode.Created);

    [Fact]
    public async System.Threading.Tasks.Task The_person_reads_their_own_records_and_nobody_elses()
    {
        var me = await ThePersonAsync();
        var other = await SomeoneElseAsync();
        var tag = Fhir.Unique("pc");
        var mine = await ObservationAsync(me, tag);
        var theirs = await ObservationAsync(other, tag);
        using var person = await server.ClientAsync("test-person");

        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"Patient/{me.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"Observation/{mine.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"Observation/{mine.Id}/_history/1")).StatusCode);
        foreach (var url in new[] { $"Patient/{other.Id}", $"Observation/{theirs.Id}", $"Observation/{theirs.Id}/_history/1", $"Observation/{theirs.Id}/_history" })
        {
            var response = await person.GetAsync(url);
            Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{url}: {(int)response.StatusCode}");
        }

        var search = await Fhir.ExpectAsync<Bundle>(await person.GetAsync($"Observation?_tag=urn:phrfhir:test|{tag}"), HttpStatusCode.OK);
        Assert.Equal(1, search.Total);
        Assert.Equal(mine.Id, search.Entry.Single().Resource.Id);

        // _revinclude and _include add nothing from outside the compartment.
        var withRev = await Fhir.ExpectAsync<Bundle>(await person.GetAsync($"Patient?_id={me.Id},{other.Id}&_revinclude=Observation:patient"), HttpStatusCode.OK);
        Assert.All(withRev.Entry, e => Assert.True(e.Resource.Id == me.Id || e.Resource.Id == mine.Id || e.Resource is Observation o && o.Subject.Reference == $"Patient/{me.Id}",
            $"{e.Resource.TypeName}/{e.Resource.Id} leaked"));
        var history = await Fhir.ExpectAsync<Bundle>(await person.GetAsync("Observation/_history?_count=1000"), HttpStatusCode.OK);
        Assert.DoesNotContain(history.Entry, e => e.FullUrl.EndsWith($"/Observation/{theirs.Id}"));
        Assert.Contains(history.Entry, e => e.FullUrl.EndsWith($"/Observation/{mine.Id}"));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_person_writes_their_own_records_and_nothing_else()
    {
        var me = await ThePersonAsync();
        var other = await SomeoneElseAsync();
        using var person = await server.ClientAsync("test-person");
        Observation Reading(Patient p) => new()
        {
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "29463-7", "体重"),
            Subject = new ResourceReference($"Patient/{p.Id}"),
            Value = new Quantity(61.5m, "kg"),
        };
        // An app pushes the person's own reading; it is theirs to read, change and delete.
        var mine = await Fhir.ExpectAsync<Observation>(await person.PostAsync("Observation", Fhir.Json(Reading(me))), HttpStatusCode.Created);
        mine.Value = new Quantity(61.0m, "kg");
        Assert.Equal(HttpStatusCode.OK, (await person.PutAsync($"Observation/{mine.Id}", Fhir.Json(mine))).StatusCode);
        // Not for someone else, not by moving their own record to someone else, not by touching someone else's.
        var refused = await person.PostAsync("Observation", Fhir.Json(Reading(other)));
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.DoesNotContain(other.Id, await refused.Content.ReadAsStringAsync());
        mine.Subject = new ResourceReference($"Patient/{other.Id}");
        Assert.Equal(HttpStatusCode.Forbidden, (await person.PutAsync($"Observation/{mine.Id}", Fhir.Json(mine))).StatusCode);
        var theirs = await ObservationAsync(other, "theirs");
        Assert.Equal(HttpStatusCode.NotFound, (await person.GetAsync($"Observation/{theirs.Id}")).StatusCode);
        // Deleting it answers as deleting an id that does not exist (204), and deletes nothing.
        Assert.Equal(HttpStatusCode.NoContent, (await person.DeleteAsync($"Observation/{theirs.Id}")).StatusCode);
        Assert.Equal("1", (await Fhir.ExpectAsync<Observation>(await _http.GetAsync($"Observation/{theirs.Id}"), HttpStatusCode.OK)).Meta.VersionId); // still there

        // A transaction of the person's own entries is one unit; one foreign entry refuses all of it.
        Bundle Tx(params Patient[] subjects) => new()
        {
            Type = Bundle.BundleType.Transaction,
            Entry = subjects.Select(p => new Bundle.EntryComponent
            {
                Resource = Reading(p),
                Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Observation" },
            }).ToList(),
        };
        Assert.Equal(HttpStatusCode.OK, (await person.PostAsync("", Fhir.Json(Tx(me, me)))).StatusCode);
        var before = await Fhir.ReadAsync<Bundle>(await _http.GetAsync($"Observation?subject=Patient/{other.Id}&_total=accurate"));
        Assert.Equal(HttpStatusCode.Forbidden, (await person.PostAsync("", Fhir.Json(Tx(me, other)))).StatusCode);
        var after = await Fhir.ReadAsync<Bundle>(await _http.GetAsync($"Observation?subject=Patient/{other.Id}&_total=accurate"));
        Assert.Equal(before.Total, after.Total);

        // Reads inside a batch are confined like any read.
        var batch = new Bundle
        {
            Type = Bundle.BundleType.Batch,
            Entry =
            [
                new Bundle.EntryComponent { Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.GET, Url = $"Patient/{me.Id}" } },
                new Bundle.EntryComponent { Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.GET, Url = $"Patient/{other.Id}" } },
            ],
        };
        var response = await Fhir.ExpectAsync<Bundle>(await person.PostAsync("", Fhir.Json(batch)), HttpStatusCode.OK);
        Assert.StartsWith("200", response.Entry[0].Response.Status);
        Assert.StartsWith("404", response.Entry[1].Response.Status);
    }

    async Task<DocumentReference> PublishAsync(Patient p, byte[] pdf) => await Fhir.ExpectAsync<DocumentReference>(await _http.PostAsync("DocumentReference",
        Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference($"Patient/{p.Id}"),
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "application/pdf", Data = pdf } }],
        })), HttpStatusCode.Created); // ITI-105: the bytes become a Binary of the document's patient

    [Fact]
    public async System.Threading.Tasks.Task The_person_retrieves_their_own_documents_bytes_only()
    {
        var me = await ThePersonAsync();
        var other = await SomeoneElseAsync();
        var mine = await PublishAsync(me, "%PDF 本人の健診結果"u8.ToArray());
        var theirs = await PublishAsync(other, "%PDF 他人の健診結果"u8.ToArray());
        using var person = await server.ClientAsync("test-person");

        HttpRequestMessage Raw(string url)
        {
            var r = new HttpRequestMessage(HttpMethod.Get, url);
            r.Headers.Accept.Clear();
            r.Headers.TryAddWithoutValidation("Accept", "*/*");
            return r;
        }
        var own = await person.SendAsync(Raw(mine.Content[0].Attachment.Url));
        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal("%PDF 本人の健診結果"u8.ToArray(), await own.Content.ReadAsByteArrayAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await person.SendAsync(Raw(theirs.Content[0].Attachment.Url))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await person.GetAsync($"DocumentReference/{theirs.Id}")).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_persons_app_publishes_their_own_document_and_no_one_elses()
    {
        var me = await ThePersonAsync();
        var other = await SomeoneElseAsync();
        using var person = await server.ClientAsync("test-person");
        DocumentReference Publish(Patient p) => new()
        {
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference($"Patient/{p.Id}"),
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "application/pdf", Data = "%PDF 家庭血圧の記録"u8.ToArray() } }],
        };
        // ITI-105 from the person's app: the document, its Binary and SubmissionSet are theirs.
        var mine = await Fhir.ExpectAsync<DocumentReference>(await person.PostAsync("DocumentReference", Fhir.Json(Publish(me))), HttpStatusCode.Created);
        var raw = new HttpRequestMessage(HttpMethod.Get, mine.Content[0].Attachment.Url);
        raw.Headers.Accept.Clear();
        raw.Headers.TryAddWithoutValidation("Accept", "*/*");
        Assert.Equal("%PDF 家庭血圧の記録"u8.ToArray(), await (await person.SendAsync(raw)).Content.ReadAsByteArrayAsync());

        // Counting every Binary takes the operator's break-glass (Binaries are medical content).
        async Task<int?> AllBinariesAsync()
        {
            var count = new HttpRequestMessage(HttpMethod.Get, "Binary?_total=accurate&_count=0");
            count.Headers.Add("X-Break-Glass", "test: nothing half-stored");
            return (await Fhir.ReadAsync<Bundle>(await server.Operator.SendAsync(count))).Total;
        }
        var before = await AllBinariesAsync();
        Assert.True(before > 0);
        // Publishing for someone else's Patient answers exactly as for one that does not exist: the person's
        // write rule refuses both before the registry looks the subject up, so the answer tells nothing.
        var nobody = new Patient { Id = "nobody-" + Guid.NewGuid().ToString("N")[..12] };
        var forOther = await person.PostAsync("DocumentReference", Fhir.Json(Publish(other)));
        var forNobody = await person.PostAsync("DocumentReference", Fhir.Json(Publish(nobody)));
        Assert.Equal(HttpStatusCode.Forbidden, forOther.StatusCode);
        Assert.Equal(forOther.StatusCode, forNobody.StatusCode);
        var (refused, unknown) = (await Fhir.ReadAsync<OperationOutcome>(forOther), await Fhir.ReadAsync<OperationOutcome>(forNobody));
        Assert.Equal(OperationOutcome.IssueType.Forbidden, refused.Issue[0].Code);
        Assert.Equal(unknown.Issue.Select(i => (i.Code, i.Details?.Text, i.Diagnostics)), refused.Issue.Select(i => (i.Code, i.Details?.Text, i.Diagnostics)));
        Assert.DoesNotContain(other.Id, refused.Issue[0].Diagnostics);
        var after = await AllBinariesAsync();
        Assert.Empty((await Fhir.ReadAsync<Bundle>(await _http.GetAsync($"DocumentReference?subject=Patient/{other.Id}"))).Entry);
        Assert.Equal(before, after); // nothing half-stored
    }

    [Fact]
    public async System.Threading.Tasks.Task Another_institutions_patient_with_the_persons_identifier_is_refused_and_the_person_keeps_access()
    {
        var me = await ThePersonAsync();
        // Another institution cannot see the person's Patient, so its conditional create would make a second
        // one: the identifier's domain is not its own (Identity/IdentifierDomains), so it is refused.
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var duplicate = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, PersonValue)], Name = [new HumanName { Family = "別人" }] }),
        };
        duplicate.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={PersonSystem}|{PersonValue}");
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await other.SendAsync(duplicate), HttpStatusCode.Forbidden);
        Assert.Contains(PersonSystem, refused.Issue[0].Diagnostics ?? refused.Issue[0].Details?.Text);
        Assert.DoesNotContain(me.Id, refused.Issue[0].Diagnostics ?? refused.Issue[0].Details?.Text);

        using var person = await server.ClientAsync("test-person");
        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"Patient/{me.Id}")).StatusCode);
        var mine = await Fhir.ExpectAsync<Bundle>(await person.GetAsync("Patient?_total=accurate"), HttpStatusCode.OK);
        Assert.Contains(me.Id, mine.Entry.Select(e => e.Resource.Id));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_persons_token_is_bound_to_the_patient_the_operator_registered_and_no_one_can_register_the_identifier_again()
    {
        // test-person-b's identifier: only this test registers it. An institution outside the domain cannot get there first.
        const string value = "00054321";
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        Assert.Equal(HttpStatusCode.Forbidden, (await other.PostAsync("Patient",
            Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, value)], Name = [new HumanName { Family = "先取り" }] }))).StatusCode);
        var registered = await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient",
            Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, value)], Name = [new HumanName { Family = "本人" }] })), HttpStatusCode.Created);

        using var person = await server.ClientAsync("test-person-b");
        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"Patient/{registered.Id}")).StatusCode);
        // A second Patient with the same identifier, even by the operator, is a collision: one value names one person.
        var collision = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PostAsync("Patient",
            Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, value)] })), HttpStatusCode.Conflict);
        Assert.DoesNotContain(registered.Id, collision.Issue[0].Diagnostics ?? collision.Issue[0].Details?.Text);
        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"Patient/{registered.Id}")).StatusCode);
    }
}

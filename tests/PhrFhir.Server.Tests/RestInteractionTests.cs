using System.Net;
using System.Net.Http.Headers;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

[Collection("server")]
public sealed class RestInteractionTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static Patient NewPatient(string family, string given = "太郎") => new()
    {
        Name = [new HumanName { Family = family, Given = [given] }],
        BirthDate = "1980-04-01",
    };

    async Task<Patient> CreateAsync(Patient p)
    {
        var response = await _http.PostAsync("Patient", Fhir.Json(p));
        return await Fhir.ExpectAsync<Patient>(response, HttpStatusCode.Created);
    }

    [Fact]
    public async System.Threading.Tasks.Task Create_returns_201_with_location_etag_and_the_stored_resource()
    {
        var family = Fhir.Unique("山田");
        var response = await _http.PostAsync("Patient", Fhir.Json(NewPatient(family)));
        var created = await Fhir.ExpectAsync<Patient>(response, HttpStatusCode.Created);

        Assert.False(string.IsNullOrEmpty(created.Id));
        Assert.Equal("1", created.Meta.VersionId);
        Assert.Equal(TimeSpan.Zero, created.Meta.LastUpdated!.Value.Offset); // UTC everywhere
        Assert.Equal("W/\"1\"", response.Headers.ETag!.ToString());
        Assert.EndsWith($"/Patient/{created.Id}/_history/1", response.Headers.Location!.ToString());
        Assert.NotNull(response.Content.Headers.LastModified);
        Assert.Equal(family, created.Name[0].Family);
    }

    [Fact]
    public async System.Threading.Tasks.Task Server_assigned_ids_are_time_ordered_by_create_and_by_transaction()
    {
        // The index rows of a resource end with its key: time-ordered ids (UUIDv7) append at the right edge of
        // every index instead of writing into random pages (docs/storage.md, "Resource ids").
        static (int Version, DateTimeOffset At) V7(string id)
        {
            var hex = Guid.Parse(id).ToString("N");
            return (Convert.ToInt32(hex[12..13], 16), DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(hex[..12], 16)));
        }
        var before = DateTimeOffset.UtcNow.AddSeconds(-1);
        var first = await CreateAsync(NewPatient(Fhir.Unique("順序")));
        var second = await CreateAsync(NewPatient(Fhir.Unique("順序")));
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry = [new Bundle.EntryComponent { FullUrl = "urn:uuid:" + Guid.NewGuid(), Resource = NewPatient(Fhir.Unique("順序")), Request = new() { Method = Bundle.HTTPVerb.POST, Url = "Patient" } }],
        };
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        var third = response.Entry[0].Response.Location.Split("Patient/")[1].Split('/')[0];
        var after = DateTimeOffset.UtcNow.AddSeconds(1);
        foreach (var id in new[] { first.Id, second.Id, third })
        {
            var (version, at) = V7(id);
            Assert.Equal(7, version);
            Assert.InRange(at, before, after);
        }
        Assert.True(string.CompareOrdinal(first.Id, second.Id) < 0 && string.CompareOrdinal(second.Id, third) < 0, $"{first.Id} {second.Id} {third}");
    }

    [Fact]
    public async System.Threading.Tasks.Task Read_and_vread_return_what_was_stored()
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("佐藤")));
        var read = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}"), HttpStatusCode.OK);
        Assert.Equal(created.Name[0].Family, read.Name[0].Family);

        var v1 = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}/_history/1"), HttpStatusCode.OK);
        Assert.Equal("1", v1.Meta.VersionId);
        var missing = await _http.GetAsync($"Patient/{created.Id}/_history/9");
        await Fhir.ExpectAsync<OperationOutcome>(missing, HttpStatusCode.NotFound);
    }

    [Fact]
    public async System.Threading.Tasks.Task Reading_an_unknown_resource_is_404_with_an_OperationOutcome()
    {
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync("Patient/does-not-exist"), HttpStatusCode.NotFound);
        Assert.Equal(OperationOutcome.IssueType.NotFound, oo.Issue[0].Code);
    }

    [Fact]
    public async System.Threading.Tasks.Task Update_creates_a_new_version_and_keeps_the_old_one()
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("鈴木")));
        created.Gender = AdministrativeGender.Female;
        var response = await _http.PutAsync($"Patient/{created.Id}", Fhir.Json(created));
        var updated = await Fhir.ExpectAsync<Patient>(response, HttpStatusCode.OK);
        Assert.Equal("2", updated.Meta.VersionId);
        Assert.Equal("W/\"2\"", response.Headers.ETag!.ToString());

        var v1 = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}/_history/1"), HttpStatusCode.OK);
        Assert.Null(v1.Gender);
        var current = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}"), HttpStatusCode.OK);
        Assert.Equal(AdministrativeGender.Female, current.Gender);
    }

    [Fact]
    public async System.Threading.Tasks.Task Update_with_a_stale_If_Match_is_412_and_changes_nothing()
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("高橋")));
        created.Gender = AdministrativeGender.Male;
        Assert.Equal(HttpStatusCode.OK, (await PutIfMatch(created, "W/\"1\"")).StatusCode);

        created.Gender = AdministrativeGender.Female;
        var conflict = await PutIfMatch(created, "W/\"1\"");
        await Fhir.ExpectAsync<OperationOutcome>(conflict, HttpStatusCode.PreconditionFailed);
        var current = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}"), HttpStatusCode.OK);
        Assert.Equal(AdministrativeGender.Male, current.Gender);
        Assert.Equal("2", current.Meta.VersionId);
    }

    [Fact]
    public async System.Threading.Tasks.Task Racing_If_Match_updates_let_exactly_one_win()
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("田中")));
        var results = await RacingUpdatesAsync(created, 8, copy => PutIfMatch(copy, "W/\"1\""));
        Assert.Equal(1, results.Count(r => r.StatusCode == HttpStatusCode.OK));
        Assert.All(results.Where(r => r.StatusCode != HttpStatusCode.OK), r => Assert.Equal(HttpStatusCode.PreconditionFailed, r.StatusCode));
        var history = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/{created.Id}/_history"), HttpStatusCode.OK);
        Assert.Equal(2, history.Total);
    }

    /// <summary>Without If-Match a client names no version: an update (plain or conditional) that lost the race is made again
    /// on the winner's version, not refused.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async System.Threading.Tasks.Task Racing_updates_without_If_Match_all_succeed_each_a_new_version(bool conditional)
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("田中")));
        var results = await RacingUpdatesAsync(created, 3, copy =>
            _http.PutAsync(conditional ? $"Patient?_id={copy.Id}" : $"Patient/{copy.Id}", Fhir.Json(copy)));
        Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        var history = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/{created.Id}/_history"), HttpStatusCode.OK);
        Assert.Equal(4, history.Total);
        // Each version is one client's whole resource, as it sent it.
        var givens = history.Entry.Select(e => ((Patient)e.Resource).Name[0].Given.Single()).Where(g => g.StartsWith("候補", StringComparison.Ordinal));
        Assert.Equal(["候補0", "候補1", "候補2"], givens.Order(StringComparer.Ordinal));
    }

    /// <summary><paramref name="count"/> updates of one Patient sent at once, the i-th naming it given name 候補i.</summary>
    static Task<HttpResponseMessage[]> RacingUpdatesAsync(Patient created, int count, Func<Patient, Task<HttpResponseMessage>> put) =>
        System.Threading.Tasks.Task.WhenAll(Enumerable.Range(0, count).Select(i =>
        {
            var copy = (Patient)created.DeepCopy();
            copy.Name[0].Given = ["候補" + i];
            return put(copy);
        }));

    Task<HttpResponseMessage> PutIfMatch(Patient p, string etag)
    {
        var request = new HttpRequestMessage(HttpMethod.Put, $"Patient/{p.Id}") { Content = Fhir.Json(p) };
        request.Headers.TryAddWithoutValidation("If-Match", etag);
        return _http.SendAsync(request);
    }

    [Fact]
    public async System.Threading.Tasks.Task Update_of_a_new_id_creates_it_for_the_operator_only()
    {
        var id = Fhir.Unique("client-id-");
        var p = NewPatient(Fhir.Unique("伊藤"));
        p.Id = id;
        // An institution does not see every Patient, so it may not choose ids (docs/consent.md, "Writes"): 405.
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await _http.PutAsync($"Patient/{id}", Fhir.Json(p)), HttpStatusCode.MethodNotAllowed);
        Assert.Contains("POST", refused.Issue[0].Diagnostics);
        var response = await server.Operator.PutAsync($"Patient/{id}", Fhir.Json(p));
        var created = await Fhir.ExpectAsync<Patient>(response, HttpStatusCode.Created);
        Assert.Equal(id, created.Id);
    }

    [Fact]
    public async System.Threading.Tasks.Task Delete_is_soft_and_versioned_read_gives_410_history_keeps_all()
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("渡辺")));
        var delete = await _http.DeleteAsync($"Patient/{created.Id}");
        Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);
        Assert.Equal("W/\"2\"", delete.Headers.ETag!.ToString());

        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync($"Patient/{created.Id}"), HttpStatusCode.Gone);
        await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}/_history/1"), HttpStatusCode.OK);
        var history = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/{created.Id}/_history"), HttpStatusCode.OK);
        Assert.Equal(2, history.Total);
        Assert.Equal(Bundle.HTTPVerb.DELETE, history.Entry[0].Request.Method);
        Assert.Null(history.Entry[0].Resource);
        Assert.Equal(Bundle.HTTPVerb.POST, history.Entry[1].Request.Method);

        // Deleting again is still a success (R4 http.html#delete), and nothing new is written.
        Assert.Equal(HttpStatusCode.NoContent, (await _http.DeleteAsync($"Patient/{created.Id}")).StatusCode);
        history = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/{created.Id}/_history"), HttpStatusCode.OK);
        Assert.Equal(2, history.Total);

        // A count alone: the total, no entries and no next page (a next link of _count=0 led a client round in circles).
        foreach (var count in (string[])["_count=0", "_summary=count"])
        {
            var counted = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/{created.Id}/_history?{count}"), HttpStatusCode.OK);
            Assert.Equal(2, counted.Total);
            Assert.Empty(counted.Entry);
            Assert.DoesNotContain(counted.Link, l => l.Relation == "next");
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task Type_and_system_history_list_new_versions_since_a_time()
    {
        var since = DateTimeOffset.UtcNow.AddSeconds(-1).ToString("yyyy-MM-ddTHH:mm:ss.fffZ");
        var created = await CreateAsync(NewPatient(Fhir.Unique("山本")));
        var typeHistory = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/_history?_since={Uri.EscapeDataString(since)}&_count=1000"), HttpStatusCode.OK);
        Assert.Equal(Bundle.BundleType.History, typeHistory.Type);
        Assert.Contains(typeHistory.Entry, e => e.Resource?.Id == created.Id);
        var systemHistory = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"_history?_since={Uri.EscapeDataString(since)}&_count=1000"), HttpStatusCode.OK);
        Assert.Contains(systemHistory.Entry, e => e.Resource?.Id == created.Id);
    }

    [Fact]
    public async System.Threading.Tasks.Task Conditional_create_twice_gives_one_resource()
    {
        var mrn = Fhir.Unique("mrn");
        var p = NewPatient(Fhir.Unique("中村"));
        p.Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", mrn)];
        var ifNoneExist = $"identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|{mrn}";

        var first = await PostIfNoneExist(p, ifNoneExist);
        var second = await PostIfNoneExist(p, ifNoneExist);
        var a = await Fhir.ExpectAsync<Patient>(first, HttpStatusCode.Created);
        var b = await Fhir.ExpectAsync<Patient>(second, HttpStatusCode.OK);
        Assert.Equal(a.Id, b.Id);
    }

    [Fact]
    public async System.Threading.Tasks.Task Sixteen_concurrent_identical_conditional_creates_give_exactly_one_resource()
    {
        var mrn = Fhir.Unique("race");
        var p = NewPatient(Fhir.Unique("小林"));
        p.Identifier = [new Identifier("urn:test:race", mrn)];
        var responses = await System.Threading.Tasks.Task.WhenAll(Enumerable.Range(0, 16).Select(_ => PostIfNoneExist(p, $"identifier=urn:test:race|{mrn}")));

        Assert.Equal(1, responses.Count(r => r.StatusCode == HttpStatusCode.Created));
        Assert.Equal(15, responses.Count(r => r.StatusCode == HttpStatusCode.OK));
        var ids = new HashSet<string>();
        foreach (var r in responses) ids.Add((await Fhir.ReadAsync<Patient>(r)).Id);
        Assert.Single(ids);
        var search = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?identifier=urn:test:race|{mrn}"), HttpStatusCode.OK);
        Assert.Equal(1, search.Total);
    }

    Task<HttpResponseMessage> PostIfNoneExist(Patient p, string criteria)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient") { Content = Fhir.Json(p) };
        request.Headers.TryAddWithoutValidation("If-None-Exist", criteria);
        return _http.SendAsync(request);
    }

    [Fact]
    public async System.Threading.Tasks.Task Conditional_update_creates_then_updates_the_match()
    {
        var mrn = Fhir.Unique("cu");
        var p = NewPatient(Fhir.Unique("加藤"));
        p.Identifier = [new Identifier("urn:test:cu", mrn)];
        var created = await Fhir.ExpectAsync<Patient>(await _http.PutAsync($"Patient?identifier=urn:test:cu|{mrn}", Fhir.Json(p)), HttpStatusCode.Created);
        p.Gender = AdministrativeGender.Other;
        var updated = await Fhir.ExpectAsync<Patient>(await _http.PutAsync($"Patient?identifier=urn:test:cu|{mrn}", Fhir.Json(p)), HttpStatusCode.OK);
        Assert.Equal(created.Id, updated.Id);
        Assert.Equal("2", updated.Meta.VersionId);
    }

    [Fact]
    public async System.Threading.Tasks.Task Conditional_delete_removes_the_single_match()
    {
        var mrn = Fhir.Unique("cd");
        var p = NewPatient(Fhir.Unique("吉田"));
        p.Identifier = [new Identifier("urn:test:cd", mrn)];
        var created = await CreateAsync(p);
        Assert.Equal(HttpStatusCode.NoContent, (await _http.DeleteAsync($"Patient?identifier=urn:test:cd|{mrn}")).StatusCode);
        Assert.Equal(HttpStatusCode.Gone, (await _http.GetAsync($"Patient/{created.Id}")).StatusCode);
    }

    [Theory]
    [InlineData("return=minimal", true, false)]
    [InlineData("return=representation", false, false)]
    [InlineData("return=OperationOutcome", false, true)]
    public async System.Threading.Tasks.Task Prefer_return_decides_the_body_of_a_write(string prefer, bool empty, bool outcome)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient") { Content = Fhir.Json(NewPatient(Fhir.Unique("清水"))) };
        request.Headers.TryAddWithoutValidation("Prefer", prefer);
        var response = await _http.SendAsync(request);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.NotNull(response.Headers.Location);
        var body = await response.Content.ReadAsStringAsync();
        if (empty) { Assert.Equal("", body); return; }
        Assert.Contains(outcome ? "\"OperationOutcome\"" : "\"Patient\"", body);
    }

    [Theory]
    [InlineData("_format=xml", null, "application/fhir+xml")]
    [InlineData("_format=json", null, "application/fhir+json")]
    [InlineData(null, "application/fhir+xml", "application/fhir+xml")]
    [InlineData(null, "application/xml", "application/fhir+xml")]
    [InlineData(null, "application/json", "application/fhir+json")]
    [InlineData(null, "*/*", "application/fhir+json")]
    public async System.Threading.Tasks.Task Format_is_negotiated_by_format_parameter_or_Accept(string? format, string? accept, string expected)
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("山口")));
        var request = new HttpRequestMessage(HttpMethod.Get, $"Patient/{created.Id}" + (format is null ? "" : "?" + format));
        request.Headers.Accept.Clear();
        if (accept is not null) request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
        var response = await _http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(expected, response.Content.Headers.ContentType!.MediaType);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Contains(created.Name[0].Family, body); // Japanese text as text, not \u escapes
    }

    [Fact]
    public async System.Threading.Tasks.Task An_XML_resource_can_be_created_and_read_back_as_JSON()
    {
        var family = Fhir.Unique("松本");
        var xml = $"<Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"{family}\"/><given value=\"花子\"/></name></Patient>";
        var response = await _http.PostAsync("Patient", new StringContent(xml, System.Text.Encoding.UTF8, "application/fhir+xml"));
        var created = await Fhir.ExpectAsync<Patient>(response, HttpStatusCode.Created);
        Assert.Equal(family, created.Name[0].Family);
    }

    [Fact]
    public async System.Threading.Tasks.Task If_None_Match_with_the_current_version_gives_304()
    {
        var created = await CreateAsync(NewPatient(Fhir.Unique("井上")));
        var request = new HttpRequestMessage(HttpMethod.Get, $"Patient/{created.Id}");
        request.Headers.TryAddWithoutValidation("If-None-Match", "W/\"1\"");
        Assert.Equal(HttpStatusCode.NotModified, (await _http.SendAsync(request)).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task Summary_and_elements_shape_the_resource_and_mark_it_subsetted()
    {
        var p = NewPatient(Fhir.Unique("木村"));
        p.Text = new Narrative { Status = Narrative.NarrativeStatus.Generated, Div = "<div xmlns=\"http://www.w3.org/1999/xhtml\">木村</div>" };
        p.Gender = AdministrativeGender.Female;
        var created = await CreateAsync(p);

        var elements = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}?_elements=gender"), HttpStatusCode.OK);
        Assert.Equal(AdministrativeGender.Female, elements.Gender);
        Assert.Empty(elements.Name);
        Assert.Contains(elements.Meta.Tag, t => t.Code == "SUBSETTED");

        var text = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created.Id}?_summary=text"), HttpStatusCode.OK);
        Assert.NotNull(text.Text);
        Assert.Null(text.Gender);
    }

    [Fact]
    public async System.Threading.Tasks.Task Metadata_lists_every_served_type_with_its_interactions_and_search_parameters()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await _http.GetAsync("metadata"), HttpStatusCode.OK);
        var rest = cs.Rest.Single();
        foreach (var type in PhrFhir.Server.Rest.ServedResources.Types)
            Assert.Contains(rest.Resource, r => r.Type == type);
        var patient = rest.Resource.Single(r => r.Type == "Patient");
        Assert.Contains(patient.SearchParam, s => s.Name == "family" && s.Type == SearchParamType.String);
        Assert.Contains(patient.SearchParam, s => s.Name == "identifier" && s.Type == SearchParamType.Token);
        Assert.Contains(patient.Interaction, i => i.Code == CapabilityStatement.TypeRestfulInteraction.Vread);
        Assert.Contains(rest.Interaction, i => i.Code == CapabilityStatement.SystemRestfulInteraction.Transaction);
        // Composite/special parameters are not indexed, so they must not be offered.
        var observation = rest.Resource.Single(r => r.Type == "Observation");
        Assert.DoesNotContain(observation.SearchParam, s => s.Type == SearchParamType.Composite);
    }

    [Fact]
    public async System.Threading.Tasks.Task Health_endpoints_answer()
    {
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("readyz")).StatusCode);
    }
}

using System.Net;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using Group = Hl7.Fhir.Model.Group;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests;

/// <summary>
/// Search through HTTP (R4 search.html) for what the per-type tables in SearchModifierTests.cs do not
/// cover: references, chains, _has, _include/_revinclude, _sort, paging, _total, _summary=count,
/// POST _search, errors, lenient handling, and the index following deletes and updates.
/// Every test tags its own data (SearchHttp.Tag) and scopes its queries with that tag, because the
/// database is shared by the whole run.
/// </summary>
[Collection("server")]
public sealed class ReferenceSearchTests(ServerFixture server)
{
    // pa and the Group share one id, so a bare id and a typed reference tell different answers.
    sealed record Seed(string Run, SearchHttp.Labels Labels);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server);

        static async Task<Seed> CreateAsync(ServerFixture server)
        {
            var http = server.Http;
            var run = Fhir.Unique("ref");
            var labels = new SearchHttp.Labels();
            var meta = () => SearchHttp.Tag(run);
            var pa = await labels.CreateAsync(http, "pa", new Patient
            {
                Meta = meta(),
                Name = [new HumanName { Family = "Alpha" + run }],
                Identifier = [new Identifier("urn:test:" + run, "A")],
            });
            var pb = await labels.CreateAsync(http, "pb", new Patient
            {
                Meta = meta(),
                Name = [new HumanName { Family = "Beta" + run }],
                Identifier = [new Identifier("urn:test:" + run, "B")],
            });
            await labels.CreateAsync(http, "pc", new Patient { Meta = meta(), Name = [new HumanName { Family = "Gamma" + run }] });
            // A Group with the id of a Patient: seeded, as only the operator may choose ids over HTTP.
            await labels.SeedAsync(server, "group", new Group
            {
                Id = pa,
                Meta = meta(),
                Type = Group.GroupType.Person,
                Actual = true,
            });
            Observation Obs(string code, string? subject) => new()
            {
                Meta = meta(),
                Status = ObservationStatus.Final,
                Code = new CodeableConcept("http://loinc.org", code),
                Subject = subject is null ? null : new ResourceReference(subject),
            };
            await labels.CreateAsync(http, "oa", Obs("2339-0", "Patient/" + pa));
            await labels.CreateAsync(http, "ob", Obs("8480-6", "Patient/" + pb));
            await labels.CreateAsync(http, "og", Obs("2339-0", "Group/" + pa));
            await labels.CreateAsync(http, "ono", Obs("8480-6", null));
            DocumentReference Doc(string patient) => new()
            {
                Meta = meta(),
                Status = DocumentReferenceStatus.Current,
                Subject = new ResourceReference("Patient/" + patient),
                Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Url = "Binary/x" } }],
            };
            await labels.CreateAsync(http, "dra", Doc(pa));
            await labels.CreateAsync(http, "drb", Doc(pb));
            return new Seed(run, labels);
        }
    }

    public static TheoryData<string, string> Cells => new()
    {
        // reference by id, by Type/id, by typed modifier
        { "Observation?subject={pa}", "oa og" },
        { "Observation?subject=Patient/{pa}", "oa" },
        { "Observation?subject:Patient={pa}", "oa" },
        { "Observation?subject:Group={pa}", "og" },
        { "Observation?patient={pa}", "oa" },
        { "Observation?patient=Patient/{pb}", "ob" },
        { "Observation?subject=Patient/{pa},Patient/{pb}", "oa ob" },
        { "Observation?subject:missing=true", "ono" },
        { "Observation?subject:missing=false", "oa ob og" },
        // chains, one level
        { "Observation?subject:Patient.name=alpha{run}", "oa" },
        { "Observation?subject:Patient.identifier=urn:test:{run}|B", "ob" },
        { "Observation?patient.name=beta{run}", "ob" },
        { "Observation?subject.name=alpha{run}", "oa" },
        { "Observation?subject.identifier=urn:test:{run}|A", "oa" },
        { "Observation?subject:Patient._id={pa}", "oa" },
        { "DocumentReference?patient.identifier=urn:test:{run}|A", "dra" },
        { "DocumentReference?patient.identifier=urn:test:{run}|B", "drb" },
        { "DocumentReference?patient.identifier=urn:test:{run}|C", "" },
        // reverse chains
        { "Patient?_has:Observation:patient:code=http://loinc.org|2339-0", "pa" },
        { "Patient?_has:Observation:patient:code=8480-6", "pb" },
        { "Patient?_has:Observation:subject:code=2339-0", "pa" },
        { "Group?_has:Observation:subject:code=2339-0", "group" },
        { "Patient?_has:Observation:patient:code=0000-0", "" },
    };

    [Theory]
    [MemberData(nameof(Cells))]
    public async Task Reference_chain_and_has_criteria_select_the_expected_resources(string cell, string expected)
    {
        var seed = await SeedAsync();
        await SearchHttp.AssertCellAsync(server.Http, seed.Run, seed.Labels, cell, expected);
    }

    [Fact]
    public async Task Lenient_handling_ignores_a_has_criterion_on_an_unknown_parameter_entirely()
    {
        var seed = await SeedAsync();
        using var request = new HttpRequestMessage(HttpMethod.Get,
            $"Patient?{SearchHttp.TagParam(seed.Run)}&_has:Observation:patient:nosuchparam=1");
        request.Headers.TryAddWithoutValidation("Prefer", "handling=lenient");
        var bundle = await Fhir.ExpectAsync<Bundle>(await server.Http.SendAsync(request), HttpStatusCode.OK);
        // pc has no Observation: ignoring the criterion must not turn it into "has any Observation"
        Assert.Equal("pa pb pc", string.Join(" ", seed.Labels.Of(SearchHttp.Matches(bundle)).Order(StringComparer.Ordinal)));
        Assert.DoesNotContain("nosuchparam", bundle.Link.Single(l => l.Relation == "self").Url);
    }

    [Fact]
    public async Task Include_adds_the_referenced_patient_as_an_include_entry()
    {
        var seed = await SeedAsync();
        var bundle = await SearchHttp.GetAsync(server.Http,
            $"Observation?{SearchHttp.TagParam(seed.Run)}&code=2339-0&_include=Observation:patient");
        Assert.Equal("oa og", string.Join(" ", seed.Labels.Of(SearchHttp.Matches(bundle)).Order(StringComparer.Ordinal)));
        Assert.Equal("pa", string.Join(" ", seed.Labels.Of(SearchHttp.Included(bundle))));
        Assert.Equal(2, bundle.Total); // included resources do not count (R4 search.html#total)
    }

    [Fact]
    public async Task Include_with_a_target_type_follows_only_references_to_that_type()
    {
        var seed = await SeedAsync();
        var bundle = await SearchHttp.GetAsync(server.Http,
            $"Observation?{SearchHttp.TagParam(seed.Run)}&code=2339-0&_include=Observation:subject:Group");
        Assert.Equal("group", string.Join(" ", seed.Labels.Of(SearchHttp.Included(bundle))));
    }

    [Fact]
    public async Task Revinclude_adds_the_observations_that_point_at_the_patient_as_include_entries()
    {
        var seed = await SeedAsync();
        var bundle = await SearchHttp.GetAsync(server.Http,
            $"Patient?{SearchHttp.TagParam(seed.Run)}&_id={seed.Labels["pa"]}&_revinclude=Observation:patient");
        Assert.Equal("pa", string.Join(" ", seed.Labels.Of(SearchHttp.Matches(bundle))));
        Assert.Equal("oa", string.Join(" ", seed.Labels.Of(SearchHttp.Included(bundle))));
    }
}

[Collection("server")]
public sealed class SortSearchTests(ServerFixture server)
{
    sealed record Seed(string Run, SearchHttp.Labels Labels, Dictionary<string, DateTimeOffset> LastUpdated);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server);

        // Ids differ only in their last letter, so their order is the same in any collation.
        // Written in the order c, a, b: _lastUpdated sorts them that way.
        static async Task<Seed> CreateAsync(ServerFixture server)
        {
            var http = server.Http;
            var run = Fhir.Unique("sort");
            var labels = new SearchHttp.Labels();
            var updated = new Dictionary<string, DateTimeOffset>();
            foreach (var (label, family, birth, gender) in new[]
                     {
                         ("c", "Baba", "1985", AdministrativeGender.Male),
                         ("a", "Chiba", "1990-01-01", AdministrativeGender.Male),
                         ("b", "abe", "1970-06", AdministrativeGender.Female),
                     })
            {
                var stored = await labels.SeedAsync(server, label, new Patient
                {
                    Id = run + label,
                    Meta = SearchHttp.Tag(run),
                    Name = [new HumanName { Family = family }],
                    BirthDate = birth,
                    Gender = gender,
                });
                updated[label] = stored.Meta!.LastUpdated!.Value;
                await Task.Delay(5); // distinct milliseconds
            }
            return new Seed(run, labels, updated);
        }
    }

    public static TheoryData<string, string> Orders => new()
    {
        { "_sort=family", "b c a" },          // abe, Baba, Chiba: case-insensitive
        { "_sort=-family", "a c b" },
        { "_sort=birthdate", "b c a" },       // 1970-06, 1985, 1990-01-01
        { "_sort=-birthdate", "a c b" },
        { "_sort=_id", "a b c" },
        { "_sort=-_id", "c b a" },
        { "_sort=_lastUpdated", "c a b" },
        { "_sort=-_lastUpdated", "b a c" },
        { "_sort=gender,-family", "b a c" },  // female first, then males by family descending
    };

    [Theory]
    [MemberData(nameof(Orders))]
    public async Task Sort_orders_the_matches(string sort, string expected)
    {
        var seed = await SeedAsync();
        var bundle = await SearchHttp.GetAsync(server.Http, $"Patient?{SearchHttp.TagParam(seed.Run)}&{sort}");
        var actual = string.Join(" ", seed.Labels.Of(SearchHttp.Matches(bundle)));
        Assert.True(expected == actual, $"{sort}: expected order [{expected}] but got [{actual}]");
    }

    [Fact]
    public async Task Id_and_lastUpdated_criteria_select_by_the_resource_columns()
    {
        var seed = await SeedAsync();
        string At(string label) => seed.LastUpdated[label].UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ");
        var cells = new (string Query, string Expected)[]
        {
            ($"_id={seed.Labels["a"]},{seed.Labels["c"]}", "a c"),
            ($"_id={seed.Labels["a"]}x", ""),
            ($"_lastUpdated=gt{At("c")}", "a b"),
            ($"_lastUpdated=le{At("a")}", "a c"),
            ($"_lastUpdated={At("b")}", "b"),
            ($"_lastUpdated=lt{At("c")}", ""),
        };
        foreach (var (query, expected) in cells)
            await SearchHttp.AssertCellAsync(server.Http, seed.Run, seed.Labels, "Patient?" + query, expected);
    }
}

/// <summary>Paging, totals and the forms of a search request, over one set of 250 tagged Patients.</summary>
[Collection("server")]
public sealed class PagedSearchTests(ServerFixture server)
{
    const int Size = 250;
    static readonly string[] Families = ["Aoki", "Baba", "Chiba", "Doi", "Endo", "Fujii", "Goto", "Hara", "Ito", "Kato"];

    sealed record Seed(string Run, HashSet<string> Ids);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server.Http);

        static async Task<Seed> CreateAsync(HttpClient http)
        {
            var run = Fhir.Unique("page");
            var ids = new System.Collections.Concurrent.ConcurrentBag<string>();
            using var throttle = new SemaphoreSlim(8);
            await Task.WhenAll(Enumerable.Range(0, Size).Select(async i =>
            {
                await throttle.WaitAsync();
                try
                {
                    var p = new Patient
                    {
                        Meta = SearchHttp.Tag(run),
                        Name = [new HumanName { Family = Families[i % Families.Length] }],
                        BirthDate = $"19{50 + i % 7}-0{1 + i % 9}",
                    };
                    var created = await Fhir.ExpectAsync<Patient>(await http.PostAsync("Patient", Fhir.Json(p)), HttpStatusCode.Created);
                    ids.Add("Patient/" + created.Id);
                }
                finally { throttle.Release(); }
            }));
            return new Seed(run, [.. ids]);
        }
    }

    public static TheoryData<string> Orders => new() { "", "&_sort=family", "&_sort=-birthdate&_total=accurate", "&_sort=-_lastUpdated" };

    [Theory]
    [MemberData(nameof(Orders))]
    public async Task Following_next_links_visits_every_match_exactly_once(string sort)
    {
        var seed = await SeedAsync();
        var seen = new List<string>();
        var families = new List<string>();
        string? url = $"Patient?{SearchHttp.TagParam(seed.Run)}&_count=40{sort}";
        var pages = 0;
        while (url is not null)
        {
            var bundle = await SearchHttp.GetAsync(server.Http, url);
            pages++;
            Assert.True(pages <= 10, $"[{sort}] more pages than 250/40 needs: the next link does not advance ({url})");
            Assert.True(bundle.Entry.Count <= 40, $"[{sort}] page {pages} has {bundle.Entry.Count} entries for _count=40");
            if (bundle.Total is { } total) Assert.True(total == Size, $"[{sort}] page {pages} says total {total}, expected {Size}");
            seen.AddRange(SearchHttp.Matches(bundle));
            families.AddRange(bundle.Entry.Select(e => ((Patient)e.Resource!).Name[0].Family ?? ""));
            url = bundle.Link.FirstOrDefault(l => l.Relation == "next")?.Url;
        }
        var duplicates = seen.GroupBy(x => x).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(duplicates.Count == 0, $"[{sort}] {duplicates.Count} resources appeared on two pages, e.g. {duplicates.FirstOrDefault()}");
        Assert.True(seen.Count == Size, $"[{sort}] collected {seen.Count} matches, expected {Size}");
        Assert.True(seed.Ids.SetEquals(seen), $"[{sort}] the pages hold resources outside the tagged set");
        Assert.Equal(7, pages);
        if (sort == "&_sort=family")
            Assert.True(families.SequenceEqual(families.Order(StringComparer.Ordinal)), $"[{sort}] families are out of order across pages");
    }

    [Fact]
    public async Task Next_and_previous_links_keep_the_criteria_and_the_page_size()
    {
        var seed = await SeedAsync();
        var first = await SearchHttp.GetAsync(server.Http, $"Patient?{SearchHttp.TagParam(seed.Run)}&_count=40&_sort=family");
        var next = first.Link.Single(l => l.Relation == "next").Url!;
        Assert.Contains("_count=40", next);
        Assert.Contains(Uri.EscapeDataString(seed.Run), next);
        Assert.Contains("_sort=family", next);
        Assert.DoesNotContain(first.Link, l => l.Relation == "previous");
        var second = await SearchHttp.GetAsync(server.Http, next);
        var previous = second.Link.Single(l => l.Relation == "previous").Url!;
        var back = await SearchHttp.GetAsync(server.Http, previous);
        Assert.Equal(SearchHttp.Matches(first), SearchHttp.Matches(back));
    }

    [Fact]
    public async Task Next_link_keeps_the_requested_shape_of_the_entries()
    {
        var seed = await SeedAsync();
        var first = await SearchHttp.GetAsync(server.Http, $"Patient?{SearchHttp.TagParam(seed.Run)}&_count=40&_elements=birthDate");
        var next = first.Link.Single(l => l.Relation == "next").Url!;
        Assert.Contains("_elements=birthDate", next);
        var second = await SearchHttp.GetAsync(server.Http, next);
        Assert.All(second.Entry, e => Assert.Empty(((Patient)e.Resource!).Name));
    }

    public static TheoryData<string, int?, int> Totals => new()
    {
        // query suffix, expected Bundle.total, expected entries
        { "&_count=10&_total=accurate", Size, 10 },
        { "&_count=10&_sort=family&_total=accurate", Size, 10 },
        { "&_count=10&_total=none", null, 10 },
        { "&_summary=count", Size, 0 },
        { "&_summary=count&_count=5", Size, 0 },
    };

    [Theory]
    [MemberData(nameof(Totals))]
    public async Task Total_is_reported_as_requested(string suffix, int? total, int entries)
    {
        var seed = await SeedAsync();
        var bundle = await SearchHttp.GetAsync(server.Http, $"Patient?{SearchHttp.TagParam(seed.Run)}{suffix}");
        Assert.True(bundle.Total == total, $"{suffix}: expected total {total?.ToString() ?? "absent"}, got {bundle.Total?.ToString() ?? "absent"}");
        Assert.True(bundle.Entry.Count == entries, $"{suffix}: expected {entries} entries, got {bundle.Entry.Count}");
    }

    [Fact]
    public async Task Post_search_with_a_form_body_answers_like_get()
    {
        var seed = await SeedAsync();
        var query = $"{SearchHttp.TagParam(seed.Run)}&family=chiba&birthdate=ge1953&_sort=-birthdate&_count=100";
        var viaGet = await SearchHttp.GetAsync(server.Http, "Patient?" + query);

        var form = new FormUrlEncodedContent(query.Split('&').Select(p => p.Split('=', 2))
            .Select(kv => new KeyValuePair<string, string>(Uri.UnescapeDataString(kv[0]), Uri.UnescapeDataString(kv[1]))));
        var response = await server.Http.PostAsync("Patient/_search", form);
        var viaPost = await Fhir.ExpectAsync<Bundle>(response, HttpStatusCode.OK);

        Assert.NotEmpty(SearchHttp.Matches(viaGet));
        Assert.Equal(SearchHttp.Matches(viaGet), SearchHttp.Matches(viaPost));
        Assert.Equal(viaGet.Total, viaPost.Total);
    }
}

[Collection("server")]
public sealed class SearchErrorTests(ServerFixture server)
{
    public static TheoryData<string, string> BadRequests => new()
    {
        // query, text the OperationOutcome must contain to tell the client what to fix
        { "Patient?foo=bar", "foo" },
        { "Patient?subject=Patient/1", "subject" },
        { "Patient?name:below=x", ":below" },
        { "Patient?name:text=x", ":text" },
        { "Patient?birthdate:exact=1980", ":exact" },
        { "Patient?gender:contains=ma", ":contains" },
        { "Patient?birthdate=1980-13-01", "1980-13-01" },
        { "Patient?birthdate=yesterday", "yesterday" },
        { "Patient?birthdate=1980-05-10T25:00Z", "1980-05-10T25:00Z" },
        { "Patient?_lastUpdated=gt2024-02-30", "2024-02-30" },
        { "Observation?value-quantity=abc", "abc" },
        { "Observation?value-quantity=gtx5", "x5" },
        { "Observation?value-quantity=5|mg", "5|mg" },
        { "Patient?gender:missing=maybe", "gender:missing" },
        { "Patient?identifier:of-type=a|b", "identifier:of-type" },
        { "Patient?_sort=foo", "foo" },
        { "Patient?_count=many", "many" },
        { "Patient?_total=some", "some" },
        { "Observation?subject.nosuchparam=x", "nosuchparam" },
        { "Observation?subject:Patient.nosuchparam=x", "nosuchparam" },
        { "Patient?_include=Patient:foo", "foo" },
        { "Patient?_has:Observation:foo:code=1", "foo" },
        { "Patient?_has:Observation:patient:nosuchparam=1", "nosuchparam" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task A_search_the_server_cannot_honour_is_a_400_that_names_the_problem(string query, string named)
    {
        var response = await server.Http.GetAsync(SearchHttp.Escape(query));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{query}: expected 400, got {(int)response.StatusCode}: {text}");
        var outcome = await Fhir.ReadAsync<OperationOutcome>(response);
        var said = string.Join(" | ", outcome.Issue.SelectMany(i => (i.Expression ?? []).Append(i.Diagnostics ?? "")));
        Assert.True(said.Contains(named, StringComparison.Ordinal), $"{query}: the OperationOutcome does not mention '{named}': {said}");
    }

    [Fact]
    public async Task Unknown_parameter_names_the_parameter_in_the_issue_expression()
    {
        var response = await server.Http.GetAsync("Patient?nosuchparam=1");
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.BadRequest);
        Assert.Contains(outcome.Issue, i => i.Expression.Contains("nosuchparam"));
    }

    [Fact]
    public async Task Lenient_handling_ignores_unknown_parameters_and_leaves_them_out_of_the_self_link()
    {
        var run = Fhir.Unique("lenient");
        var labels = new SearchHttp.Labels();
        await labels.CreateAsync(server.Http, "p", new Patient { Meta = SearchHttp.Tag(run), Name = [new HumanName { Family = "Lenient" }] });
        var url = $"Patient?{SearchHttp.TagParam(run)}&nosuchparam=1&family=lenient&_sort=nosuchsort";

        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.TryAddWithoutValidation("Prefer", "handling=lenient");
        var bundle = await Fhir.ExpectAsync<Bundle>(await server.Http.SendAsync(request), HttpStatusCode.OK);

        Assert.Equal("p", string.Join(" ", labels.Of(SearchHttp.Matches(bundle))));
        var self = bundle.Link.Single(l => l.Relation == "self").Url;
        Assert.DoesNotContain("nosuch", self);
        Assert.Contains("family=lenient", self);
    }
}

[Collection("server")]
public sealed class SearchIndexLifecycleTests(ServerFixture server)
{
    [Fact]
    public async Task A_deleted_resource_is_no_longer_found()
    {
        var run = Fhir.Unique("del");
        var labels = new SearchHttp.Labels();
        var id = await labels.CreateAsync(server.Http, "p", new Patient
        {
            Meta = SearchHttp.Tag(run),
            Name = [new HumanName { Family = "Gone" + run }],
            Identifier = [new Identifier("urn:test:" + run, "1")],
            BirthDate = "1999-09-09",
        });
        await labels.CreateAsync(server.Http, "o", new Observation
        {
            Meta = SearchHttp.Tag(run),
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "8480-6"),
            Subject = new ResourceReference("Patient/" + id),
        });
        string[] queries =
        [
            $"Patient?family=gone{run}", $"Patient?identifier=urn:test:{run}|1", $"Patient?_id={id}",
            "Patient?birthdate=1999-09-09",
        ];
        foreach (var q in queries) await SearchHttp.AssertCellAsync(server.Http, run, labels, q, "p");

        var deleted = await server.Http.DeleteAsync($"Patient/{id}");
        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);

        foreach (var q in queries) await SearchHttp.AssertCellAsync(server.Http, run, labels, q, "");
        // nor through the references that still point at it
        await SearchHttp.AssertCellAsync(server.Http, run, labels, $"Observation?patient.identifier=urn:test:{run}|1", "");
        var withInclude = await SearchHttp.GetAsync(server.Http, $"Observation?{SearchHttp.TagParam(run)}&_include=Observation:patient");
        Assert.Empty(SearchHttp.Included(withInclude));
    }

    [Fact]
    public async Task An_updated_resource_is_found_only_by_its_new_values()
    {
        var run = Fhir.Unique("upd");
        var labels = new SearchHttp.Labels();
        var id = await labels.CreateAsync(server.Http, "p", new Patient
        {
            Meta = SearchHttp.Tag(run),
            Name = [new HumanName { Family = "Before" + run }],
            Identifier = [new Identifier("urn:test:" + run, "old")],
            BirthDate = "1960-01-01",
        });
        await labels.PutAsync(server.Http, "p", new Patient
        {
            Id = id,
            Meta = SearchHttp.Tag(run),
            Name = [new HumanName { Family = "After" + run }],
            Identifier = [new Identifier("urn:test:" + run, "new")],
            BirthDate = "1961-02-02",
        });
        var cells = new (string Query, string Expected)[]
        {
            ($"Patient?family=before{run}", ""),
            ($"Patient?family=after{run}", "p"),
            ($"Patient?identifier=urn:test:{run}|old", ""),
            ($"Patient?identifier=urn:test:{run}|new", "p"),
            ("Patient?birthdate=1960-01-01", ""),
            ("Patient?birthdate=1961-02-02", "p"),
        };
        foreach (var (query, expected) in cells)
            await SearchHttp.AssertCellAsync(server.Http, run, labels, query, expected);
    }
}

/// <summary>What the search tests share: tagging their data, running a search, naming what matched.</summary>
public static partial class SearchHttp
{
    public const string TagSystem = "urn:phrfhir:test";

    public static Meta Tag(string run) => new() { Tag = [new Coding(TagSystem, run)] };

    public static string TagParam(string run) => "_tag=" + Uri.EscapeDataString(TagSystem + "|" + run);

    /// <summary>Test labels for the resources a test created ("pa" ↔ "Patient/3f…").</summary>
    public sealed class Labels
    {
        readonly Dictionary<string, string> _byLabel = [];
        readonly Dictionary<string, string> _byKey = [];

        /// <summary>The id behind a label.</summary>
        public string this[string label] => _byLabel[label].Split('/')[1];

        public async Task<string> CreateAsync(HttpClient http, string label, Resource r)
        {
            var created = await Fhir.ExpectAsync<Resource>(await http.PostAsync(r.TypeName, Fhir.Json(r)), HttpStatusCode.Created);
            Remember(label, created);
            return created.Id!;
        }

        /// <summary>A resource at an id of the test's choosing, as the fixture's institution wrote it (ServerFixture.SeedAsync).</summary>
        public async Task<Resource> SeedAsync(ServerFixture server, string label, Resource r)
        {
            await server.SeedAsync(r);
            Remember(label, r);
            return r;
        }

        public async Task<Resource> PutAsync(HttpClient http, string label, Resource r)
        {
            var response = await http.PutAsync($"{r.TypeName}/{r.Id}", Fhir.Json(r));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, $"PUT {r.TypeName}/{r.Id}: {(int)response.StatusCode} {text}");
            var stored = await Fhir.ReadAsync<Resource>(response);
            Remember(label, stored);
            return stored;
        }

        void Remember(string label, Resource r)
        {
            var key = r.TypeName + "/" + r.Id;
            _byLabel[label] = key;
            _byKey[key] = label;
        }

        public IEnumerable<string> Of(IEnumerable<string> keys) => keys.Select(k => _byKey.GetValueOrDefault(k, k));

        /// <summary>Replaces {label} with that resource's id and {run} with the run's tag.</summary>
        public string Fill(string text, string run) =>
            Placeholder().Replace(text, m => m.Groups[1].Value == "run" ? run : this[m.Groups[1].Value]);
    }

    [GeneratedRegex(@"\{([a-z0-9]+)\}")]
    private static partial Regex Placeholder();

    /// <summary>Percent-encodes each parameter value of "Type?a=b&amp;c=d" (non-ASCII, '|', ',' …).</summary>
    public static string Escape(string query)
    {
        var q = query.IndexOf('?');
        if (q < 0) return query;
        var pairs = query[(q + 1)..].Split('&', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => p.Split('=', 2))
            .Select(kv => kv[0] + "=" + (kv.Length > 1 ? Uri.EscapeDataString(kv[1]) : ""));
        return query[..(q + 1)] + string.Join("&", pairs);
    }

    public static async Task<Bundle> GetAsync(HttpClient http, string url)
    {
        var response = await http.GetAsync(url);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"GET {url}: expected 200, got {(int)response.StatusCode}: {text}");
        var bundle = await Fhir.ReadAsync<Bundle>(response);
        Assert.Equal(Bundle.BundleType.Searchset, bundle.Type);
        return bundle;
    }

    public static List<string> Matches(Bundle b) =>
        b.Entry.Where(e => e.Search?.Mode == Bundle.SearchEntryMode.Match).Select(e => e.Resource!.TypeName + "/" + e.Resource!.Id).ToList();

    public static List<string> Included(Bundle b) =>
        b.Entry.Where(e => e.Search?.Mode == Bundle.SearchEntryMode.Include).Select(e => e.Resource!.TypeName + "/" + e.Resource!.Id).ToList();

    /// <summary>
    /// One cell of a search table: runs "Type?criteria" scoped to the run's tag and checks the labels of
    /// the matches (any order). The failure message names the cell.
    /// </summary>
    public static async Task AssertCellAsync(HttpClient http, string run, Labels labels, string cell, string expected)
    {
        var url = Escape(labels.Fill(cell, run)) + "&" + TagParam(run) + "&_count=100";
        var response = await http.GetAsync(url);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{cell}: expected 200, got {(int)response.StatusCode}: {text}");
        var bundle = await Fhir.ReadAsync<Bundle>(response);
        var actual = string.Join(" ", labels.Of(Matches(bundle)).Order(StringComparer.Ordinal));
        var want = string.Join(" ", expected.Split(' ', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
        Assert.True(want == actual, $"{cell}: expected [{want}] but got [{actual}]");
    }
}

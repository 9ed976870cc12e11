using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using static PhrFhir.Server.Tests.Audit.PersonAccessLogTests;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// AuditEvents live in a lean append-only table of their own (issue #12), searched by its own columns:
/// the parameters it supports (and only those) are in the CapabilityStatement, paging and totals work,
/// and no generic index rows or documents are written for them.
/// </summary>
[Collection("server")]
public sealed class AccessLogSearchTests(ServerFixture server)
{
    async Task<string> ReadPatientTwiceAsync()
    {
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("頁") }] })), HttpStatusCode.Created);
        for (var i = 0; i < 2; i++) Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync($"Patient/{patient.Id}")).StatusCode);
        return patient.Id;
    }

    [Fact]
    public async System.Threading.Tasks.Task The_access_log_pages_newest_first_with_its_total()
    {
        var patient = await ReadPatientTwiceAsync();
        await PollAsync(server.Operator, $"patient=Patient/{patient}&_count=10", l => l.Count >= 3); // create + 2 reads
        var first = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?patient=Patient/{patient}&subtype=read&_count=1&_total=accurate"), HttpStatusCode.OK);
        Assert.Equal(2, first.Total);
        var next = first.Link.Single(l => l.Relation == "next").Url!;
        var second = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(next), HttpStatusCode.OK);
        Assert.Single(second.Entry);
        Assert.DoesNotContain(second.Link, l => l.Relation == "next");
        Assert.True(((AuditEvent)first.Entry[0].Resource).Recorded >= ((AuditEvent)second.Entry[0].Resource).Recorded);
        var oldestFirst = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?patient=Patient/{patient}&subtype=read&_sort=date&_count=1"), HttpStatusCode.OK);
        Assert.Equal(second.Entry[0].Resource.Id, oldestFirst.Entry[0].Resource.Id);
    }

    /// <summary>Every page of a search, followed by its next links.</summary>
    async Task<List<Bundle>> PagesAsync(string query)
    {
        var pages = new List<Bundle> { await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync("AuditEvent?" + query), HttpStatusCode.OK) };
        while (pages[^1].Link.FirstOrDefault(l => l.Relation == "next")?.Url is { } next && pages.Count < 50)
            pages.Add(await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(next), HttpStatusCode.OK));
        return pages;
    }

    [Fact]
    public async System.Threading.Tasks.Task Small_pages_list_a_searchs_per_patient_events_and_other_events_in_the_order_of_one_large_page()
    {
        // Three patients, each created and read (their own events), then found by one search (one event per patient,
        // stored as parts of the search's row): the page merges both kinds, so small pages must cut one sequence.
        var since = DateTimeOffset.UtcNow.AddSeconds(-1).ToString("yyyy-MM-ddTHH:mm:ss.fffzzz");
        var family = Fhir.Unique("混在");
        var patients = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var created = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = family }] })), HttpStatusCode.Created);
            Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync($"Patient/{created.Id}")).StatusCode);
            patients.Add(created.Id);
        }
        Assert.Equal(3, (await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}"), HttpStatusCode.OK)).Entry.Count);
        // Reading the log is itself logged, about the patients it shows: the window ends before the first such read,
        // and after the events above (an event's time is taken as its request ends, which the client may see first).
        await System.Threading.Tasks.Task.Delay(250);
        var until = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffzzz");
        var who = string.Join(",", patients.Select(p => "Patient/" + p));
        var query = $"patient={who}&date=ge{Uri.EscapeDataString(since)}&date=le{Uri.EscapeDataString(until)}";
        var all = await PollAsync(server.Operator, query + "&_count=100", l => l.Count >= 9); // 3 creates, 3 reads, 3 parts
        Assert.Equal(9, all.Count);
        Assert.Equal(3, all.Count(e => e.Id.Contains('.')));
        foreach (var sort in new[] { "", "&_sort=date" })
        {
            var large = (await PagesAsync(query + sort + "&_count=100")).SelectMany(b => b.Entry).Select(e => e.Resource.Id).ToList();
            foreach (var count in new[] { 1, 2, 4 })
            {
                var pages = await PagesAsync($"{query}{sort}&_count={count}");
                Assert.Equal(large, pages.SelectMany(b => b.Entry).Select(e => e.Resource.Id).ToList());
                Assert.All(pages, b => Assert.Equal(9, b.Total)); // under the bound: exact on every page
            }
            // Newest first by default; _sort=date is the same events oldest first.
            Assert.Equal(sort == "" ? all.Select(e => e.Id) : all.Select(e => e.Id).Reverse(), large);
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task Without_total_the_access_log_counts_up_to_the_bound_and_leaves_the_total_out_beyond_it()
    {
        // Like every search (docs/storage.md "Totals"): counting a whole log on every page took seconds at
        // hundreds of thousands of events, so only the first CountedTotalLimit matches are counted.
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("上限") }] })), HttpStatusCode.Created);
        var reads = SearchQuery.CountedTotalLimit + 1;
        await Parallel.ForAsync(0, reads, new ParallelOptions { MaxDegreeOfParallelism = 8 },
            async (_, ct) => Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync($"Patient/{patient.Id}", ct)).StatusCode));
        var log = $"AuditEvent?patient=Patient/{patient.Id}&subtype=read";
        Bundle counted = null!;
        for (var i = 0; i < 100 && counted?.Total != reads; i++, await System.Threading.Tasks.Task.Delay(100))
            counted = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(log + "&_total=accurate&_count=1"), HttpStatusCode.OK);
        Assert.Equal(reads, counted.Total);

        var first = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(log + "&_count=10"), HttpStatusCode.OK);
        Assert.Equal(10, first.Entry.Count);
        Assert.Null(first.Total); // more than the bound: left out, the next link says there are more
        Assert.Contains(first.Link, l => l.Relation == "next");
        var last = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(log + $"&_count=10&_offset={reads - 4}"), HttpStatusCode.OK);
        Assert.Equal(4, last.Entry.Count);
        Assert.Equal(reads, last.Total); // the page shows the end: exact, without counting
        var summary = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(log + "&_summary=count"), HttpStatusCode.OK);
        Assert.Equal(reads, summary.Total);
        // A count alone: no entries and no next page (a next link of `_count=0` led a client round in circles), and the
        // self link says it is a count, as a resource search's does.
        Assert.Empty(summary.Entry);
        Assert.DoesNotContain(summary.Link, l => l.Relation == "next");
        Assert.Contains("_summary=count", summary.Link.Single(l => l.Relation == "self").Url);
        Assert.Null((await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync(log + "&_count=10&_total=none"), HttpStatusCode.OK)).Total);
        var created = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?patient=Patient/{patient.Id}&subtype=create&_count=0"), HttpStatusCode.OK);
        Assert.Equal(1, created.Total); // under the bound: exact, also for a page of none
    }

    [Fact]
    public async System.Threading.Tasks.Task The_CapabilityStatement_offers_for_AuditEvent_exactly_the_parameters_the_access_log_supports()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        var audit = cs.Rest[0].Resource.Single(r => r.Type == "AuditEvent");
        var offered = audit.SearchParam.Select(p => p.Name).ToHashSet();
        Assert.Subset(AuditQuery.Parameters.ToHashSet(), offered);
        foreach (var name in offered)
            Assert.True((await server.Operator.GetAsync($"AuditEvent?{name}=x&_count=0")).StatusCode != HttpStatusCode.InternalServerError, name);
        Assert.DoesNotContain(audit.Interaction, i => i.Code is CapabilityStatement.TypeRestfulInteraction.Update or CapabilityStatement.TypeRestfulInteraction.Delete);
        // Anything else is refused as unsupported, not silently ignored.
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync("AuditEvent?address=127.0.0.1"), HttpStatusCode.BadRequest);
        Assert.Contains("address", refused.Issue[0].Diagnostics);
    }

    [Fact]
    public async System.Threading.Tasks.Task An_AuditEvent_is_one_row_of_the_audit_table_and_nothing_else()
    {
        var patient = await ReadPatientTwiceAsync();
        var read = (await PollAsync(server.Operator, $"patient=Patient/{patient}&subtype=read", l => l.Count > 0))[0];
        var store = server.Services.GetRequiredService<FhirStore>();
        await using var cmd = store.DataSource.CreateCommand(
            "select (select count(*) from fhir.audit_event where id = $1), (select count(*) from fhir.mt_doc_resourcedocument where id = $1), " +
            "(select count(*) from fhir.ix_token where rkey = $1) + (select count(*) from fhir.ix_reference where rkey = $1) + (select count(*) from fhir.ix_date where rkey = $1)");
        cmd.Parameters.Add(new() { Value = "AuditEvent/" + read.Id });
        await using var r = await cmd.ExecuteReaderAsync();
        Assert.True(await r.ReadAsync());
        Assert.Equal((1L, 0L, 0L), (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2)));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_client_records_an_AuditEvent_which_lands_in_its_patients_log()
    {
        var patient = await ReadPatientTwiceAsync();
        var posted = new AuditEvent
        {
            Type = new Coding("http://dicom.nema.org/resources/ontology/DCM", "110106", "Export"),
            Action = AuditEvent.AuditEventAction.R,
            Recorded = DateTimeOffset.UtcNow,
            Outcome = AuditEvent.AuditEventOutcome.N0,
            Agent = [new AuditEvent.AgentComponent { Who = new ResourceReference { Display = "kiosk" }, Requestor = true }],
            Source = new AuditEvent.SourceComponent { Observer = new ResourceReference { Display = "kiosk" } },
            Entity = [new AuditEvent.EntityComponent { What = new ResourceReference("Patient/" + patient), Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1"), Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "1") }],
        };
        var created = await Fhir.ExpectAsync<AuditEvent>(await server.Operator.PostAsync("AuditEvent", Fhir.Json(posted)), HttpStatusCode.Created);
        var found = await PollAsync(server.Operator, $"patient=Patient/{patient}&type=110106", l => l.Count > 0);
        Assert.Equal(created.Id, Assert.Single(found).Id);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PutAsync($"AuditEvent/{created.Id}", Fhir.Json(created)), HttpStatusCode.MethodNotAllowed);
        await Fhir.ExpectAsync<AuditEvent>(await server.Operator.GetAsync($"AuditEvent/{created.Id}/_history/1"), HttpStatusCode.OK);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync($"AuditEvent/{created.Id}/_history/2"), HttpStatusCode.NotFound);
    }
}

using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Storage;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// A search about several patients is stored as one row — the operator's whole-query event carrying each
/// patient's part (Schema/026, docs/audit.md "One row per search") — and still served as one AuditEvent per
/// patient, in that patient's log only, with only the parts of the query that concern them; the parts are covered
/// by the row's MAC and their entries in the patients' logs by the full verification.
/// </summary>
[Collection("server")]
public sealed class SearchAuditPartsTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;
    FhirStore Store => server.Services.GetRequiredService<FhirStore>();

    static string QueryOf(AuditEvent a) => System.Text.Encoding.UTF8.GetString(a.Entity.Single(e => e.Query is not null).Query);

    async Task<string> PatientAsync(string family, string? personIdentifier = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient
            {
                Name = [new HumanName { Family = family }],
                Identifier = personIdentifier is null ? [] : [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", personIdentifier)],
            }),
        };
        // The test person's own Patient exists once (other tests make it too).
        if (personIdentifier is not null) request.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|{personIdentifier}");
        var response = await _http.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        return (await Fhir.ReadAsync<Patient>(response)).Id;
    }

    /// <summary>Searches Patient?family=… as the institution and waits for each patient's event of that search.</summary>
    async Task<Dictionary<string, AuditEvent>> SearchedAsync(string family, IReadOnlyList<string> patients)
    {
        var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}&_count=10"), HttpStatusCode.OK);
        Assert.Equal(patients.Count, found.Entry.Count);
        var events = new Dictionary<string, AuditEvent>();
        foreach (var p in patients)
        {
            var logged = await PersonAccessLogTests.PollAsync(server.Operator, $"patient=Patient/{p}&subtype=search-type&_count=100",
                l => l.Any(e => e.Entity.Any(x => x.Role?.Code == "24") && QueryOf(e).StartsWith("GET /Patient", StringComparison.Ordinal)));
            events[p] = Assert.Single(logged, e => QueryOf(e).StartsWith("GET /Patient", StringComparison.Ordinal));
        }
        return events;
    }

    async Task<T?> ScalarAsync<T>(string sql, params object[] args)
    {
        await using var cmd = Store.DataSource.CreateCommand(sql);
        foreach (var a in args) cmd.Parameters.Add(new() { Value = a });
        var value = await cmd.ExecuteScalarAsync();
        return value is DBNull or null ? default : (T)value;
    }

    async Task<OperationOutcome> VerifyAsync(bool full = true) =>
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync("AuditEvent/$verify-chain" + (full ? "?full=true" : "")), HttpStatusCode.OK);

    [Fact]
    public async System.Threading.Tasks.Task A_search_about_three_patients_is_one_stored_row_served_as_one_AuditEvent_per_patient()
    {
        var family = Fhir.Unique("部分");
        var patients = new List<string>();
        for (var i = 0; i < 3; i++) patients.Add(await PatientAsync(family));
        var events = await SearchedAsync(family, patients);

        var rowId = events[patients[0]].Id[..events[patients[0]].Id.LastIndexOf('.')];
        foreach (var (patient, audit) in events)
        {
            // Each: a PDQm/BALP PatientQuery naming that patient alone, its query without the family that names patients.
            Assert.StartsWith(rowId + ".", audit.Id);
            Assert.Equal($"Patient/{patient}", PersonAccessLogTests.PatientOf(audit));
            Assert.Equal("GET /Patient?_count=10", QueryOf(audit));
            Assert.Contains("本人に関する検索条件のみ", audit.Entity.Single(e => e.Query is not null).Description);
            Assert.Equal("https://profiles.ihe.net/ITI/PDQm/StructureDefinition/IHE.PDQm.Query.Audit.Supplier", Assert.Single(audit.Meta.Profile));
            Assert.Equal("1", audit.Meta.VersionId);
            var json = await Fhir.Json(audit).ReadAsStringAsync();
            Assert.DoesNotContain(patients.Where(p => p != patient), other => json.Contains(other, StringComparison.Ordinal));
            // Read by id and vread: the same event.
            var read = await Fhir.ExpectAsync<AuditEvent>(await server.Operator.GetAsync($"AuditEvent/{audit.Id}"), HttpStatusCode.OK);
            Assert.True(read.IsExactly(audit));
            Assert.True((await Fhir.ExpectAsync<AuditEvent>(await server.Operator.GetAsync($"AuditEvent/{audit.Id}/_history/1"), HttpStatusCode.OK)).IsExactly(audit));
            // _id and entity find it too.
            var byId = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?_id={audit.Id}"), HttpStatusCode.OK);
            Assert.Equal(audit.Id, Assert.Single(byId.Entry).Resource.Id);
            var byEntity = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?entity=Patient/{patient}&subtype=ITI-78&_count=100"), HttpStatusCode.OK);
            Assert.Contains(byEntity.Entry, e => e.Resource.Id == audit.Id);
        }
        Assert.Equal(3, events.Values.Select(e => e.Id).Distinct().Count());

        // One stored row: the operator's event with the whole query, in no one's compartment.
        Assert.Equal(1L, await ScalarAsync<long>("select count(*) from fhir.audit_event where part_person @> array[$1]::text[]", patients[0]));
        var whole = await Fhir.ExpectAsync<AuditEvent>(await server.Operator.GetAsync($"AuditEvent/{rowId}"), HttpStatusCode.OK);
        Assert.Null(PersonAccessLogTests.PatientOf(whole));
        Assert.Contains(Uri.EscapeDataString(family), QueryOf(whole));
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_person_sees_their_part_of_a_search_and_never_another_patients_part()
    {
        var family = Fhir.Unique("本人");
        // The test person's own Patient (ServerFixture's test-person; made once, shared with other tests) and another.
        var me = await PatientAsync(family, "00012345");
        var other = await PatientAsync(family);
        var since = "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        // One search naming both by id: each patient's event keeps only their own id.
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Patient?_id={me},{other}")).StatusCode);
        var events = new Dictionary<string, AuditEvent>();
        foreach (var p in new[] { me, other })
        {
            var logged = await PersonAccessLogTests.PollAsync(server.Operator, $"patient=Patient/{p}&subtype=search-type&date={since}&_count=100",
                l => l.Any(e => QueryOf(e).Contains("_id=", StringComparison.Ordinal)));
            events[p] = Assert.Single(logged, e => QueryOf(e).Contains("_id=", StringComparison.Ordinal));
            Assert.Equal($"GET /Patient?_id={p}", QueryOf(events[p]));
        }

        using var person = await server.ClientAsync("test-person", "patient/AuditEvent.rs");
        var mine = await PersonAccessLogTests.PollAsync(person, $"date={since}&subtype=search-type&_count=500", l => l.Any(e => e.Id == events[me].Id));
        Assert.Contains(mine, e => e.Id == events[me].Id);
        Assert.All(mine, a => Assert.Equal($"Patient/{me}", PersonAccessLogTests.PatientOf(a)));
        Assert.DoesNotContain(mine, a => QueryOf(a).Contains(other, StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"AuditEvent/{events[me].Id}")).StatusCode);
        // The other patient's part of the same row, and the row's own (whole-query) event, do not exist for the person.
        Assert.Equal(HttpStatusCode.NotFound, (await person.GetAsync($"AuditEvent/{events[other].Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await person.GetAsync($"AuditEvent/{events[me].Id[..events[me].Id.LastIndexOf('.')]}")).StatusCode);
        // Nor by guessing a part number beyond the row's parts.
        Assert.Equal(HttpStatusCode.NotFound, (await server.Operator.GetAsync($"AuditEvent/{events[me].Id[..events[me].Id.LastIndexOf('.')]}.9")).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_changed_part_of_a_search_is_found_by_the_verification()
    {
        var family = Fhir.Unique("改竄");
        var patients = new List<string> { await PatientAsync(family), await PatientAsync(family) };
        var events = await SearchedAsync(family, patients);
        var rowKey = "AuditEvent/" + events[patients[0]].Id[..events[patients[0]].Id.LastIndexOf('.')];
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity);

        // The reduced query rewritten, or the part moved to another patient, in the row itself: its MAC no longer matches.
        foreach (var tamper in new[] { "part_query[1] = 'GET /Patient?_count=99'", "part_person[1] = 'someone-else'" })
        {
            var (people, queries) = (await ScalarAsync<string[]>("select part_person from fhir.audit_event where id = $1", rowKey),
                await ScalarAsync<string?[]>("select part_query from fhir.audit_event where id = $1", rowKey));
            await ScalarAsync<object>($"update fhir.audit_event set {tamper} where id = $1", rowKey);
            try
            {
                var broken = await VerifyAsync();
                Assert.Equal(OperationOutcome.IssueSeverity.Error, broken.Issue[0].Severity);
                Assert.Equal(rowKey, broken.Issue[0].Expression.Single());
            }
            finally { await ScalarAsync<object>("update fhir.audit_event set part_person = $2, part_query = $3 where id = $1", rowKey, people!, queries!); }
        }
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_part_removed_from_or_moved_in_a_patients_log_is_not_served_elsewhere_and_is_found_by_the_full_check()
    {
        var family = Fhir.Unique("移動");
        var patients = new List<string> { await PatientAsync(family), await PatientAsync(family) };
        var events = await SearchedAsync(family, patients);
        var part = events[patients[0]];
        var rowKey = "AuditEvent/" + part.Id[..part.Id.LastIndexOf('.')];
        var partNo = short.Parse(part.Id[(part.Id.LastIndexOf('.') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        const string entry = "from fhir.audit_event_part where seq = (select seq from fhir.audit_event where id = $1) and part = $2";

        // Moved to another patient's log: not served there (the row's MACed part names the first patient), and missing from theirs.
        await ScalarAsync<object>($"update fhir.audit_event_part set person = $3 where (seq, part) = (select seq, part {entry})", rowKey, partNo, patients[1]);
        try
        {
            var elsewhere = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?patient=Patient/{patients[1]}&_count=100"), HttpStatusCode.OK);
            Assert.DoesNotContain(elsewhere.Entry, e => e.Resource.Id == part.Id);
            Assert.Equal(HttpStatusCode.NotFound, (await server.Operator.GetAsync($"AuditEvent/{part.Id}")).StatusCode);
            var broken = await VerifyAsync();
            Assert.Equal(OperationOutcome.IssueSeverity.Error, broken.Issue[0].Severity);
            Assert.Equal(rowKey + "." + partNo, broken.Issue[0].Expression.Single());
            // The incremental check reads only the chain; the full one is what finds a log entry gone.
            Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync(full: false)).Issue[0].Severity);
        }
        finally { await ScalarAsync<object>($"update fhir.audit_event_part set person = $3 where (seq, part) = (select seq, part {entry})", rowKey, partNo, patients[0]); }

        // Removed: found by the full check too; put back, the trail is intact again.
        await ScalarAsync<object>($"delete {entry}", rowKey, partNo);
        try { Assert.Equal(OperationOutcome.IssueSeverity.Error, (await VerifyAsync()).Issue[0].Severity); }
        finally
        {
            await ScalarAsync<object>("insert into fhir.audit_event_part (seq, part, person) select seq, $2::smallint, part_person[$2] from fhir.audit_event where id = $1",
                rowKey, (int)partNo);
        }
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity);
        Assert.True((await Fhir.ExpectAsync<AuditEvent>(await server.Operator.GetAsync($"AuditEvent/{part.Id}"), HttpStatusCode.OK)).IsExactly(part));
    }
}

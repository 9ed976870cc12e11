using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// The person's own access log (ITI-81 style): an AuditEvent about a patient's data names that patient and
/// lives in that patient's compartment, so operators search it by patient and the person, with
/// patient/AuditEvent.rs, sees exactly the events about their own data — including others reading it.
/// </summary>
[Collection("server")]
public sealed class PersonAccessLogTests(ServerFixture server)
{
    const string PersonSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    readonly HttpClient _http = server.Http;

    async Task<string> PersonPatientAsync()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, "00012345")], Name = [new HumanName { Family = "山田" }] }),
        };
        request.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={PersonSystem}|00012345");
        var response = await _http.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        return (await Fhir.ReadAsync<Patient>(response)).Id;
    }

    async Task<string> OtherPatientAsync() => (await Fhir.ExpectAsync<Patient>(
        await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("他人") }] })), HttpStatusCode.Created)).Id;

    internal static string? PatientOf(AuditEvent a) => a.Entity.SingleOrDefault(e => e.Type?.Code == "1" && e.Role?.Code == "1")?.What?.Reference;

    internal static string ClientOf(AuditEvent a) => a.Agent.First(g => g.Who?.Identifier?.System == "urn:phrfhir:client").Who.Identifier.Value;

    /// <summary>Reads and searches are stored in batches (~200 ms): poll until <paramref name="until"/> holds.</summary>
    internal static async Task<List<AuditEvent>> PollAsync(HttpClient client, string query, Func<List<AuditEvent>, bool> until)
    {
        List<AuditEvent> found = [];
        for (var i = 0; i < 60; i++)
        {
            var bundle = await Fhir.ExpectAsync<Bundle>(await client.GetAsync("AuditEvent?" + query), HttpStatusCode.OK);
            found = bundle.Entry.Select(e => (AuditEvent)e.Resource).ToList();
            if (until(found)) return found;
            await System.Threading.Tasks.Task.Delay(100);
        }
        return found;
    }

    [Fact]
    public async System.Threading.Tasks.Task The_person_sees_who_read_their_record_and_nothing_about_anyone_else()
    {
        var me = await PersonPatientAsync();
        var other = await OtherPatientAsync();
        var since = "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Patient/{me}")).StatusCode);      // someone else reads my record
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Patient/{other}")).StatusCode);   // and another person's
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Observation?subject=Patient/{other}")).StatusCode);

        // Only patient/AuditEvent.rs: the access log needs no other scope.
        using var person = await server.ClientAsync("test-person", "patient/AuditEvent.rs");
        var mine = await PollAsync(person, $"date={since}&_count=500",
            l => l.Any(a => ClientOf(a) == ServerFixture.InstitutionClient && a.Subtype.Any(s => s.Code == "read")));
        var readByInstitution = Assert.Single(mine, a => ClientOf(a) == ServerFixture.InstitutionClient && a.Subtype.Any(s => s.Code == "read"));
        Assert.Equal($"Patient/{me}", PatientOf(readByInstitution));
        Assert.All(mine, a => Assert.Equal($"Patient/{me}", PatientOf(a)));
        Assert.DoesNotContain(mine, a => a.Entity.Any(e => e.What?.Reference?.Contains(other, StringComparison.Ordinal) == true));

        // Another patient's AuditEvent does not exist for the person (404, as any resource outside their compartment).
        var theirs = await PollAsync(server.Operator, $"patient=Patient/{other}&subtype=read&date={since}", l => l.Count > 0);
        Assert.Equal(HttpStatusCode.NotFound, (await person.GetAsync($"AuditEvent/{Assert.Single(theirs).Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await person.GetAsync($"AuditEvent/{readByInstitution.Id}")).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task Operators_search_the_access_log_by_patient_date_type_subtype_and_outcome()
    {
        var other = await OtherPatientAsync();
        var since = "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Patient/{other}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Observation?subject=Patient/{other}")).StatusCode);
        using var reader = await server.ClientAsync("test-institution-reader");
        Assert.Equal(HttpStatusCode.Forbidden, (await reader.DeleteAsync($"Patient/{other}")).StatusCode);

        var q = $"patient=Patient/{other}&date={since}";
        var all = await PollAsync(server.Operator, q, l => l.Count >= 3);
        Assert.All(all, a => Assert.Equal($"Patient/{other}", PatientOf(a)));
        Assert.Single(await PollAsync(server.Operator, q + "&subtype=read", _ => true));
        Assert.Single(await PollAsync(server.Operator, q + "&subtype=search-type&_count=100", _ => true),
            a => a.Entity.Any(e => e.Query is { } b && System.Text.Encoding.UTF8.GetString(b).Contains("/Observation?", StringComparison.Ordinal)));
        var refused = Assert.Single(await PollAsync(server.Operator, q + "&outcome=4", _ => true));
        Assert.Equal("test-institution-reader", ClientOf(refused));
        Assert.Empty(await PollAsync(server.Operator, q + "&outcome=4&type=http://dicom.nema.org/resources/ontology/DCM|110114", _ => true));
        Assert.Empty(await PollAsync(server.Operator, $"patient=Patient/{other}&date=lt2020-01-01", _ => true));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_search_that_returns_two_patients_leaves_one_AuditEvent_for_each()
    {
        var a = await OtherPatientAsync();
        var b = await OtherPatientAsync();
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Patient?_id={a},{b}")).StatusCode);
        foreach (var p in new[] { a, b })
        {
            // (the polling searches of AuditEvent name the patient too, and are audited: filter on the Patient search)
            static bool IsPatientSearch(AuditEvent e) => e.Entity.Any(x => x.Query is { } b && System.Text.Encoding.UTF8.GetString(b).Contains("/Patient?", StringComparison.Ordinal));
            var events = await PollAsync(server.Operator, $"patient=Patient/{p}&subtype=search-type&_count=100", l => l.Any(IsPatientSearch));
            var search = Assert.Single(events, IsPatientSearch);
            Assert.Equal($"Patient/{p}", PatientOf(search));
            // Each patient's event names only them (the other id is someone else's business).
            var query = System.Text.Encoding.UTF8.GetString(search.Entity.Single(e => e.Query is not null).Query);
            Assert.Contains($"_id={p}", query);
            Assert.DoesNotContain(p == a ? b : a, query);
        }
    }

    static string QueryOf(AuditEvent a) => System.Text.Encoding.UTF8.GetString(a.Entity.Single(e => e.Query is not null).Query);

    [Fact]
    public async System.Threading.Tasks.Task A_patients_access_log_shows_only_the_parts_of_a_search_that_name_them()
    {
        const string system = "urn:oid:1.2.392.100495.20.3.51.19999999999";
        var (idA, idB) = (Fhir.Unique("A"), Fhir.Unique("B"));
        var patients = new List<string>();
        foreach (var value in new[] { idA, idB })
        {
            var p = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Identifier = [new Identifier(system, value)] })), HttpStatusCode.Created);
            patients.Add(p.Id);
            await Fhir.ExpectAsync<Observation>(await _http.PostAsync("Observation", Fhir.Json(new Observation
            {
                Status = ObservationStatus.Final,
                Code = new CodeableConcept("http://loinc.org", "8310-5"),
                Subject = new ResourceReference("Patient/" + p.Id),
            })), HttpStatusCode.Created);
        }
        var since = "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        // An institution's search about two people at once (ITI-67 style, by identifier).
        var search = $"Observation?patient.identifier={system}|{idA},{system}|{idB}&status=final";
        Assert.Equal(2, (await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(search), HttpStatusCode.OK)).Entry.Count);

        foreach (var (patient, mine, theirs) in new[] { (patients[0], idA, idB), (patients[1], idB, idA) })
        {
            var events = await PollAsync(server.Operator, $"patient=Patient/{patient}&subtype=search-type&_count=100",
                l => l.Any(e => QueryOf(e).Contains("/Observation", StringComparison.Ordinal)));
            var logged = Assert.Single(events, e => QueryOf(e).Contains("/Observation", StringComparison.Ordinal));
            Assert.Contains(mine, QueryOf(logged));
            Assert.Contains("status=final", QueryOf(logged));
            Assert.DoesNotContain(theirs, QueryOf(logged));
        }
        // The whole query is kept once, in no one's compartment: the operator reads it.
        var whole = await PollAsync(server.Operator, $"subtype=search-type&date={since}&_count=1000",
            l => l.Any(e => QueryOf(e).Contains(idA, StringComparison.Ordinal) && QueryOf(e).Contains(idB, StringComparison.Ordinal)));
        var operatorEvent = Assert.Single(whole, e => QueryOf(e).Contains(idA, StringComparison.Ordinal) && QueryOf(e).Contains(idB, StringComparison.Ordinal));
        Assert.Null(PatientOf(operatorEvent));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_search_naming_hundreds_of_patients_leaves_at_most_100_AuditEvents()
    {
        var marker = Fhir.Unique("many");
        var ids = Enumerable.Range(0, 300).Select(i => $"{marker}-{i:D3}").ToList();
        var since = "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Observation?patient={string.Join(',', ids)}")).StatusCode);
        static bool Mine(AuditEvent e, string marker) => e.Entity.Any(x => x.Query is { } b && System.Text.Encoding.UTF8.GetString(b).Contains(marker, StringComparison.Ordinal));
        // Poll until the writer has stored them (at most 100), then once more to see that no more arrive.
        var first = await PollAsync(server.Operator, $"subtype=search-type&date={since}&_count=1000", l => l.Count(e => Mine(e, marker)) >= 100);
        await System.Threading.Tasks.Task.Delay(500);
        var all = (await PollAsync(server.Operator, $"subtype=search-type&date={since}&_count=1000", _ => true)).Where(e => Mine(e, marker)).ToList();
        var events = all.Where(e => PatientOf(e) is not null).ToList();
        Assert.Equal(100, events.Count);
        Assert.Equal(100, events.Select(PatientOf).Distinct().Count());
        // and the whole query once more, for the operator only (each patient's event names that patient alone)
        Assert.Single(all, e => PatientOf(e) is null);
    }
}

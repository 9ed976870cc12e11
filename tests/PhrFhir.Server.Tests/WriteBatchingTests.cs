using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

/// <summary>
/// A write queues its documents, history rows and index rows and sends them together, one statement per table
/// for the whole transaction (WriteTransaction.FlushAsync, issue #12): every entry's rows must arrive, an update
/// must replace its own rows only, and a failure must leave none of them.
/// </summary>
[Collection("server")]
public sealed class WriteBatchingTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static Bundle.EntryComponent Entry(Resource r, Bundle.HTTPVerb method, string url, string? fullUrl = null, string? ifMatch = null) => new()
    {
        FullUrl = fullUrl,
        Resource = r,
        Request = new Bundle.RequestComponent { Method = method, Url = url, IfMatch = ifMatch },
    };

    async Task<int?> TotalAsync(string query) =>
        (await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(query + "&_total=accurate"), HttpStatusCode.OK)).Total;

    [Fact]
    public async System.Threading.Tasks.Task A_ten_entry_transaction_stores_the_index_and_history_rows_of_every_entry()
    {
        var family = Fhir.Unique("十件");
        var text = Fhir.Unique("体重");
        var system = "urn:test:batch:" + Fhir.Unique();
        var entries = new List<Bundle.EntryComponent>();
        for (var p = 0; p < 2; p++)
        {
            var fullUrl = "urn:uuid:" + Guid.NewGuid();
            entries.Add(Entry(new Patient { Name = [new HumanName { Family = family }], Identifier = [new Identifier(system, $"mrn-{p}")], BirthDate = "1970-01-0" + (p + 1) },
                Bundle.HTTPVerb.POST, "Patient", fullUrl));
            for (var o = 0; o < 4; o++)
                entries.Add(Entry(new Observation
                {
                    Status = ObservationStatus.Final,
                    Code = new CodeableConcept("http://loinc.org", "29463-7", "Body weight", text),
                    Subject = new ResourceReference(fullUrl),
                    Effective = new FhirDateTime($"2031-0{p + 1}-0{o + 1}"),
                    Value = new Quantity(60m + p * 10 + o, "kg"),
                }, Bundle.HTTPVerb.POST, "Observation"));
        }
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(new Bundle { Type = Bundle.BundleType.Transaction, Entry = entries })), HttpStatusCode.OK);
        Assert.Equal(10, response.Entry.Count);
        Assert.All(response.Entry, e => Assert.StartsWith("201", e.Response.Status));

        // ix_string, ix_token, ix_date (Patients), ix_reference, ix_token, ix_date, ix_number (Observations).
        Assert.Equal(2, await TotalAsync($"Patient?family={Uri.EscapeDataString(family)}"));
        Assert.Equal(2, await TotalAsync($"Patient?family={Uri.EscapeDataString(family)}&birthdate=ge1970-01-01"));
        Assert.Equal(8, await TotalAsync($"Observation?code:text={Uri.EscapeDataString(text)}"));
        for (var p = 0; p < 2; p++)
        {
            var patientId = response.Entry[p * 5].Resource.Id;
            Assert.Equal(1, await TotalAsync($"Patient?identifier={system}|mrn-{p}"));
            Assert.Equal(4, await TotalAsync($"Observation?subject=Patient/{patientId}"));
            Assert.Equal(1, await TotalAsync($"Observation?subject=Patient/{patientId}&date=2031-0{p + 1}-03"));
            Assert.Equal(1, await TotalAsync($"Observation?subject=Patient/{patientId}&value-quantity={60 + p * 10 + 2}"));
        }
        foreach (var e in response.Entry)
        {
            var history = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"{e.Resource.TypeName}/{e.Resource.Id}/_history"), HttpStatusCode.OK);
            Assert.Equal(1, history.Total);
            var first = await Fhir.ExpectAsync<Resource>(await _http.GetAsync($"{e.Resource.TypeName}/{e.Resource.Id}/_history/1"), HttpStatusCode.OK);
            Assert.Equal(e.Resource.Id, first.Id);
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task Updates_and_a_deletion_in_one_transaction_replace_only_their_own_index_rows()
    {
        var before = Fhir.Unique("前");
        var after = Fhir.Unique("後");
        var created = new List<Patient>();
        for (var i = 0; i < 4; i++)
            created.Add(await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = before }] })), HttpStatusCode.Created));
        Bundle.EntryComponent Renamed(Patient p)
        {
            var copy = (Patient)p.DeepCopy();
            copy.Name = [new HumanName { Family = after }];
            return Entry(copy, Bundle.HTTPVerb.PUT, $"Patient/{p.Id}", ifMatch: "W/\"1\"");
        }
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry = [Renamed(created[0]), Renamed(created[1]), new Bundle.EntryComponent { Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.DELETE, Url = $"Patient/{created[2].Id}" } }],
        };
        await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);

        Assert.Equal(1, await TotalAsync($"Patient?family={Uri.EscapeDataString(before)}")); // the one left alone
        Assert.Equal(2, await TotalAsync($"Patient?family={Uri.EscapeDataString(after)}"));
        Assert.Equal(HttpStatusCode.Gone, (await _http.GetAsync($"Patient/{created[2].Id}")).StatusCode);
        for (var i = 0; i < 3; i++)
        {
            var history = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/{created[i].Id}/_history"), HttpStatusCode.OK);
            Assert.Equal(2, history.Total);
        }
        var renamed = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{created[0].Id}"), HttpStatusCode.OK);
        Assert.Equal("2", renamed.Meta.VersionId);
        Assert.Equal(after, renamed.Name[0].Family);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_transaction_failing_after_queued_updates_keeps_every_old_index_and_history_row()
    {
        var before = Fhir.Unique("元");
        var after = Fhir.Unique("変");
        var a = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = before }] })), HttpStatusCode.Created);
        var b = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = before }] })), HttpStatusCode.Created);
        var renamed = (Patient)a.DeepCopy();
        renamed.Name = [new HumanName { Family = after }];
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                Entry(renamed, Bundle.HTTPVerb.PUT, $"Patient/{a.Id}"),
                Entry(new Patient { Name = [new HumanName { Family = after }] }, Bundle.HTTPVerb.POST, "Patient", "urn:uuid:" + Guid.NewGuid()),
                Entry(new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = after }, Subject = new ResourceReference($"Patient/{a.Id}") },
                    Bundle.HTTPVerb.POST, "Observation"),
                // Fails last, once the others are queued: a version of b that is not current.
                Entry(b, Bundle.HTTPVerb.PUT, $"Patient/{b.Id}", ifMatch: "W/\"5\""),
            ],
        };
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.PreconditionFailed);

        Assert.Equal(2, await TotalAsync($"Patient?family={Uri.EscapeDataString(before)}"));
        Assert.Equal(0, await TotalAsync($"Patient?family={Uri.EscapeDataString(after)}"));
        Assert.Equal(0, await TotalAsync($"Observation?code:text={Uri.EscapeDataString(after)}"));
        var history = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient/{a.Id}/_history"), HttpStatusCode.OK);
        Assert.Equal(1, history.Total);
        Assert.Equal("1", (await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{a.Id}"), HttpStatusCode.OK)).Meta.VersionId);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_value_a_deletion_gives_up_can_go_to_another_patient_in_the_same_transaction()
    {
        var system = "urn:test:batch:" + Fhir.Unique();
        var holder = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Identifier = [new Identifier(system, "1")] })), HttpStatusCode.Created);
        // A transaction runs its DELETEs before its POSTs (R4 http.html#trules): the holder's index rows are
        // still in the database, only queued for deletion, when the newcomer's value is checked.
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                Entry(new Patient { Identifier = [new Identifier(system, "1")] }, Bundle.HTTPVerb.POST, "Patient", "urn:uuid:" + Guid.NewGuid()),
                new Bundle.EntryComponent { Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.DELETE, Url = $"Patient/{holder.Id}" } },
            ],
        };
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        var newcomer = response.Entry[0].Resource.Id;
        var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?identifier={system}|1"), HttpStatusCode.OK);
        Assert.Equal([newcomer], found.Entry.Select(e => e.Resource.Id));

        // The value is held again (by the newcomer): a third Patient may not take it.
        var taken = new Patient { Identifier = [new Identifier(system, "1")] };
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Patient", Fhir.Json(taken)), HttpStatusCode.Conflict);
    }
}

using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

[Collection("server")]
public sealed class TransactionTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static Bundle.EntryComponent Post(Resource r, string fullUrl, string? ifNoneExist = null) => new()
    {
        FullUrl = fullUrl,
        Resource = r,
        Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = r.TypeName, IfNoneExist = ifNoneExist },
    };

    [Fact]
    public async System.Threading.Tasks.Task A_transaction_resolves_urn_uuid_references_and_writes_everything()
    {
        var family = Fhir.Unique("健診");
        var patientUrl = "urn:uuid:" + Guid.NewGuid();
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                // The Observation comes first and refers to the Patient by its fullUrl.
                Post(new Observation
                {
                    Status = ObservationStatus.Final,
                    Code = new CodeableConcept("http://jpfhir.jp/fhir/core/CodeSystem/JP_ObservationLabResultCode_CS", "3F015000002327101", "HbA1c"),
                    Subject = new ResourceReference(patientUrl),
                    Value = new Quantity(5.6m, "%"),
                }, "urn:uuid:" + Guid.NewGuid()),
                Post(new Patient { Name = [new HumanName { Family = family }] }, patientUrl),
            ],
        };
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        Assert.Equal(Bundle.BundleType.TransactionResponse, response.Type);
        Assert.All(response.Entry, e => Assert.StartsWith("201", e.Response.Status));
        var location = new Uri(response.Entry[1].Response.Location); // absolute, like a Location header
        Assert.StartsWith(server.BaseUrl.ToString(), location.ToString());
        var patientId = location.Segments[^3].TrimEnd('/');
        var observation = (Observation)response.Entry[0].Resource;
        Assert.Equal($"Patient/{patientId}", observation.Subject.Reference);

        var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Observation?subject=Patient/{patientId}"), HttpStatusCode.OK);
        Assert.Equal(1, found.Total);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_failing_transaction_leaves_nothing_behind()
    {
        var family = Fhir.Unique("失敗");
        var existing = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = family }] })), HttpStatusCode.Created);
        var stale = (Patient)existing.DeepCopy();
        stale.Gender = AdministrativeGender.Male;
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                Post(new Patient { Name = [new HumanName { Family = family }] }, "urn:uuid:" + Guid.NewGuid()),
                new Bundle.EntryComponent
                {
                    Resource = new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = family } },
                    Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Observation" },
                },
                // Fails last, after the creates were staged: If-Match on a version that is not current.
                new Bundle.EntryComponent
                {
                    Resource = stale,
                    Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.PUT, Url = $"Patient/{existing.Id}", IfMatch = "W/\"7\"" },
                },
            ],
        };
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.PreconditionFailed);
        Assert.Contains("entry[2]", oo.Issue[0].Diagnostics);

        var patients = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}"), HttpStatusCode.OK);
        Assert.Equal(1, patients.Total); // only the one created before the transaction
        var observations = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Observation?code:text={Uri.EscapeDataString(family)}"), HttpStatusCode.OK);
        Assert.Equal(0, observations.Total);
        var current = await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{existing.Id}"), HttpStatusCode.OK);
        Assert.Equal("1", current.Meta.VersionId);
    }

    [Fact]
    public async System.Threading.Tasks.Task An_unresolvable_urn_uuid_reference_fails_the_transaction()
    {
        var family = Fhir.Unique("未解決");
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                Post(new Patient { Name = [new HumanName { Family = family }] }, "urn:uuid:" + Guid.NewGuid()),
                Post(new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = "x" }, Subject = new ResourceReference("urn:uuid:" + Guid.NewGuid()) }, "urn:uuid:" + Guid.NewGuid()),
            ],
        };
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.BadRequest);
        Assert.Contains("Bundle.entry[1]", oo.Issue[0].Expression.First());
        var patients = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}"), HttpStatusCode.OK);
        Assert.Equal(0, patients.Total);
    }

    [Fact]
    public async System.Threading.Tasks.Task Conditional_create_in_a_transaction_reuses_the_existing_resource()
    {
        var mrn = Fhir.Unique("tx");
        var patient = new Patient { Identifier = [new Identifier("urn:test:tx", mrn)] };
        var first = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(patient)), HttpStatusCode.Created);
        var patientUrl = "urn:uuid:" + Guid.NewGuid();
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                Post(patient, patientUrl, $"identifier=urn:test:tx|{mrn}"),
                Post(new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = "x" }, Subject = new ResourceReference(patientUrl) }, "urn:uuid:" + Guid.NewGuid()),
            ],
        };
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        Assert.StartsWith("200", response.Entry[0].Response.Status);
        Assert.Equal($"Patient/{first.Id}", ((Observation)response.Entry[1].Resource).Subject.Reference);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_batch_runs_entries_independently()
    {
        var family = Fhir.Unique("一括");
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Batch,
            Entry =
            [
                new Bundle.EntryComponent { Resource = new Patient { Name = [new HumanName { Family = family }] }, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" } },
                new Bundle.EntryComponent { Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.GET, Url = "Patient/no-such-patient" } },
            ],
        };
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        Assert.Equal(Bundle.BundleType.BatchResponse, response.Type);
        Assert.StartsWith("201", response.Entry[0].Response.Status);
        Assert.StartsWith("404", response.Entry[1].Response.Status);
        Assert.IsType<OperationOutcome>(response.Entry[1].Response.Outcome);
        var patients = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}"), HttpStatusCode.OK);
        Assert.Equal(1, patients.Total);
    }
}

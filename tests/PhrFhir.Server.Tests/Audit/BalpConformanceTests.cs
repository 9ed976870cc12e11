using System.Net;
using System.Net.Http.Headers;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Server.Tests.Mhd;
using PhrFhir.Validation;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// The AuditEvents the server writes for real requests conform to the IHE profile that fits each request
/// (BALP 1.1.4, IUA ITI-71, MHD ITI-65/67/68), judged by the project's own validator with the official
/// profiles from ../shared/ref. One request of each kind, then its AuditEvent fetched and validated.
/// </summary>
[Collection("server")]
public sealed class BalpConformanceTests(ServerFixture server)
{
    const string Balp = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/";
    const string MhdProfiles = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    const string NoRef = "../shared/ref (IHE BALP and MHD profiles) is not present: AuditEvent conformance cannot be judged";
    readonly HttpClient _http = server.Http;

    static bool ReferencePresent => SharedRef.Find() is { } root
        && Directory.Exists(Path.Combine(root, "ihe", "BALP-1.1.4", "sushi-compiled")) && MhdExamples.Folder is not null;

    /// <summary>Reads and searches are audited in batches (~200 ms): wait until the event is there.</summary>
    async Task<AuditEvent> OneAsync(string query, Func<AuditEvent, bool>? where = null)
    {
        for (var i = 0; i < 60; i++)
        {
            var bundle = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync("AuditEvent?" + query + "&_count=100"), HttpStatusCode.OK);
            var found = bundle.Entry.Select(e => (AuditEvent)e.Resource).Where(where ?? (_ => true)).ToList();
            if (found.Count > 1) Assert.Fail($"{found.Count} AuditEvents for {query}:\n" + string.Join("\n", await System.Threading.Tasks.Task.WhenAll(found.Select(a => Fhir.Json(a).ReadAsStringAsync()))));
            if (found.Count == 1) return found[0];
            await System.Threading.Tasks.Task.Delay(100);
        }
        throw new Xunit.Sdk.XunitException($"no AuditEvent for {query}");
    }

    static string Since() => "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>The request a search's AuditEvent records (its BALP query entity); these tests' own AuditEvent searches are audited too.</summary>
    static string QueryOf(AuditEvent a) =>
        a.Entity.FirstOrDefault(e => e.Query is not null) is { } q ? System.Text.Encoding.UTF8.GetString(q.Query) : "";

    async System.Threading.Tasks.Task AssertConformsAsync(string what, AuditEvent audit, string profile)
    {
        Assert.True(audit.Meta.Profile.SequenceEqual([profile]), $"{what}: declares [{string.Join(", ", audit.Meta.Profile)}], expected {profile}");
        var validator = server.Services.GetRequiredService<DocumentValidator>();
        var outcome = await validator.ValidateAsync(audit);
        // Judged by the IHE profiles themselves, not by a fallback to R4 core (which would only warn).
        var family = validator.FamilyFor(audit).Id;
        Assert.True(family is "ihe-balp" or "ihe-mhd", $"{what}: validated in family {family}");
        // Loaded (its own profiles in use); it may still be compiling the rest of them in the background.
        Assert.Contains(validator.Families.Single(f => f.Id == family).State, (FamilyState[])[FamilyState.Warming, FamilyState.Ready]);
        Assert.DoesNotContain(outcome.Issue, i => i.Code == OperationOutcome.IssueType.NotSupported && i.Diagnostics?.Contains("Profile", StringComparison.Ordinal) == true);
        var errors = outcome.Issue.Where(i => i.Severity <= OperationOutcome.IssueSeverity.Error).ToList();
        Assert.True(errors.Count == 0, $"{what} ({profile}, family {validator.FamilyFor(audit).Id}): {errors.Count} errors\n" +
            string.Join("\n", errors.Select(e => $"  {string.Join(",", e.Expression)} :: {e.Diagnostics}")) + "\n" + await Fhir.Json(audit).ReadAsStringAsync());
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task The_AuditEvents_of_real_requests_conform_to_their_BALP_and_MHD_profiles()
    {
        Skip.IfNot(ReferencePresent, NoRef);
        var since = Since();

        // create, read, search (by patient, and a patient's own record), update, delete
        var patient = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("監査") }] })), HttpStatusCode.Created);
        var p = "Patient/" + patient.Id;
        await AssertConformsAsync("create Patient", await OneAsync($"patient={p}&subtype=create"), Balp + "IHE.BasicAudit.PatientCreate");
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync(p)).StatusCode);
        await AssertConformsAsync("read Patient", await OneAsync($"patient={p}&subtype=read"), Balp + "IHE.BasicAudit.PatientRead");
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Observation?patient={p}")).StatusCode);
        await AssertConformsAsync("search Observation?patient", await OneAsync($"patient={p}&subtype=search-type", a => QueryOf(a).Contains("/Observation?")), Balp + "IHE.BasicAudit.PatientQuery");
        // A search about two patients: each one's event is a part of the search's one stored row, projected when read (Schema/026).
        var second = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("監査") }] })), HttpStatusCode.Created);
        var twoSince = Since();
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Observation?patient={p},Patient/{second.Id}")).StatusCode);
        var part = await OneAsync($"patient={p}&subtype=search-type&date={twoSince}", a => QueryOf(a).Contains("/Observation?"));
        Assert.Contains('.', part.Id);
        await AssertConformsAsync("search Observation?patient=A,B (A's part)", part, Balp + "IHE.BasicAudit.PatientQuery");

        var obs = await Fhir.ExpectAsync<Observation>(await _http.PostAsync("Observation", Fhir.Json(new Observation
        {
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "8480-6"),
            Subject = new ResourceReference(p),
        })), HttpStatusCode.Created);
        await AssertConformsAsync("create Observation", await OneAsync($"entity=Observation/{obs.Id}&subtype=create"), Balp + "IHE.BasicAudit.PatientCreate");
        obs.Status = ObservationStatus.Amended;
        Assert.Equal(HttpStatusCode.OK, (await _http.PutAsync($"Observation/{obs.Id}", Fhir.Json(obs))).StatusCode);
        await AssertConformsAsync("update Observation", await OneAsync($"entity=Observation/{obs.Id}&subtype=update"), Balp + "IHE.BasicAudit.PatientUpdate");
        Assert.Equal(HttpStatusCode.NoContent, (await _http.DeleteAsync($"Observation/{obs.Id}")).StatusCode);
        await AssertConformsAsync("delete Observation", await OneAsync($"entity=Observation/{obs.Id}&subtype=delete"), Balp + "IHE.BasicAudit.PatientDelete");

        // A resource of no patient: the plain Read / Query / Create profiles.
        var org = await Fhir.ExpectAsync<Organization>(await _http.PostAsync("Organization", Fhir.Json(new Organization { Name = Fhir.Unique("健診センター") })), HttpStatusCode.Created);
        await AssertConformsAsync("create Organization", await OneAsync($"entity=Organization/{org.Id}&subtype=create"), Balp + "IHE.BasicAudit.Create");
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Organization/{org.Id}")).StatusCode);
        await AssertConformsAsync("read Organization", await OneAsync($"entity=Organization/{org.Id}&subtype=read"), Balp + "IHE.BasicAudit.Read");
        var orgName = Uri.EscapeDataString(org.Name);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Organization?name={orgName}")).StatusCode);
        await AssertConformsAsync("search Organization", await OneAsync($"subtype=search-type&date={since}",
            a => QueryOf(a).Contains($"/Organization?name={orgName}")), Balp + "IHE.BasicAudit.Query");

        // ITI-65, ITI-67, ITI-68 on the MHD example patient.
        var examplePatient = MhdExamples.Load<Patient>("Patient-ex-patient.json");
        if ((await _http.GetAsync($"Patient/{examplePatient.Id}")).StatusCode != HttpStatusCode.OK)
            await server.SeedAsync(examplePatient);
        var bundle = MhdExamples.Load<Bundle>("Bundle-ex-minimalProvideDocumentBundleSimple.json");
        MhdExamples.MakeUniqueIds(bundle);
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        var setIndex = bundle.Entry.FindIndex(e => e.Resource is List);
        var setKey = response.Entry[setIndex].Response.Location.Split("/_history")[0].Split('/')[^2..] is [var t, var i] ? $"{t}/{i}" : "";
        await AssertConformsAsync("ITI-65", await OneAsync($"entity={setKey}&subtype=urn:ihe:event-type-code|ITI-65"), MhdProfiles + "IHE.MHD.ProvideBundle.Audit.Recipient");

        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"DocumentReference?patient=Patient/{examplePatient.Id}&status=current")).StatusCode);
        await AssertConformsAsync("ITI-67", await OneAsync($"patient=Patient/{examplePatient.Id}&subtype=urn:ihe:event-type-code|ITI-67&date={since}"), MhdProfiles + "IHE.MHD.FindDocumentReferences.Audit.Responder");

        var docIndex = bundle.Entry.FindIndex(e => e.Resource is DocumentReference);
        var doc = await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync(response.Entry[docIndex].Response.Location), HttpStatusCode.OK);
        var get = new HttpRequestMessage(HttpMethod.Get, doc.Content[0].Attachment.Url);
        get.Headers.Accept.Clear();
        get.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("*/*"));
        Assert.Equal(HttpStatusCode.OK, (await _http.SendAsync(get)).StatusCode);
        var binaryKey = string.Join('/', doc.Content[0].Attachment.Url.Split('/')[^2..]);
        await AssertConformsAsync("ITI-68", await OneAsync($"entity={binaryKey}&subtype=urn:ihe:event-type-code|ITI-68"), MhdProfiles + "IHE.MHD.RetrieveDocument.Audit.Responder");

        // A login (token request): IUA ITI-71, recording the request without its secret.
        var beforeLogin = Since(); // other tests log this client in too
        await server.TokenAsync("test-institution-reader");
        var login = await OneAsync($"subtype=urn:ihe:event-type-code|ITI-71&date={beforeLogin}",
            a => a.Agent.Any(g => g.Who?.Identifier?.Value == "test-institution-reader"));
        await AssertConformsAsync("login", login, Balp + "IHE.IUA.71");
        var request = System.Text.Encoding.UTF8.GetString(login.Entity.Single().Query);
        Assert.Contains("grant_type=client_credentials", request);
        Assert.DoesNotContain(ServerFixture.Secret, request);
    }

    /// <summary>
    /// BALP's RESTful profiles fix outcome to success, so a refusal declares no profile. It keeps their shape:
    /// the same event with outcome 0 conforms to the profile its interaction would have, and as recorded it
    /// is valid FHIR R4.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_refused_request_keeps_the_BALP_shape_with_its_failure_outcome()
    {
        Skip.IfNot(ReferencePresent, NoRef);
        var patient = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("拒否") }] })), HttpStatusCode.Created);
        using var reader = await server.ClientAsync("test-institution-reader");
        Assert.Equal(HttpStatusCode.Forbidden, (await reader.DeleteAsync($"Patient/{patient.Id}")).StatusCode);

        var refused = await OneAsync($"patient=Patient/{patient.Id}&subtype=delete");
        Assert.Equal(AuditEvent.AuditEventOutcome.N4, refused.Outcome);
        Assert.Empty(refused.Meta.Profile);
        var validator = server.Services.GetRequiredService<DocumentValidator>();
        var asRecorded = await validator.ValidateAsync(refused, null, "r4-core");
        Assert.True(asRecorded.Issue.All(i => i.Severity > OperationOutcome.IssueSeverity.Error), string.Join("\n", asRecorded.Issue.Select(i => i.Diagnostics)));

        refused.Outcome = AuditEvent.AuditEventOutcome.N0;
        refused.Meta.Profile = [Balp + "IHE.BasicAudit.PatientDelete"];
        await AssertConformsAsync("refused delete, outcome set to success", refused, Balp + "IHE.BasicAudit.PatientDelete");
    }
}

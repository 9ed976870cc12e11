using Microsoft.Extensions.DependencyInjection;
using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// The person's Consent decides what physicians and the employer see (Security/AccessPolicy,
/// ConsentRules): granted → allowed, revoked → hidden at once; searches, totals, includes and Binary
/// follow; the employer gets only work-measure documents addressed to it; only the person (or the
/// operator for them) records Consents; break-glass is audited. Each test makes its own patients.
/// </summary>
[Collection("server")]
public sealed class ConsentTests(ServerFixture server)
{
    const string PhysicianSystem = "urn:oid:1.2.392.100495.20.3.41";
    const string PhysicianValue = "1234567"; // test-physician's actor
    const string EmployerSystem = "urn:oid:1.2.392.100495.20.3.2";
    const string EmployerValue = "9912345678"; // test-employer's actor
    const string DocumentClass = "http://phrfhir.example/fhir/CodeSystem/phr-document-class";

    readonly HttpClient _http = server.Http; // the institution that writes the records

    async Task<Patient> PatientAsync() => await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient
    {
        Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", Fhir.Unique("p"))],
        Name = [new HumanName { Family = "同意", Given = ["一郎"] }],
    })), HttpStatusCode.Created);

    async Task<Observation> ObservationAsync(Patient p) => await Fhir.ExpectAsync<Observation>(await _http.PostAsync("Observation", Fhir.Json(new Observation
    {
        Status = ObservationStatus.Final,
        Code = new CodeableConcept("http://loinc.org", "2339-0", "血糖"),
        Subject = new ResourceReference($"Patient/{p.Id}"),
        Value = new Quantity(98, "mg/dL"),
    })), HttpStatusCode.Created);

    async Task<DocumentReference> DocumentAsync(Patient p, string? documentClass, string text, CodeableConcept? type = null) =>
        await Fhir.ExpectAsync<DocumentReference>(await _http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Type = type,
            Subject = new ResourceReference($"Patient/{p.Id}"),
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Category = documentClass is null ? [] : [new CodeableConcept(DocumentClass, documentClass)],
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = System.Text.Encoding.UTF8.GetBytes(text) } }],
        })), HttpStatusCode.Created); // ITI-105: the bytes become a Binary

    /// <summary>The directory entry a Consent names (the operator registers it; repeatable).</summary>
    async Task<string> DirectoryEntryAsync(string type, string system, string value)
    {
        Resource entry = type == "Practitioner"
            ? new Practitioner { Identifier = [new Identifier(system, value)], Name = [new HumanName { Family = "主治医" }] }
            : new Organization { Identifier = [new Identifier(system, value)], Name = "株式会社テスト" };
        var request = new HttpRequestMessage(HttpMethod.Post, type) { Content = Fhir.Json(entry) };
        request.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={system}|{value}");
        var response = await server.Operator.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        return $"{type}/{(await Fhir.ReadAsync<Resource>(response)).Id}";
    }

    static Consent Grant(Patient p, string? actor, params string[] purposes) => new()
    {
        Status = Consent.ConsentState.Active,
        Scope = new CodeableConcept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
        Category = [new CodeableConcept("http://loinc.org", "59284-0", "Consent")],
        Patient = new ResourceReference($"Patient/{p.Id}"),
        Policy = [new Consent.PolicyComponent { Uri = "http://phrfhir.example/fhir/policy/sharing" }],
        Provision = new Consent.provisionComponent
        {
            Type = Consent.ConsentProvisionType.Permit,
            Actor = actor is null ? [] : [new Consent.provisionActorComponent
            {
                Role = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"),
                Reference = new ResourceReference(actor),
            }],
            Purpose = purposes.Select(code => new Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", code)).ToList(),
        },
    };

    static async Task<List<string>> IdsAsync(HttpClient client, string search)
    {
        var bundle = await Fhir.ExpectAsync<Bundle>(await client.GetAsync(search), HttpStatusCode.OK);
        var ids = bundle.Entry.Select(e => e.Resource.TypeName + "/" + e.Resource.Id).ToList();
        if (bundle.Total is { } total) Assert.Equal(bundle.Entry.Count(e => e.Search?.Mode != Bundle.SearchEntryMode.Include), total);
        return ids;
    }

    [Fact]
    public async System.Threading.Tasks.Task A_physician_reads_with_the_persons_consent_and_not_a_moment_after_revocation()
    {
        var p = await PatientAsync();
        var q = await PatientAsync();
        var obs = await ObservationAsync(p);
        var others = await ObservationAsync(q);
        var doc = await DocumentAsync(p, null, "紹介状");
        var binary = doc.Content[0].Attachment.Url;
        var physicianRef = await DirectoryEntryAsync("Practitioner", PhysicianSystem, PhysicianValue);
        using var physician = await server.ClientAsync("test-physician");

        async Task<HttpStatusCode> Read(string url) => (await physician.GetAsync(url)).StatusCode;
        Assert.Equal(HttpStatusCode.NotFound, await Read($"Observation/{obs.Id}"));
        Assert.Empty(await IdsAsync(physician, $"Observation?subject=Patient/{p.Id}&_total=accurate"));

        // The person (here the operator records it for them) permits this physician.
        var consent = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(Grant(p, physicianRef, "TREAT"))), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.OK, await Read($"Observation/{obs.Id}"));
        Assert.Equal(HttpStatusCode.OK, await Read($"Patient/{p.Id}"));
        Assert.Equal(HttpStatusCode.OK, await Read($"DocumentReference/{doc.Id}"));
        Assert.Equal(HttpStatusCode.OK, await Read(binary));
        Assert.Equal(HttpStatusCode.OK, await Read($"Observation/{obs.Id}/_history"));
        Assert.Equal(HttpStatusCode.NotFound, await Read($"Observation/{others.Id}"));
        Assert.Equal([$"Observation/{obs.Id}"], await IdsAsync(physician, $"Observation?subject=Patient/{p.Id}&_total=accurate"));
        Assert.Empty(await IdsAsync(physician, $"Observation?subject=Patient/{q.Id}&_total=accurate"));
        // A count alone counts only what is permitted too (p's Observation, not q's, though both match).
        var counted = await Fhir.ReadAsync<Bundle>(await physician.GetAsync($"Observation?code=http://loinc.org|2339-0&subject=Patient/{p.Id},Patient/{q.Id}&_summary=count"));
        Assert.Equal(1, counted.Total);
        var both = await IdsAsync(physician, $"Observation?_id={obs.Id},{others.Id}&_total=accurate");
        Assert.Equal([$"Observation/{obs.Id}"], both); // the total counts only what is permitted
        // ITI-67 as an EHR sends it: by the patient's identifier.
        var iti67 = $"DocumentReference?patient.identifier={p.Identifier[0].System}|{p.Identifier[0].Value}&status=current&_total=accurate";
        Assert.Equal([$"DocumentReference/{doc.Id}"], await IdsAsync(physician, iti67));
        var withIncludes = await IdsAsync(physician, $"Patient?_id={p.Id},{q.Id}&_revinclude=Observation:subject&_total=accurate");
        Assert.Equal(new[] { $"Patient/{p.Id}", $"Observation/{obs.Id}" }.Order(), withIncludes.Order());

        // Revoked: at once, with no cache in between.
        consent.Status = Consent.ConsentState.Inactive;
        Assert.Equal(HttpStatusCode.OK, (await server.Operator.PutAsync($"Consent/{consent.Id}", Fhir.Json(consent))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, await Read($"Observation/{obs.Id}"));
        Assert.Equal(HttpStatusCode.NotFound, await Read(binary));
        Assert.Empty(await IdsAsync(physician, $"Observation?subject=Patient/{p.Id}&_total=accurate"));
        Assert.Empty(await IdsAsync(physician, iti67));

        // Granted again, then deleted: hidden again.
        consent.Status = Consent.ConsentState.Active;
        Assert.Equal(HttpStatusCode.OK, (await server.Operator.PutAsync($"Consent/{consent.Id}", Fhir.Json(consent))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, await Read($"Observation/{obs.Id}"));
        Assert.Equal(HttpStatusCode.NoContent, (await server.Operator.DeleteAsync($"Consent/{consent.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, await Read($"Observation/{obs.Id}"));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_consent_to_treat_without_an_actor_reaches_every_treating_physician_and_a_dissent_wins()
    {
        var p = await PatientAsync();
        var obs = await ObservationAsync(p);
        using var physician = await server.ClientAsync("test-physician");
        var permit = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(Grant(p, null, "TREAT", "HPAYMT", "HOPERAT"))), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{obs.Id}")).StatusCode);

        // A research consent does not reach a physician who reads for treatment.
        var research = Grant(p, null, "HRESCH");
        permit.Status = Consent.ConsentState.Inactive;
        await server.Operator.PutAsync($"Consent/{permit.Id}", Fhir.Json(permit));
        var researchConsent = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(research)), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{obs.Id}")).StatusCode);
        await server.Operator.DeleteAsync($"Consent/{researchConsent.Id}");

        // Permit and a later dissent together: the dissent wins.
        permit.Status = Consent.ConsentState.Active;
        await server.Operator.PutAsync($"Consent/{permit.Id}", Fhir.Json(permit));
        var dissent = Grant(p, null, "TREAT");
        dissent.Provision.Type = Consent.ConsentProvisionType.Deny;
        var dissentConsent = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(dissent)), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.NotFound, (await physician.GetAsync($"Observation/{obs.Id}")).StatusCode);
        await server.Operator.DeleteAsync($"Consent/{dissentConsent.Id}");
        await server.Operator.DeleteAsync($"Consent/{permit.Id}");
    }

    [Fact]
    public async System.Threading.Tasks.Task The_employer_sees_only_work_measure_documents_addressed_to_it()
    {
        var p = await PatientAsync();
        var medical = await DocumentAsync(p, null, "精密検査結果");
        var measure = await DocumentAsync(p, "work-measure", "就業上の措置: 夜勤を免除");
        var plan = await DocumentAsync(p, "support-plan", "両立支援プラン");
        var obs = await ObservationAsync(p);
        var employerRef = await DirectoryEntryAsync("Organization", EmployerSystem, EmployerValue);
        using var employer = await server.ClientAsync("test-employer");
        Assert.Empty(await IdsAsync(employer, $"DocumentReference?subject=Patient/{p.Id}&_total=accurate"));

        // A consent to treat, with no actor, gives the employer nothing: it is not a treating party.
        var treat = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(Grant(p, null, "TREAT"))), HttpStatusCode.Created);
        Assert.Empty(await IdsAsync(employer, $"DocumentReference?subject=Patient/{p.Id}&_total=accurate"));

        // A consent addressed to the employer: still only the work-measure classes, never medical content.
        var addressed = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(Grant(p, employerRef))), HttpStatusCode.Created);
        var seen = await IdsAsync(employer, $"DocumentReference?subject=Patient/{p.Id}&_total=accurate");
        Assert.Equal(new[] { $"DocumentReference/{measure.Id}", $"DocumentReference/{plan.Id}" }.Order(), seen.Order());
        Assert.Equal(HttpStatusCode.NotFound, (await employer.GetAsync($"DocumentReference/{medical.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await employer.GetAsync($"Patient/{p.Id}")).StatusCode);
        var raw = new HttpRequestMessage(HttpMethod.Get, measure.Content[0].Attachment.Url);
        raw.Headers.Accept.Clear();
        raw.Headers.TryAddWithoutValidation("Accept", "*/*");
        var bytes = await employer.SendAsync(raw);
        Assert.Equal(HttpStatusCode.OK, bytes.StatusCode);
        Assert.Equal("就業上の措置: 夜勤を免除", await bytes.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await employer.GetAsync(medical.Content[0].Attachment.Url)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await employer.GetAsync($"Observation/{obs.Id}")).StatusCode); // no scope for it at all

        await server.Operator.DeleteAsync($"Consent/{addressed.Id}");
        await server.Operator.DeleteAsync($"Consent/{treat.Id}");
        Assert.Empty(await IdsAsync(employer, $"DocumentReference?subject=Patient/{p.Id}&_total=accurate"));
    }

    [Fact]
    public async System.Threading.Tasks.Task Only_the_person_or_the_operator_records_a_consent()
    {
        // The shared test person (PersonCompartmentTests registers the same identifier, repeatably).
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", "00012345")] }),
        };
        request.Headers.TryAddWithoutValidation("If-None-Exist", "identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|00012345");
        var me = await Fhir.ReadAsync<Patient>(await _http.SendAsync(request));
        var someoneElse = await PatientAsync();
        using var person = await server.ClientAsync("test-person");

        var own = await person.PostAsync("Consent", Fhir.Json(Grant(me, null, "TREAT")));
        Assert.Equal(HttpStatusCode.Created, own.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await person.PostAsync("Consent", Fhir.Json(Grant(someoneElse, null, "TREAT")))).StatusCode);
        // An institution cannot grant itself access.
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Consent", Fhir.Json(Grant(someoneElse, null, "TREAT"))), HttpStatusCode.Forbidden);
        Assert.Equal(OperationOutcome.IssueType.Forbidden, oo.Issue[0].Code);
        Assert.Equal(HttpStatusCode.NoContent, (await person.DeleteAsync($"Consent/{(await Fhir.ReadAsync<Consent>(own)).Id}")).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_operator_reads_medical_content_only_by_breaking_the_glass_and_that_is_audited()
    {
        var p = await PatientAsync();
        var obs = await ObservationAsync(p);
        Assert.Equal(HttpStatusCode.NotFound, (await server.Operator.GetAsync($"Observation/{obs.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Operator.GetAsync($"Patient/{p.Id}")).StatusCode);

        var reason = "incident 2026-117: patient unconscious " + Fhir.Unique("");
        var glass = new HttpRequestMessage(HttpMethod.Get, $"Observation/{obs.Id}");
        glass.Headers.Add("X-Break-Glass", reason);
        Assert.Equal(HttpStatusCode.OK, (await server.Operator.SendAsync(glass)).StatusCode);

        // A reason is bounded: an over-long one is refused with an OperationOutcome, and nothing is read.
        var rambling = new HttpRequestMessage(HttpMethod.Get, $"Observation/{obs.Id}");
        rambling.Headers.Add("X-Break-Glass", new string('x', 501));
        var tooLong = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.SendAsync(rambling), HttpStatusCode.BadRequest);
        Assert.Contains("500", tooLong.Issue[0].Diagnostics);

        // The employer cannot break the glass.
        using var employer = await server.ClientAsync("test-employer");
        var refused = new HttpRequestMessage(HttpMethod.Get, $"DocumentReference?subject=Patient/{p.Id}");
        refused.Headers.Add("X-Break-Glass", "curious");
        Assert.Equal(HttpStatusCode.Forbidden, (await employer.SendAsync(refused)).StatusCode);

        // Reads are audited in batches: wait for this one.
        AuditEvent? audit = null;
        for (var i = 0; i < 50 && audit is null; i++)
        {
            var bundle = await Fhir.ReadAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?entity=Observation/{obs.Id}&_count=50"));
            audit = bundle.Entry.Select(e => e.Resource).OfType<AuditEvent>().FirstOrDefault(a => a.PurposeOfEvent.Any(c => c.Text == reason));
            if (audit is null) await System.Threading.Tasks.Task.Delay(100);
        }
        Assert.NotNull(audit);
        Assert.Contains(audit.PurposeOfEvent.SelectMany(c => c.Coding), c => c.Code == "BTG");
        Assert.Equal(ServerFixture.OperatorClient, audit.Agent.First(a => a.Requestor == true).Who.Identifier.Value);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_conditional_create_never_answers_with_what_the_client_cannot_see()
    {
        var identifier = Fhir.Unique("cc");
        var first = new HttpRequestMessage(HttpMethod.Post, "Patient") { Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:phrfhir:test", identifier)] }) };
        first.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier=urn:phrfhir:test|{identifier}");
        var theirs = await Fhir.ExpectAsync<Patient>(await _http.SendAsync(first), HttpStatusCode.Created);

        // Another institution (test-jwt's kind: system/Patient.cruds) asks the same: it gets its own, not theirs
        // (carrying its number in its own identifier domain: urn:phrfhir:test is the first institution's).
        using var other = await server.ClientAsync("test-institution-writer");
        var second = new HttpRequestMessage(HttpMethod.Post, "Patient") { Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:phrfhir:test-writer", identifier)] }) };
        second.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier=urn:phrfhir:test|{identifier}");
        var response = await other.SendAsync(second);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.NotEqual(theirs.Id, (await Fhir.ReadAsync<Patient>(response)).Id);
        // Nor may it change or delete what it cannot see: answered as for an id that does not exist
        // (no update-as-create for it: 405; deleting nothing: 204), and nothing changes.
        theirs.Gender = AdministrativeGender.Male;
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await other.PutAsync($"Patient/{theirs.Id}", Fhir.Json(theirs))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await other.DeleteAsync($"Patient/{theirs.Id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync($"Patient/{theirs.Id}")).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_revocation_committed_by_another_server_process_reaches_this_one()
    {
        var p = await PatientAsync();
        var obs = await ObservationAsync(p);
        var physicianRef = await DirectoryEntryAsync("Practitioner", PhysicianSystem, PhysicianValue);
        using var physician = await server.ClientAsync("test-physician");
        var consent = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(Grant(p, physicianRef, "TREAT"))), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{obs.Id}")).StatusCode);
        // The Consent's own POST notified every process too, asynchronously: let that notification land (it
        // empties the cache) before the Consents are held in memory again, or it would pass for the one below.
        await System.Threading.Tasks.Task.Delay(1000);
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{obs.Id}")).StatusCode); // Consents now held in memory

        // What another process's revocation does to the database: a new version of the Consent, then
        // (at its commit) the notification every process listens for.
        var store = server.Services.GetRequiredService<PhrFhir.Storage.FhirStore>();
        await using (var revoke = store.DataSource.CreateCommand(
            "update fhir.mt_doc_resourcedocument set data = jsonb_set(data, '{json}', to_jsonb(replace(data->>'json', '\"status\":\"active\"', '\"status\":\"inactive\"'))), " +
            "mt_version = mt_version + 1 where id = $1"))
        {
            revoke.Parameters.Add(new() { Value = $"Consent/{consent.Id}" });
            Assert.Equal(1, await revoke.ExecuteNonQueryAsync());
        }
        Assert.Equal(HttpStatusCode.OK, (await physician.GetAsync($"Observation/{obs.Id}")).StatusCode); // not told yet
        await using (var notify = store.DataSource.CreateCommand("select pg_notify('phrfhir_changed', 'Consent')"))
            await notify.ExecuteNonQueryAsync();
        var status = HttpStatusCode.OK;
        for (var i = 0; i < 50 && status == HttpStatusCode.OK; i++)
        {
            await System.Threading.Tasks.Task.Delay(20);
            status = (await physician.GetAsync($"Observation/{obs.Id}")).StatusCode;
        }
        Assert.Equal(HttpStatusCode.NotFound, status);
        await server.Operator.DeleteAsync($"Consent/{consent.Id}");
    }

    static async Task<int?> TotalAsync(HttpClient client, string search)
    {
        var bundle = await Fhir.ExpectAsync<Bundle>(await client.GetAsync(search), HttpStatusCode.OK);
        Assert.True(bundle.Total == bundle.Entry.Count, $"{search}: total {bundle.Total}, {bundle.Entry.Count} entries");
        return bundle.Total;
    }

    [Fact]
    public async System.Threading.Tasks.Task A_hidden_document_does_not_mark_its_patient_in_a_has_search()
    {
        // The operator administers Patients but sees no medical content without break-glass.
        var p = await PatientAsync();
        var doc = await DocumentAsync(p, null, "健診結果", new CodeableConcept("http://loinc.org", "53576-5"));
        var byType = $"Patient?_id={p.Id}&_has:DocumentReference:subject:type=http://loinc.org|53576-5&_total=accurate";
        var byId = $"Patient?_has:DocumentReference:subject:_id={doc.Id}&_total=accurate";
        Assert.Equal(0, await TotalAsync(server.Operator, byType));
        Assert.Equal(0, await TotalAsync(server.Operator, byId));
        // The same searches find the patient for whom the document is visible: the criteria themselves work.
        Assert.Equal(1, await TotalAsync(_http, byType));
        Assert.Equal(1, await TotalAsync(_http, byId));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_chain_does_not_tell_the_employer_the_name_birth_date_or_sex_of_a_patient_it_cannot_read()
    {
        var family = Fhir.Unique("山田");
        var p = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", Fhir.Unique("p"))],
            Name = [new HumanName { Family = family, Given = ["花子"] }],
            BirthDate = "1980-04-01",
            Gender = AdministrativeGender.Female,
        })), HttpStatusCode.Created);
        await DocumentAsync(p, "work-measure", "就業上の措置");
        var employerRef = await DirectoryEntryAsync("Organization", EmployerSystem, EmployerValue);
        var addressed = await Fhir.ExpectAsync<Consent>(await server.Operator.PostAsync("Consent", Fhir.Json(Grant(p, employerRef))), HttpStatusCode.Created);
        using var employer = await server.ClientAsync("test-employer");
        // The work-measure document is the employer's to see; its Patient is not.
        Assert.Equal(1, await TotalAsync(employer, $"DocumentReference?subject=Patient/{p.Id}&_total=accurate"));
        Assert.Equal(HttpStatusCode.NotFound, (await employer.GetAsync($"Patient/{p.Id}")).StatusCode);
        foreach (var (right, wrong) in new[] { ($"name={family}", $"name={Fhir.Unique("鈴木")}"), ("birthdate=1980-04-01", "birthdate=1975-01-01"), ("gender=female", "gender=male") })
        {
            var scope = $"DocumentReference?subject=Patient/{p.Id}&_total=accurate&subject.";
            Assert.True(await TotalAsync(employer, scope + Uri.EscapeDataString(right).Replace("%3D", "=")) == 0, $"subject.{right} revealed the hidden Patient's value");
            Assert.Equal(0, await TotalAsync(employer, scope + Uri.EscapeDataString(wrong).Replace("%3D", "=")));
        }
        await server.Operator.DeleteAsync($"Consent/{addressed.Id}");
    }
}

using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Workflows;

/// <summary>
/// The people of the two flows as test clients (ServerFixture): the worker 中村 (test-worker, whose Patient the
/// checkup institution registers), the institution, the hospital, two occupational physicians (only the first
/// has the worker's Consent), the employer. Every test opens its own case (groupIdentifier).
/// </summary>
public sealed class WorkflowActors(ServerFixture server)
{
    public const string TaskSystem = "http://phrfhir.example/fhir/CodeSystem/phr-task";
    public const string Profiles = "http://phrfhir.example/fhir/StructureDefinition/";
    const string PersonSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    const string WorkerValue = "00088001";

    public HttpClient Institution => server.Http;
    public HttpClient Worker { get; private set; } = null!;
    public HttpClient Hospital { get; private set; } = null!;
    public HttpClient Sangyoui { get; private set; } = null!;
    public HttpClient OtherSangyoui { get; private set; } = null!;
    public HttpClient Employer { get; private set; } = null!;
    public string PatientId { get; private set; } = null!;
    public string Patient => "Patient/" + PatientId;

    public static async Task<WorkflowActors> StartAsync(ServerFixture server)
    {
        // Our profiles are validated with JP Core 1.1.2, which the tests take from ../shared/ref.
        Skip.If(SharedRef.Find() is null, "../shared/ref (JP Core, eCheckup) is needed: our profiles and the HS037 documents are validated on write");
        var actors = new WorkflowActors(server);
        // The institution registers the worker (If-None-Exist: every test shares the one Patient), then the
        // worker takes a token, bound to that Patient, and consents: treatment by the hospital and the first
        // occupational physician, the employer for work-measure documents, support plans and its own steps.
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient
            {
                Identifier = [new Identifier(PersonSystem, WorkerValue)],
                Name = [new HumanName { Use = HumanName.NameUse.Official, Family = "中村", Given = ["健一"] }],
                Gender = AdministrativeGender.Male,
                BirthDate = "1978-06-14",
            }),
        };
        request.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={PersonSystem}|{WorkerValue}");
        var patient = await Fhir.ReadAsync<Patient>(await server.Http.SendAsync(request));
        actors.PatientId = patient.Id;
        actors.Worker = await server.ClientAsync("test-worker");
        actors.Hospital = await server.ClientAsync("test-hospital");
        actors.Sangyoui = await server.ClientAsync("test-sangyoui");
        actors.OtherSangyoui = await server.ClientAsync("test-sangyoui-b");
        actors.Employer = await server.ClientAsync("test-employer-wf");
        foreach (var (system, value, purpose) in new[]
                 {
                     ("urn:oid:1.2.392.100495.20.3.41", "2345678", "TREAT"), ("urn:oid:1.2.392.100495.20.3.41", "7654321", "TREAT"),
                     ("urn:oid:1.2.392.100495.20.3.2", "9900000001", null),
                 })
            await Fhir.ExpectAsync<Consent>(await actors.Worker.PostAsync("Consent", Fhir.Json(Grant(actors.Patient, system, value, purpose))), HttpStatusCode.Created);
        return actors;
    }

    static Consent Grant(string patient, string system, string value, string? purpose) => new()
    {
        Status = Consent.ConsentState.Active,
        Scope = new CodeableConcept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
        Category = [new CodeableConcept("http://loinc.org", "59284-0", "Consent")],
        Patient = new ResourceReference(patient),
        Policy = [new Consent.PolicyComponent { Uri = "http://phrfhir.example/fhir/policy/sharing" }],
        Provision = new Consent.provisionComponent
        {
            Type = Consent.ConsentProvisionType.Permit,
            Actor = [new Consent.provisionActorComponent
            {
                Role = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"),
                Reference = new ResourceReference { Identifier = new Identifier(system, value) },
            }],
            Purpose = purpose is null ? [] : [new Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", purpose)],
        },
    };

    /// <summary>Our example (examples/), with its references pointed at this run's Patient and a fresh case.</summary>
    public JsonObject Example(string file, string? group = null)
    {
        var text = File.ReadAllText(Repository.File("examples", file))
            .Replace("Patient/nakamura-kenichi", Patient).Replace("Patient/suzuki-hanako", Patient);
        var json = JsonNode.Parse(text)!.AsObject();
        if (group is not null && json.ContainsKey("groupIdentifier")) json["groupIdentifier"]!["value"] = group;
        return json;
    }

    public static string NewCase() => "urn:uuid:" + Guid.NewGuid();

    /// <summary>
    /// ITI-105: the institution registers an HS037 document (its FHIR Bundle as the attachment) for the worker;
    /// returns the DocumentReference.
    /// </summary>
    public async Task<DocumentReference> RegisterCheckupAsync(string exampleFile)
    {
        var bundle = Example("documents/" + exampleFile);
        bundle["identifier"]!["value"] = "urn:uuid:" + Guid.NewGuid(); // each registration its own document
        var doc = new DocumentReference
        {
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)) { Use = Identifier.IdentifierUse.Usual },
            Status = DocumentReferenceStatus.Current,
            Type = new CodeableConcept("http://loinc.org", "53576-5", "健康診断結果報告書"),
            Subject = new ResourceReference(Patient),
            Date = DateTimeOffset.UtcNow,
            Content = [new DocumentReference.ContentComponent
            {
                Attachment = new Attachment { ContentType = "application/fhir+json", Language = "ja", Data = Encoding.UTF8.GetBytes(bundle.ToJsonString()) },
            }],
        };
        return await Fhir.ExpectAsync<DocumentReference>(await Institution.PostAsync("DocumentReference", Fhir.Json(doc)), HttpStatusCode.Created);
    }

    /// <summary>The worker's detailed-exam Tasks that focus on a document.</summary>
    public async Task<List<Hl7.Fhir.Model.Task>> TasksAboutAsync(HttpClient client, string focus)
    {
        var bundle = await Fhir.ExpectAsync<Bundle>(await client.GetAsync($"Task?focus={focus}&code={TaskSystem}|detailed-exam"), HttpStatusCode.OK);
        return bundle.Entry.Select(e => e.Resource).OfType<Hl7.Fhir.Model.Task>().ToList();
    }

    /// <summary>The hospital's detailed-exam result (ITI-105, a short text report) answering a Task.</summary>
    public async Task<HttpResponseMessage> RegisterResultAsync(HttpClient client, string taskId) =>
        await client.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Meta = new Meta { Profile = [Profiles + "PhrDetailedExamResult"] },
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)) { Use = Identifier.IdentifierUse.Usual },
            Status = DocumentReferenceStatus.Current,
            Type = new CodeableConcept("http://loinc.org", "57133-1", "精密検査結果報告"),
            Subject = new ResourceReference(Patient),
            Content = [new DocumentReference.ContentComponent
            {
                Attachment = new Attachment { ContentType = "text/plain", Language = "ja", Data = Encoding.UTF8.GetBytes("胸部CT：右上葉結節 8mm、良性（過誤腫）。就業制限不要。") },
            }],
            Context = new DocumentReference.ContextComponent { Related = [new ResourceReference("Task/" + taskId)] },
        }));

    /// <summary>A write expected to be refused: its status, and the OperationOutcome's text and details code.</summary>
    public static async Task<OperationOutcome> RefusedAsync(HttpResponseMessage response, HttpStatusCode status, string dueStep, params string[] saying)
    {
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, status);
        var issue = outcome.Issue[0];
        var text = issue.Diagnostics + " " + issue.Details?.Text;
        Assert.True(text.Contains(dueStep, StringComparison.Ordinal), $"the refusal should name step {dueStep}: {text}");
        foreach (var s in saying) Assert.True(text.Contains(s, StringComparison.Ordinal), $"the refusal should say '{s}': {text}");
        return outcome;
    }

    public static Hl7.Fhir.Model.Task Completed(Hl7.Fhir.Model.Task task, string? output = null)
    {
        task.Status = Hl7.Fhir.Model.Task.TaskStatus.Completed;
        if (output is not null) task.Output.Add(new Hl7.Fhir.Model.Task.OutputComponent { Type = new CodeableConcept { Text = "成果物" }, Value = new ResourceReference(output) });
        return task;
    }
}

using System.Net;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Workflows.WorkflowActors;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests.Workflows;

/// <summary>
/// 両立支援 through the API (Workflows/): work information → the attending physician's opinion → the occupational
/// physician's draft plan → the employer's approval (the plan final in the same transaction) → the person
/// confirms. Each step only by the role that owes it, each in its turn; a refusal says which step is due and who owes it.
/// </summary>
[Collection("server")]
public sealed class SupportTests(ServerFixture server)
{
    static string Code(string code) => $"{TaskSystem}|{code}";

    async Task<Hl7.Fhir.Model.Task> StepAsync(HttpClient client, string group, string code) =>
        Assert.Single(await FollowUpTests.TasksAsync(client, $"Task?group-identifier=urn:ietf:rfc:3986|{group}&code={Code(code)}"));

    async Task<T> CreateAsync<T>(HttpClient client, WorkflowActors w, string example) where T : Resource =>
        await Fhir.ExpectAsync<T>(await client.PostAsync(typeof(T).Name, Fhir.Json(w.Example(example).ToJsonString())), HttpStatusCode.Created);

    [SkippableFact]
    public async Task The_support_flow_runs_step_by_step_and_the_approval_makes_the_plan_final_in_one_transaction()
    {
        var w = await StartAsync(server);
        var group = NewCase();

        // 1. The employer registers the 勤務情報提供書 and its step, done.
        var workInfo = await CreateAsync<Composition>(w.Employer, w, "workflows/Composition-work-information.json");
        var first = new Hl7.Fhir.Model.Task
        {
            Meta = new Meta { Profile = [Profiles + "PhrTask"] },
            GroupIdentifier = new Identifier("urn:ietf:rfc:3986", group),
            Status = Hl7.Fhir.Model.Task.TaskStatus.Requested,
            Intent = Hl7.Fhir.Model.Task.TaskIntent.Order,
            Code = new CodeableConcept(TaskSystem, "work-information"),
            For = new ResourceReference(w.Patient),
            AuthoredOn = "2026-09-01T10:00:00+09:00",
            Requester = new ResourceReference { Identifier = new Identifier("urn:oid:1.2.392.100495.20.3.2", "9900000001") },
            PerformerType = [new CodeableConcept("http://phrfhir.example/fhir/CodeSystem/phr-actor", "employer")],
        };
        await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Employer.PostAsync("Task", Fhir.Json(Completed(first, "Composition/" + workInfo.Id))), HttpStatusCode.Created);

        // Approving a plan nobody drafted: out of order; the due step is the attending physician's opinion.
        var approval = w.Example("workflows/Task-support-plan-approval.json", group);
        approval.Remove("focus");
        await RefusedAsync(await w.Employer.PostAsync("Task", Fhir.Json(approval.ToJsonString())), HttpStatusCode.Conflict, "physician-opinion", "the attending physician (主治医)");
        // The employer writing the opinion itself: not its step.
        await RefusedAsync(await w.Employer.PostAsync("Composition", Fhir.Json(w.Example("workflows/Composition-physician-opinion.json").ToJsonString())),
            HttpStatusCode.Forbidden, "physician-opinion", "the attending physician (主治医)");

        // 2. The attending physician reads the work information (the person's Consent) and gives the opinion.
        Assert.Equal(HttpStatusCode.OK, (await w.Hospital.GetAsync("Composition/" + workInfo.Id)).StatusCode);
        var opinionStep = await StepAsync(w.Hospital, group, "physician-opinion");
        Assert.Equal("Composition/" + workInfo.Id, opinionStep.Focus.Reference);
        var opinion = await CreateAsync<Composition>(w.Hospital, w, "workflows/Composition-physician-opinion.json");
        await RefusedAsync(await w.Employer.PutAsync("Composition/" + opinion.Id, Fhir.Json(opinion)), HttpStatusCode.Forbidden, "physician-opinion");
        await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Hospital.PutAsync("Task/" + opinionStep.Id, Fhir.Json(Completed(opinionStep, "Composition/" + opinion.Id))), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.NotFound, (await w.Employer.GetAsync("Composition/" + opinion.Id)).StatusCode); // medical: never the employer's

        // 3. The occupational physician drafts the plan (preliminary; final only through the approval).
        var draftStep = await StepAsync(w.Sangyoui, group, "support-plan-draft");
        var finalPlan = w.Example("workflows/Composition-support-plan.json");
        finalPlan["status"] = "final";
        await RefusedAsync(await w.Sangyoui.PostAsync("Composition", Fhir.Json(finalPlan.ToJsonString())), HttpStatusCode.Conflict, "support-plan-approval", "the employer (事業者)");
        var plan = await CreateAsync<Composition>(w.Sangyoui, w, "workflows/Composition-support-plan.json");
        await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Sangyoui.PutAsync("Task/" + draftStep.Id, Fhir.Json(Completed(draftStep, "Composition/" + plan.Id))), HttpStatusCode.OK);

        // 4. The approval: the physicians cannot make it; the employer can, and the plan is final with it.
        var approvalStep = await StepAsync(w.Employer, group, "support-plan-approval");
        Assert.Equal("Composition/" + plan.Id, approvalStep.Focus.Reference);
        await RefusedAsync(await w.Hospital.PutAsync("Task/" + approvalStep.Id, Fhir.Json(Completed(approvalStep))), HttpStatusCode.Forbidden, "support-plan-approval", "the employer (事業者)");
        await RefusedAsync(await w.Sangyoui.PutAsync("Task/" + approvalStep.Id, Fhir.Json(Completed(approvalStep))), HttpStatusCode.Forbidden, "support-plan-approval");
        var seen = await Fhir.ExpectAsync<Composition>(await w.Employer.GetAsync("Composition/" + plan.Id), HttpStatusCode.OK);
        Assert.Equal(CompositionStatus.Preliminary, seen.Status);
        await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Employer.PutAsync("Task/" + approvalStep.Id, Fhir.Json(Completed(approvalStep))), HttpStatusCode.OK);
        var approved = await Fhir.ExpectAsync<Composition>(await w.Worker.GetAsync("Composition/" + plan.Id), HttpStatusCode.OK);
        Assert.Equal(CompositionStatus.Final, approved.Status);
        Assert.Equal("2", approved.Meta.VersionId);

        // 5. The person confirms; a finished step does not change any more.
        var confirm = await StepAsync(w.Worker, group, "person-confirmation");
        Assert.Equal("Composition/" + plan.Id, confirm.Focus.Reference);
        await RefusedAsync(await w.Employer.PutAsync("Task/" + confirm.Id, Fhir.Json(Completed(confirm))), HttpStatusCode.Forbidden, "person-confirmation");
        var confirmed = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Worker.PutAsync("Task/" + confirm.Id, Fhir.Json(Completed(confirm))), HttpStatusCode.OK);
        confirmed.Status = Hl7.Fhir.Model.Task.TaskStatus.Cancelled;
        await RefusedAsync(await w.Worker.PutAsync("Task/" + confirm.Id, Fhir.Json(confirmed)), HttpStatusCode.Conflict, "already");
    }

    [SkippableFact]
    public async Task A_refused_approval_changes_nothing_the_plan_stays_a_draft()
    {
        var w = await StartAsync(server);
        var plan = await CreateAsync<Composition>(w.Sangyoui, w, "workflows/Composition-support-plan.json");
        var approval = w.Example("workflows/Task-support-plan-approval.json", NewCase());
        approval["focus"]!["reference"] = "Composition/" + plan.Id;
        approval["status"] = "completed";
        // No draft step in this case: the server, not the employer, opens the approval step.
        await RefusedAsync(await w.Employer.PostAsync("Task", Fhir.Json(approval.ToJsonString())), HttpStatusCode.Conflict, "work-information");
        var unchanged = await Fhir.ExpectAsync<Composition>(await w.Sangyoui.GetAsync("Composition/" + plan.Id), HttpStatusCode.OK);
        Assert.Equal(CompositionStatus.Preliminary, unchanged.Status);
        Assert.Equal("1", unchanged.Meta.VersionId);
    }
}

using System.Net;
using System.Runtime.CompilerServices;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Workflows;

/// <summary>
/// The state machine of 健診事後措置 and 両立支援 (docs/workflows.md), checked on every version of a Task,
/// one of our Compositions or a detailed-exam result that is written, whichever path writes it (REST,
/// PATCH, batch, transaction, MHD): <see cref="ResourceWrites"/> calls <see cref="CheckAsync"/> from its one
/// staging point, before the access rule. Each step may be made only by the role that owes it, only when
/// the steps before it are done; a refusal says which step is due and who owes it. What a step sets off
/// (the next step opened, the plan made final, a Task completed by a result) is written in the same
/// transaction, so nothing is half-done.
/// </summary>
public sealed class WorkflowRules(FhirStore store, IHttpContextAccessor http)
{
    // Resources these rules write themselves (the next step, a completion): not checked again as a client's step.
    static readonly ConditionalWeakTable<Resource, object> ServerMade = new();
    const string ApprovedKey = "phrfhir.workflow-approved";

    /// <summary>
    /// True when these rules let the request change <paramref name="documentKey"/> although it did not write it:
    /// the employer completing the approval Task the occupational physician's draft opened, say. Read by
    /// <see cref="AccessPolicy.CheckWrite"/>; everything else keeps the rule "change only what you wrote".
    /// </summary>
    public static bool Approved(HttpContext ctx, string documentKey) =>
        ctx.Items[ApprovedKey] is HashSet<string> keys && keys.Contains(documentKey);

    internal static void Approve(HttpContext? ctx, Resource resource)
    {
        if (ctx is null) return;
        if (ctx.Items[ApprovedKey] is not HashSet<string> keys) ctx.Items[ApprovedKey] = keys = [];
        keys.Add(ResourceDocument.Key(resource.TypeName, resource.Id!));
    }

    /// <summary>The requester as the rules see it; null for the server's own writes (seeding, no request).</summary>
    sealed record Actor(string Role, string WriterKey, HttpContext Context);

    async Task<Actor?> ActorAsync()
    {
        if (http.HttpContext is not { } ctx) return null;
        var policy = await AccessPolicy.OfAsync(ctx, store);
        return policy.Role is { } role ? new Actor(role, policy.WriterKey, ctx) : null;
    }

    public async Task CheckAsync(WriteTransaction tx, ResourceWrites writes, Resource resource, StoredResource? current, CancellationToken ct)
    {
        if (ServerMade.TryGetValue(resource, out _)) return;
        var previous = current is { Deleted: false } ? FhirFormat.ParseStored(current.Json) : null;
        switch (resource)
        {
            case Hl7.Fhir.Model.Task task when WorkflowSteps.Of(task) is { } step:
                await TaskAsync(tx, writes, task, step, previous as Hl7.Fhir.Model.Task, ct);
                break;
            case Composition composition when WorkflowSteps.DocumentType(composition) is { } type:
                await CompositionAsync(composition, type, previous as Composition);
                break;
            case DocumentReference doc:
                await DetailedExam.ResultAsync(tx, writes, doc, previous as DocumentReference, await ActorAsync() is { } a ? (a.Role, a.Context) : null, ct);
                DetailedExam.Noticed(tx, doc);
                break;
            case Binary binary:
                DetailedExam.Noticed(tx, writes, binary);
                break;
        }
    }

    async Task TaskAsync(WriteTransaction tx, ResourceWrites writes, Hl7.Fhir.Model.Task task, WorkflowStep step, Hl7.Fhir.Model.Task? previous, CancellationToken ct)
    {
        var actor = await ActorAsync();
        if (actor is null) return; // the server's own writes (ServerFixture.SeedAsync): no requester to hold to a role
        var group = task.GroupIdentifier;
        if (group?.Value is null || task.For?.Reference is not { } person)
            throw FhirError.BadRequest($"A {step.Code} Task needs groupIdentifier (the case) and for (the person): profile PhrTask. (事例 ID と本人が必要です)", "Task");
        if (previous is not null && (WorkflowSteps.Of(previous) != step || previous.GroupIdentifier?.Value != group.Value || previous.For?.Reference != task.For.Reference))
            throw Refused(HttpStatusCode.Conflict, "A step's code, case (groupIdentifier) and person (for) do not change: open the other step instead. (ステップの種類・事例・本人は変更できません)", null);

        var others = await CaseAsync(tx, task, person, ct);
        var flow = WorkflowSteps.FlowOf(others.Select(o => WorkflowSteps.Of(o)!.Code).Append(step.Code));
        var status = task.Status;
        var was = previous?.Status;

        if (previous is null)
        {
            if (!step.Openers.Contains(actor.Role))
                throw Refused(HttpStatusCode.Conflict, $"Step {step.Code} ({step.Japanese}) is not opened by a client: the server opens it when the step before it is completed. " +
                    $"{Due(flow, others)} (このステップは前のステップの完了時に自動で作成されます)", Due(flow, others, code: true));
            // The steps before this one in the case must be done (健診事後措置: the detailed exam before the work measures).
            if (Earlier(flow, step).FirstOrDefault(e => others.Any(o => WorkflowSteps.Of(o) == e && o.Status != Hl7.Fhir.Model.Task.TaskStatus.Completed)) is { } open)
                throw Refused(HttpStatusCode.Conflict, $"Step {step.Code} ({step.Japanese}) comes after {open.Code}, which is not completed. {Due(flow, others)} (前のステップが完了していません)", open.Code);
            if (others.Any(o => WorkflowSteps.Of(o) == step && o.Status is not Hl7.Fhir.Model.Task.TaskStatus.Cancelled))
                throw Refused(HttpStatusCode.Conflict, $"The case already has a {step.Code} step. {Due(flow, others)} (このステップは既に作成されています)", Due(flow, others, code: true));
            if (status is not (Hl7.Fhir.Model.Task.TaskStatus.Requested or Hl7.Fhir.Model.Task.TaskStatus.Completed))
                throw FhirError.BadRequest($"A step is opened as requested (or completed by who owes it), not {status}. (ステップは requested で作成します)", "Task.status");
        }
        else if (was is Hl7.Fhir.Model.Task.TaskStatus.Completed or Hl7.Fhir.Model.Task.TaskStatus.Cancelled)
        {
            if (status != was || Changed(previous, task))
                throw Refused(HttpStatusCode.Conflict, $"Step {step.Code} ({step.Japanese}) is already {was?.ToString().ToLowerInvariant()}: it does not change any more. {Due(flow, others)} (このステップは既に終了しています)", Due(flow, others, code: true));
            return;
        }

        if (status == was) return; // notes, owner, due date: the writer's own business (the write rule holds)
        switch (status)
        {
            case Hl7.Fhir.Model.Task.TaskStatus.Requested when previous is null:
                break;
            case Hl7.Fhir.Model.Task.TaskStatus.Accepted or Hl7.Fhir.Model.Task.TaskStatus.InProgress or Hl7.Fhir.Model.Task.TaskStatus.OnHold:
                Owes(actor, step, flow, others);
                break;
            case Hl7.Fhir.Model.Task.TaskStatus.Cancelled:
                // Who opened a step may withdraw it (a judgement corrected, a support case closed).
                var requester = previous?.Requester?.Identifier is { } id ? id.System + "|" + id.Value : null;
                if (!step.Openers.Contains(actor.Role) && requester != actor.WriterKey)
                    throw Refused(HttpStatusCode.Forbidden, $"Step {step.Code} ({step.Japanese}) is withdrawn only by {WorkflowSteps.Roles(step.Openers.DefaultIfEmpty("operator"))}. (このステップを取り消せるのは作成者のみです)", step.Code);
                break;
            case Hl7.Fhir.Model.Task.TaskStatus.Completed:
                if (step == WorkflowSteps.DetailedExam)
                    throw Refused(HttpStatusCode.Conflict, "A detailed-exam step is completed by the hospital's result document (DocumentReference.context.related = this Task), not by changing the Task. " +
                        "(精密検査は医療機関が結果文書を登録すると完了します)", step.Code);
                Owes(actor, step, flow, others);
                await CompleteAsync(tx, writes, task, step, flow, actor, ct);
                break;
            default:
                throw FhirError.BadRequest($"Status {status} is not a step of this flow: requested → in-progress → completed, or cancelled. (このステータスは使えません)", "Task.status");
        }
        Approve(actor.Context, task);
    }

    /// <summary>Only the role that owes a step makes it; anyone else hears which step is due and who owes it.</summary>
    static void Owes(Actor actor, WorkflowStep step, WorkflowStep[] flow, List<Hl7.Fhir.Model.Task> others)
    {
        if (step.Performers.Contains(actor.Role)) return;
        throw Refused(HttpStatusCode.Forbidden, $"Step {WorkflowSteps.Describe(step)}: {WorkflowSteps.Role(actor.Role)} cannot make it. {Due(flow, others)} " +
            $"(このステップ「{step.Japanese}」を行えるのは担当者のみです)", step.Code);
    }

    /// <summary>
    /// A completion: its output must be the document the step produces, by its author; then what follows
    /// happens in this transaction (the plan made final on approval, the next step opened).
    /// </summary>
    async Task CompleteAsync(WriteTransaction tx, ResourceWrites writes, Hl7.Fhir.Model.Task task, WorkflowStep step, WorkflowStep[] flow, Actor actor, CancellationToken ct)
    {
        Resource? focus = null;
        if (step.Output is { } type)
        {
            var output = task.Output.Select(o => o.Value).OfType<ResourceReference>().FirstOrDefault()
                ?? throw FhirError.BadRequest($"Completing {step.Code} names the {WorkflowSteps.Documents[type].Japanese} it produced in Task.output (valueReference Composition/…). (成果物の文書を Task.output に指定してください)", "Task.output");
            var composition = await VisibleAsync(tx, output.Reference, "Composition", ct) as Composition;
            if (composition is null || WorkflowSteps.DocumentType(composition) != type)
                throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Invalid,
                    $"Task.output must be a {WorkflowSteps.Documents[type].Japanese} ({type}) Composition of this person that you can read. (成果物の文書が見つかりません)", "Task.output");
            if (step == WorkflowSteps.SupportPlanDraft && composition.Status != CompositionStatus.Preliminary)
                throw Refused(HttpStatusCode.Conflict, "A drafted support plan is preliminary: it becomes final when the employer approves it (support-plan-approval). (プランは承認まで preliminary です)", WorkflowSteps.SupportPlanApproval.Code);
            focus = composition;
        }
        if (step == WorkflowSteps.SupportPlanApproval)
        {
            // The approved plan is registered: draft → final in the approval's own transaction.
            var plan = await VisibleAsync(tx, task.Focus?.Reference, "Composition", ct) as Composition
                ?? throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Invalid, "The approval's focus is not a support plan you can read. (承認対象のプランが見つかりません)", "Task.focus");
            if (plan.Status != CompositionStatus.Final)
            {
                plan.Status = CompositionStatus.Final;
                ServerMade.AddOrUpdate(plan, true);
                Approve(actor.Context, plan);
                await writes.UpdateAsync(tx, "Composition", plan.Id!, plan, null, ct);
            }
            focus = plan;
        }
        if (WorkflowSteps.After(flow, step) is { } next)
            await OpenAsync(tx, writes, task, next, focus is null ? task.Focus : new ResourceReference($"Composition/{focus.Id}"), actor.WriterKey, ct);
    }

    /// <summary>Opens <paramref name="next"/> in the same case, owed by its role, requested by who completed the step before.</summary>
    internal static async Task OpenAsync(WriteTransaction tx, ResourceWrites writes, Hl7.Fhir.Model.Task before, WorkflowStep next, ResourceReference? focus, string requesterKey, CancellationToken ct)
    {
        var opened = new Hl7.Fhir.Model.Task
        {
            Meta = new Meta { Profile = [WorkflowSteps.Profiles + "PhrTask"] },
            GroupIdentifier = before.GroupIdentifier,
            Status = Hl7.Fhir.Model.Task.TaskStatus.Requested,
            Intent = Hl7.Fhir.Model.Task.TaskIntent.Order,
            Code = WorkflowSteps.CodeOf(next),
            Focus = focus,
            For = before.For,
            AuthoredOn = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssK"),
            Requester = ActorReference(requesterKey),
            PerformerType = [WorkflowSteps.PerformerType(next.Performers[0])],
            Owner = next.Performers[0] == "person" ? before.For : null,
        };
        ServerMade.AddOrUpdate(opened, true);
        await writes.CreateAsync(tx, opened, null, ct);
    }

    /// <summary>A client's actor key (system|value) as a reference by identifier.</summary>
    internal static ResourceReference ActorReference(string writerKey) =>
        writerKey.Split('|') is [var system, var value] ? new ResourceReference { Identifier = new Identifier(system, value) } : new ResourceReference { Display = writerKey };

    internal static void MarkServerMade(Resource resource) => ServerMade.AddOrUpdate(resource, true);

    /// <summary>Our documents are written by their authors only; a plan becomes final only through the approval.</summary>
    async Task CompositionAsync(Composition composition, string type, Composition? previous)
    {
        if (await ActorAsync() is not { } actor || !WorkflowSteps.Documents.TryGetValue(type, out var document)) return;
        var step = WorkflowSteps.Support.Concat(WorkflowSteps.FollowUp).First(s => s.Output == type);
        if (!document.Authors.Contains(actor.Role))
            throw Refused(HttpStatusCode.Forbidden, $"A {document.Japanese} ({type}) is written by {WorkflowSteps.Roles(document.Authors)}: step {WorkflowSteps.Describe(step)}. " +
                $"(「{document.Japanese}」を登録・変更できるのは担当者のみです)", step.Code);
        if (type == "support-plan" && composition.Status == CompositionStatus.Final && previous?.Status != CompositionStatus.Final)
            throw Refused(HttpStatusCode.Conflict, $"A support plan becomes final only with the employer's approval: step {WorkflowSteps.Describe(WorkflowSteps.SupportPlanApproval)}. " +
                "(両立支援プランは事業者の承認で確定します)", WorkflowSteps.SupportPlanApproval.Code);
    }

    /// <summary>The other steps of a case (same groupIdentifier, same person), as stored in this transaction.</summary>
    async Task<List<Hl7.Fhir.Model.Task>> CaseAsync(WriteTransaction tx, Hl7.Fhir.Model.Task task, string person, CancellationToken ct)
    {
        var group = task.GroupIdentifier!;
        var value = (group.System is null ? "" : group.System + "|") + group.Value;
        // Every step of the case, whoever wrote it: the order holds whether or not the requester may read them all.
        // Refusals name only the due step's code and the role that owes it.
        var query = new SearchQuery(store.SearchParameters, "Task", [new("group-identifier", value), new("subject", person)], lenient: false, AccessFilter.Everything);
        return (await tx.SearchAsync(query, 100, ct))
            .Where(s => s.Id != task.Id)
            .Select(s => FhirFormat.ParseStored(s.Json)).OfType<Hl7.Fhir.Model.Task>()
            .Where(t => WorkflowSteps.Of(t) is not null)
            .ToList();
    }

    static IEnumerable<WorkflowStep> Earlier(WorkflowStep[] flow, WorkflowStep step) => flow.TakeWhile(s => s != step);

    /// <summary>"Due now: …": the first open step of the case, else the next one to open.</summary>
    static string Due(WorkflowStep[] flow, List<Hl7.Fhir.Model.Task> others, bool code = false)
    {
        var open = others.Where(o => o.Status is not (Hl7.Fhir.Model.Task.TaskStatus.Completed or Hl7.Fhir.Model.Task.TaskStatus.Cancelled))
            .Select(o => WorkflowSteps.Of(o)!).OrderBy(s => Array.IndexOf(flow, s)).FirstOrDefault();
        var due = open ?? flow.FirstOrDefault(s => !others.Any(o => WorkflowSteps.Of(o) == s && o.Status == Hl7.Fhir.Model.Task.TaskStatus.Completed));
        if (code) return due?.Code ?? "none";
        return due is null ? "Every step of this case is done. (この事例のステップはすべて完了しています)"
            : $"Due now: {WorkflowSteps.Describe(due)}. (現在のステップ: {due.Japanese})";
    }

    static bool Changed(Hl7.Fhir.Model.Task before, Hl7.Fhir.Model.Task after) =>
        !before.Output.Select(o => (o.Value as ResourceReference)?.Reference).SequenceEqual(after.Output.Select(o => (o.Value as ResourceReference)?.Reference))
        || before.Focus?.Reference != after.Focus?.Reference;

    /// <summary>The stored resource a local reference names, when this request may read it; else null.</summary>
    internal static async Task<Resource?> VisibleAsync(WriteTransaction tx, string? reference, string type, CancellationToken ct)
    {
        if (reference is null || ReferenceTarget.Local(reference) is not { } target || target.Type != type) return null;
        var (stored, visible) = await tx.ReadVisibleAsync(type, target.Id, ct);
        if (stored is null || stored.Deleted || !visible) return null;
        return FhirFormat.ParseStored(stored.Json);
    }

    /// <summary>A refused step: details.text carries the code of the step due, for clients to act on.</summary>
    internal static FhirError Refused(HttpStatusCode status, string message, string? dueStep) =>
        new(status, status == HttpStatusCode.Forbidden ? OperationOutcome.IssueType.Forbidden : OperationOutcome.IssueType.BusinessRule, message) { DetailCode = dueStep };
}

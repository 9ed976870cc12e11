using System.Net;
using System.Runtime.CompilerServices;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Workflows;

/// <summary>
/// 要精検者の追跡 (tracking who still owes a detailed examination, 健診事後措置): an HS037 checkup document whose
/// judgement is coded 要精密検査 opens a detailed-exam Task for the person, and notifies them, in the
/// transaction that registers it (ITI-65, ITI-105, ITI-106: the document arrives as a Binary beside its
/// DocumentReference); the hospital's result document (DocumentReference.context.related = the Task)
/// completes it in its own transaction.
/// </summary>
public static class DetailedExam
{
    /// <summary>
    /// The eCheckup judgement codes that mean 要精密検査 (HS037 IG, CodeSystems specialCheckup-choice-*):
    /// 2141 医師の診断(がん検診) 健診判定 "1 精密検査必要"; 2140 胸部X線検査(がん検診) and 2130 喀痰細胞診 判定
    /// D and E, which the 肺がん検診 guideline sends to a detailed examination. A document that gives the
    /// judgement only as text (医師の診断(判定) 9N511000000000049 valueString, as the official sample does)
    /// opens nothing: the institution opens the Task itself (POST Task, code detailed-exam).
    /// </summary>
    public static readonly (string System, string Code, string Display)[] Judgements =
    [
        ("urn:oid:1.2.392.200119.6.2141", "1", "精密検査必要"),
        ("urn:oid:1.2.392.200119.6.2140", "4", "D"),
        ("urn:oid:1.2.392.200119.6.2140", "5", "E"),
        ("urn:oid:1.2.392.200119.6.2130", "4", "D"),
        ("urn:oid:1.2.392.200119.6.2130", "5", "E"),
    ];

    /// <summary>
    /// When the detailed exam is due: three months after the checkup is registered, the period occupational
    /// health services commonly give (精密検査は3か月以内の受診を勧奨); days overdue count from here.
    /// </summary>
    public static readonly TimeSpan DueAfter = TimeSpan.FromDays(90);

    /// <summary>What one transaction registers: checkup documents with a 要精密検査 judgement, and the DocumentReferences pointing at Binaries.</summary>
    sealed class Registered
    {
        public Dictionary<string, List<Coding>> Judged { get; } = [];
        public Dictionary<string, DocumentReference> ByBinary { get; } = [];
    }

    static readonly ConditionalWeakTable<WriteTransaction, Registered> InTransaction = new();

    /// <summary>A Binary carrying an HS037 document (53576-5) with a 要精密検査 judgement: noted, opened at commit.</summary>
    public static void Noticed(WriteTransaction tx, ResourceWrites writes, Binary binary)
    {
        if (binary.Data is not { } data || !BinaryContent.IsFhirContentType(binary.ContentType)) return;
        Bundle? document;
        try
        {
            var format = binary.ContentType!.Contains("xml", StringComparison.OrdinalIgnoreCase) ? WireFormat.Xml : WireFormat.Json;
            document = FhirFormat.ParseResource(data, format, new ServerLimits()) as Bundle;
        }
        catch (FhirError)
        {
            return; // not a FHIR resource: the registry's own rules say so where it matters
        }
        if (document?.Entry.FirstOrDefault()?.Resource is not Composition composition
            || composition.Type?.Coding.Any(c => c.Code == "53576-5") != true)
            return;
        var judged = document.Entry.Select(e => e.Resource).OfType<Observation>()
            .SelectMany(o => (o.Value as CodeableConcept)?.Coding ?? [])
            .Where(c => Judgements.Any(j => j.System == c.System && j.Code == c.Code))
            .ToList();
        if (judged.Count == 0) return;
        State(tx, writes).Judged[binary.Id!] = judged;
    }

    /// <summary>A DocumentReference created in the transaction: which Binary it registers.</summary>
    public static void Noticed(WriteTransaction tx, DocumentReference doc)
    {
        foreach (var content in doc.Content)
            if (content.Attachment?.Url is { } url && ReferenceTarget.Parse(url) is { Type: "Binary" } binary)
                InTransaction.GetValue(tx, _ => new Registered()).ByBinary[binary.Id] = doc;
    }

    static Registered State(WriteTransaction tx, ResourceWrites writes)
    {
        if (InTransaction.TryGetValue(tx, out var state) && state.Judged.Count > 0) return state;
        state = InTransaction.GetValue(tx, _ => new Registered());
        // At commit, every entry is written: the DocumentReference of each judged document is known.
        tx.Defer(ct => OpenAllAsync(tx, writes, state, ct));
        return state;
    }

    static async Task OpenAllAsync(WriteTransaction tx, ResourceWrites writes, Registered state, CancellationToken ct)
    {
        foreach (var (binaryId, judged) in state.Judged)
        {
            if (!state.ByBinary.TryGetValue(binaryId, out var doc) || doc.Subject?.Reference is not { } subject) continue;
            var now = DateTimeOffset.UtcNow;
            var task = new Hl7.Fhir.Model.Task
            {
                Id = ResourceWrites.NewId(),
                Meta = new Meta { Profile = [WorkflowSteps.Profiles + "PhrTask"] },
                // One case per checkup: the work measures that follow it join this group.
                GroupIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:uuid:" + Guid.NewGuid()),
                Status = Hl7.Fhir.Model.Task.TaskStatus.Requested,
                Intent = Hl7.Fhir.Model.Task.TaskIntent.Order,
                Code = WorkflowSteps.CodeOf(WorkflowSteps.DetailedExam),
                Description = "健康診断で要精密検査と判定されました。医療機関で精密検査を受けてください。(The checkup was judged 要精密検査: please have a detailed examination.)",
                Focus = new ResourceReference("DocumentReference/" + doc.Id),
                For = new ResourceReference(subject),
                AuthoredOn = now.ToString("yyyy-MM-ddTHH:mm:ssK"),
                Requester = WorkflowRules.ActorReference(tx.Writer ?? ""),
                PerformerType = [WorkflowSteps.PerformerType("person")],
                Owner = new ResourceReference(subject),
                ReasonCode = new CodeableConcept { Coding = judged.DistinctBy(c => (c.System, c.Code)).Select(c => new Coding(c.System, c.Code, c.Display)).ToList() },
                Restriction = new Hl7.Fhir.Model.Task.RestrictionComponent { Period = new Period { EndElement = new FhirDateTime((now + DueAfter).ToString("yyyy-MM-dd")) } },
            };
            WorkflowRules.MarkServerMade(task);
            await writes.CreateAsync(tx, task, null, ct, task.Id);
            var notice = new Communication
            {
                Meta = new Meta { Profile = [WorkflowSteps.Profiles + "PhrDetailedExamNotice"] },
                Status = EventStatus.Completed,
                Category = [WorkflowSteps.CodeOf(WorkflowSteps.DetailedExam)],
                Subject = new ResourceReference(subject),
                About = [new ResourceReference("Task/" + task.Id)],
                Sent = now.ToString("yyyy-MM-ddTHH:mm:ssK"),
                Recipient = [new ResourceReference(subject)],
                Sender = WorkflowRules.ActorReference(tx.Writer ?? ""),
                Payload = [new Communication.PayloadComponent { Content = new FhirString(
                    $"健康診断の結果、要精密検査と判定された項目があります。{(now + DueAfter):yyyy年M月d日}までに医療機関で精密検査を受けてください。" +
                    "(Your checkup was judged 要精密検査: please have a detailed examination.)") }],
            };
            WorkflowRules.MarkServerMade(notice);
            await writes.CreateAsync(tx, notice, null, ct);
        }
    }

    /// <summary>
    /// The hospital's result (DocumentReference.context.related = a detailed-exam Task) completes the Task in
    /// the same transaction, with the document as its output.
    /// </summary>
    public static async Task ResultAsync(WriteTransaction tx, ResourceWrites writes, DocumentReference doc, DocumentReference? previous,
        (string Role, HttpContext Context)? actor, CancellationToken ct)
    {
        foreach (var related in doc.Context?.Related ?? [])
        {
            if (related.Reference is not { } reference || ReferenceTarget.Local(reference) is not { Type: "Task" } target) continue;
            if (previous?.Context?.Related.Any(r => r.Reference == reference) == true) continue;
            // A Task this requester cannot read answers as one that does not exist (docs/consent.md, "Writes").
            if (await WorkflowRules.VisibleAsync(tx, reference, "Task", ct) is not Hl7.Fhir.Model.Task task)
                throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.NotFound,
                    $"DocumentReference.context.related: {reference} is not known. (参照先のタスクがありません)", "DocumentReference.context.related");
            if (WorkflowSteps.Of(task) != WorkflowSteps.DetailedExam) continue;
            if (actor is { } a && a.Role is not ("physician" or "institution"))
                throw WorkflowRules.Refused(HttpStatusCode.Forbidden,
                    $"A detailed-exam result is registered by the hospital ({WorkflowSteps.Role("physician")}), not by {WorkflowSteps.Role(a.Role)}. (精密検査結果は医療機関が登録します)",
                    WorkflowSteps.DetailedExam.Code);
            if (task.Status is Hl7.Fhir.Model.Task.TaskStatus.Completed or Hl7.Fhir.Model.Task.TaskStatus.Cancelled)
                throw WorkflowRules.Refused(HttpStatusCode.Conflict, $"{reference} is already {task.Status?.ToString().ToLowerInvariant()}: its result was registered before. (この精密検査は既に完了しています)", null);
            task.Status = Hl7.Fhir.Model.Task.TaskStatus.Completed;
            task.Output.Add(new Hl7.Fhir.Model.Task.OutputComponent
            {
                Type = new CodeableConcept { Text = "精密検査結果 (detailed-exam result)" },
                Value = new ResourceReference("DocumentReference/" + doc.Id),
            });
            WorkflowRules.MarkServerMade(task);
            if (actor is { } by) WorkflowRules.Approve(by.Context, task);
            await writes.UpdateAsync(tx, "Task", task.Id!, task, null, ct);
        }
    }
}

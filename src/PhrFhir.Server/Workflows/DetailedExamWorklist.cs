using System.Globalization;
using Hl7.Fhir.Model;
using PhrFhir.Server.Audit;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Workflows;

/// <summary>
/// 要精検者の追跡, summed up: GET [base]/Task/$detailed-exam-worklist answers, for every detailed exam still owed
/// that the requester may see (the person's Consent decides, exactly as for
/// <c>GET Task?code=…|detailed-exam&amp;status=requested,accepted,in-progress</c>), how many there are per
/// judgement, how many are overdue, and each one's days overdue, most overdue first.
/// </summary>
public static class DetailedExamWorklist
{
    /// <summary>As GET /metadata declares it on Task (OperationDefinition Task-detailed-exam-worklist in profiles/phrfhir.r4).</summary>
    public static CapabilityStatement.OperationComponent Operation => new()
    {
        Name = "detailed-exam-worklist",
        Definition = "http://phrfhir.example/fhir/OperationDefinition/Task-detailed-exam-worklist",
        Documentation = "GET Task/$detailed-exam-worklist: the detailed exams still owed that the requester may see, counted per judgement and overdue (docs/workflows.md).",
    };

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/Task/$detailed-exam-worklist", WorklistAsync).WithMetadata(new FhirAccess(Interaction.Search, "Task"));

    static async Task WorklistAsync(HttpContext ctx, FhirStore store)
    {
        var policy = await AccessPolicy.OfAsync(ctx, store);
        var filter = await policy.FilterAsync() ?? AccessFilter.Everything;
        List<KeyValuePair<string, string>> criteria =
        [
            new("code", WorkflowSteps.TaskSystem + "|" + WorkflowSteps.DetailedExam.Code),
            new("status", "requested,accepted,in-progress"),
            new("_count", SearchQuery.MaxCount.ToString(CultureInfo.InvariantCulture)),
        ];
        var result = await store.SearchAsync(new SearchQuery(store.SearchParameters, "Task", criteria, lenient: false, filter), ctx.RequestAborted);
        AuditTrail.Concerns(ctx, result.Matches.Select(m => m.Person));
        var today = DateTime.UtcNow.Date;
        var open = result.Matches.Select(m => (Stored: m, Task: (Hl7.Fhir.Model.Task)FhirFormat.ParseStored(m.Json)))
            .Select(x => (x.Stored, x.Task, Overdue: DaysOverdue(x.Task, today)))
            .OrderByDescending(x => x.Overdue).ThenBy(x => x.Stored.Id, StringComparer.Ordinal).ToList();

        var answer = new Parameters();
        answer.Add("open", new Integer(open.Count));
        answer.Add("overdue", new Integer(open.Count(x => x.Overdue > 0)));
        foreach (var group in open.SelectMany(x => Judgements(x.Task).Select(j => (Judgement: j, x.Overdue)))
                     .GroupBy(x => (x.Judgement.System, x.Judgement.Code)).OrderBy(g => g.Key.System, StringComparer.Ordinal).ThenBy(g => g.Key.Code, StringComparer.Ordinal))
        {
            answer.Parameter.Add(new Parameters.ParameterComponent
            {
                Name = "judgement",
                Part =
                [
                    new() { Name = "code", Value = group.First().Judgement },
                    new() { Name = "count", Value = new Integer(group.Count()) },
                    new() { Name = "overdue", Value = new Integer(group.Count(x => x.Overdue > 0)) },
                ],
            });
        }
        foreach (var (stored, task, overdue) in open)
        {
            var part = new List<Parameters.ParameterComponent>
            {
                new() { Name = "task", Value = new ResourceReference("Task/" + stored.Id) },
                new() { Name = "patient", Value = new ResourceReference(task.For?.Reference) },
                new() { Name = "status", Value = new Code(task.Status?.ToString().ToLowerInvariant()) },
                new() { Name = "daysOverdue", Value = new Integer(Math.Max(0, overdue)) },
            };
            if (task.Restriction?.Period?.End is { } due) part.Insert(3, new() { Name = "due", Value = new FhirDateTime(due) });
            answer.Parameter.Add(new Parameters.ParameterComponent { Name = "item", Part = part });
        }
        await FhirResponse.ResourceAsync(ctx, answer, 200);
    }

    static IEnumerable<Coding> Judgements(Hl7.Fhir.Model.Task task)
    {
        var codings = task.ReasonCode?.Coding ?? [];
        return codings.Count > 0 ? codings : [new Coding(null, "text", "判定は文書の記載のみ (judgement given as text only)")];
    }

    /// <summary>Days since the due date (restriction.period.end); negative or zero while not yet due, 0 without one.</summary>
    static int DaysOverdue(Hl7.Fhir.Model.Task task, DateTime today) =>
        task.Restriction?.Period?.End is { Length: >= 10 } end
        && DateTime.TryParseExact(end[..10], "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var due)
            ? (today - due.Date).Days
            : 0; // the due day's date as written: a step due "2026-12-04" is one day overdue on the 5th
}

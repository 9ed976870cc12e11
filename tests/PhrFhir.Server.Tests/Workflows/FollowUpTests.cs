using System.Net;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Workflows.WorkflowActors;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests.Workflows;

/// <summary>
/// 健診事後措置 through the API (Workflows/): an HS037 judged 要精密検査 opens the person's detailed-exam step and
/// notifies them in its own transaction; the hospital's result completes it; the occupational physician's
/// worklist follows the person's Consent; work measures come after the exam and the person confirms them; the
/// employer never sees the checkup; checkup records are kept five years.
/// </summary>
[Collection("server")]
public sealed class FollowUpTests(ServerFixture server)
{
    static string Code(string code) => $"{TaskSystem}|{code}";

    [SkippableFact]
    public async Task An_HS037_judged_要精密検査_opens_the_persons_detailed_exam_and_notifies_them_in_the_same_transaction()
    {
        var w = await StartAsync(server);
        var checkup = await w.RegisterCheckupAsync("HS037-checkup-report-detailed-exam.json");

        var task = Assert.Single(await w.TasksAboutAsync(w.Worker, "DocumentReference/" + checkup.Id));
        Assert.Equal(Hl7.Fhir.Model.Task.TaskStatus.Requested, task.Status);
        Assert.Equal(w.Patient, task.For.Reference);
        Assert.Equal(w.Patient, task.Owner.Reference); // owned by the person
        Assert.Equal("1310000001", task.Requester.Identifier.Value); // requested by the institution
        Assert.Equal(("urn:oid:1.2.392.200119.6.2140", "5"), (task.ReasonCode.Coding[0].System, task.ReasonCode.Coding[0].Code)); // E判定
        Assert.Contains(Profiles + "PhrTask", task.Meta.Profile);
        Assert.NotNull(task.Restriction.Period.End);

        var notices = await Fhir.ExpectAsync<Bundle>(await w.Worker.GetAsync($"Communication?subject={w.Patient}&category={Code("detailed-exam")}&_count=1000"), HttpStatusCode.OK);
        var notice = Assert.Single(notices.Entry.Select(e => e.Resource).OfType<Communication>(), c => c.About.Any(a => a.Reference == "Task/" + task.Id));
        Assert.Equal(w.Patient, notice.Recipient.Single().Reference);
        Assert.Contains("要精密検査", ((FhirString)notice.Payload[0].Content).Value);
    }

    [SkippableFact]
    public async Task An_HS037_with_its_judgement_only_as_text_opens_nothing_and_the_institution_opens_the_step_itself()
    {
        var w = await StartAsync(server);
        var checkup = await w.RegisterCheckupAsync("HS037-checkup-report.json");
        Assert.Empty(await w.TasksAboutAsync(w.Institution, "DocumentReference/" + checkup.Id));

        var task = w.Example("workflows/Task-detailed-exam.json", NewCase());
        task["focus"]!["reference"] = "DocumentReference/" + checkup.Id;
        var opened = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Institution.PostAsync("Task", Fhir.Json(task.ToJsonString())), HttpStatusCode.Created);
        Assert.Equal(opened.Id, Assert.Single(await w.TasksAboutAsync(w.Worker, "DocumentReference/" + checkup.Id)).Id);
    }

    [SkippableFact]
    public async Task The_result_document_completes_the_step_and_the_person_drops_off_the_worklist_of_the_consented_physician_only()
    {
        var w = await StartAsync(server);
        var task = await OpenDetailedExamAsync(w);
        var search = $"Task?code={Code("detailed-exam")}&status=requested,in-progress&subject={w.Patient}";

        Assert.Contains(task.Id, await IdsAsync(w.Sangyoui, search));
        Assert.Contains(task.Id, await WorklistAsync(w.Sangyoui));
        // Another occupational physician, without the person's Consent, never sees them: not in the search, not in the counts.
        Assert.DoesNotContain(task.Id, await IdsAsync(w.OtherSangyoui, search));
        Assert.DoesNotContain(task.Id, await WorklistAsync(w.OtherSangyoui));

        var result = await Fhir.ExpectAsync<DocumentReference>(await w.RegisterResultAsync(w.Hospital, task.Id), HttpStatusCode.Created);
        var done = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Worker.GetAsync("Task/" + task.Id), HttpStatusCode.OK);
        Assert.Equal(Hl7.Fhir.Model.Task.TaskStatus.Completed, done.Status);
        Assert.Equal("DocumentReference/" + result.Id, ((ResourceReference)done.Output.Single().Value).Reference);
        Assert.DoesNotContain(task.Id, await IdsAsync(w.Sangyoui, search));
        Assert.DoesNotContain(task.Id, await WorklistAsync(w.Sangyoui));

        // A second result for the same step: refused, nothing stored.
        await RefusedAsync(await w.RegisterResultAsync(w.Hospital, task.Id), HttpStatusCode.Conflict, "already", "completed");
    }

    [SkippableFact]
    public async Task The_worklist_counts_open_steps_per_judgement_and_days_overdue()
    {
        var w = await StartAsync(server);
        var overdue = await OpenDetailedExamAsync(w, due: DateTime.UtcNow.Date.AddDays(-10));
        var notYet = await OpenDetailedExamAsync(w, due: DateTime.UtcNow.Date.AddDays(30));
        var answer = await Fhir.ExpectAsync<Parameters>(await w.Sangyoui.GetAsync("Task/$detailed-exam-worklist"), HttpStatusCode.OK);

        var items = answer.Parameter.Where(p => p.Name == "item").ToDictionary(p => ((ResourceReference)p.Part.Single(x => x.Name == "task").Value).Reference);
        Assert.Equal(10, ((Integer)items["Task/" + overdue.Id].Part.Single(x => x.Name == "daysOverdue").Value).Value);
        Assert.Equal(0, ((Integer)items["Task/" + notYet.Id].Part.Single(x => x.Name == "daysOverdue").Value).Value);
        var e = answer.Parameter.Single(p => p.Name == "judgement" && ((Coding)p.Part.Single(x => x.Name == "code").Value).Code == "5"
                                            && ((Coding)p.Part[0].Value).System == "urn:oid:1.2.392.200119.6.2140");
        Assert.True(((Integer)e.Part.Single(x => x.Name == "count").Value).Value >= 2);
        Assert.True(((Integer)e.Part.Single(x => x.Name == "overdue").Value).Value >= 1);
        Assert.True(((Integer)answer.Parameter.Single(p => p.Name == "open").Value).Value >= 2);
    }

    [SkippableFact]
    public async Task Only_the_hospitals_result_completes_a_detailed_exam_and_only_the_hospital_registers_it()
    {
        var w = await StartAsync(server);
        var task = await OpenDetailedExamAsync(w);
        // The person may say they booked the exam (in-progress), not that it is done.
        task.Status = Hl7.Fhir.Model.Task.TaskStatus.InProgress;
        task = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Worker.PutAsync("Task/" + task.Id, Fhir.Json(task)), HttpStatusCode.OK);
        await RefusedAsync(await w.Worker.PutAsync("Task/" + task.Id, Fhir.Json(Completed(task))), HttpStatusCode.Conflict, "detailed-exam", "result document", "医療機関");
        await RefusedAsync(await w.RegisterResultAsync(w.Sangyoui, task.Id), HttpStatusCode.Forbidden, "detailed-exam", "registered by the hospital");
        var still = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Worker.GetAsync("Task/" + task.Id), HttpStatusCode.OK);
        Assert.Equal(Hl7.Fhir.Model.Task.TaskStatus.InProgress, still.Status);
    }

    [SkippableFact]
    public async Task Work_measures_come_after_the_exam_the_employer_notifies_them_and_the_person_confirms()
    {
        var w = await StartAsync(server);
        var exam = await OpenDetailedExamAsync(w);
        var measure = w.Example("workflows/Task-work-measure.json", exam.GroupIdentifier.Value);

        // Advice before the exam's result: out of order, and the refusal says what is due and who owes it.
        await RefusedAsync(await w.Sangyoui.PostAsync("Task", Fhir.Json(measure.ToJsonString())), HttpStatusCode.Conflict, "detailed-exam", "the person (本人)");
        await Fhir.ExpectAsync<DocumentReference>(await w.RegisterResultAsync(w.Hospital, exam.Id), HttpStatusCode.Created);
        // Only the occupational physician advises; the employer cannot open the step itself.
        await RefusedAsync(await w.Employer.PostAsync("Task", Fhir.Json(measure.ToJsonString())), HttpStatusCode.Conflict, "work-measure");
        var step = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Sangyoui.PostAsync("Task", Fhir.Json(measure.ToJsonString())), HttpStatusCode.Created);

        // The employer writes the measures and completes its step; the person's confirmation is opened with it.
        var notice = await Fhir.ExpectAsync<Composition>(await w.Employer.PostAsync("Composition", Fhir.Json(w.Example("workflows/Composition-work-measure.json").ToJsonString())), HttpStatusCode.Created);
        await RefusedAsync(await w.Sangyoui.PutAsync("Task/" + step.Id, Fhir.Json(Completed(step, "Composition/" + notice.Id))), HttpStatusCode.Forbidden, "work-measure", "the employer (事業者)");
        step = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Employer.GetAsync("Task/" + step.Id), HttpStatusCode.OK); // the employer sees the step it owes
        await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Employer.PutAsync("Task/" + step.Id, Fhir.Json(Completed(step, "Composition/" + notice.Id))), HttpStatusCode.OK);

        var confirm = Assert.Single(await TasksAsync(w.Worker, $"Task?group-identifier={exam.GroupIdentifier.Value}&code={Code("person-confirmation")}"));
        Assert.Equal("Composition/" + notice.Id, confirm.Focus.Reference);
        await RefusedAsync(await w.Sangyoui.PutAsync("Task/" + confirm.Id, Fhir.Json(Completed(confirm))), HttpStatusCode.Forbidden, "person-confirmation", "the person (本人)");
        await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Worker.PutAsync("Task/" + confirm.Id, Fhir.Json(Completed(confirm))), HttpStatusCode.OK);
        // The worker reads the measures; the employer never reads the checkup step nor the hospital's result.
        await Fhir.ExpectAsync<Composition>(await w.Worker.GetAsync("Composition/" + notice.Id), HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.NotFound, (await w.Employer.GetAsync("Task/" + exam.Id)).StatusCode);
    }

    [SkippableFact]
    public async Task The_employer_never_sees_the_HS037_only_the_work_measure_documents()
    {
        var w = await StartAsync(server);
        var checkup = await w.RegisterCheckupAsync("HS037-checkup-report-detailed-exam.json");
        var notice = await Fhir.ExpectAsync<Composition>(await w.Employer.PostAsync("Composition", Fhir.Json(w.Example("workflows/Composition-work-measure.json").ToJsonString())), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.NotFound, (await w.Employer.GetAsync("DocumentReference/" + checkup.Id)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await w.Employer.GetAsync(checkup.Content[0].Attachment.Url)).StatusCode);
        Assert.DoesNotContain("DocumentReference/" + checkup.Id, await IdsAsync(w.Employer, $"DocumentReference?subject={w.Patient}"));
        Assert.Empty(await w.TasksAboutAsync(w.Employer, "DocumentReference/" + checkup.Id));
        // What the occupational physician wrote as measures for the employer, it reads (Consent + class work-measure).
        Assert.Equal(HttpStatusCode.OK, (await w.Employer.GetAsync("Composition/" + notice.Id)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await w.Sangyoui.GetAsync("DocumentReference/" + checkup.Id)).StatusCode);
    }

    [SkippableFact]
    public async Task A_checkup_record_is_kept_five_years_its_deletion_is_refused_naming_the_rule()
    {
        var w = await StartAsync(server);
        var checkup = await Fhir.ExpectAsync<DocumentReference>(await w.Institution.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)) { Use = Identifier.IdentifierUse.Usual },
            Status = DocumentReferenceStatus.Current,
            Type = new CodeableConcept("http://loinc.org", "53576-5", "健康診断結果報告書"),
            Subject = new ResourceReference(w.Patient),
            Date = DateTimeOffset.UtcNow.AddYears(-4),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "総合判定 B"u8.ToArray() } }],
        })), HttpStatusCode.Created);
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await w.Institution.DeleteAsync("DocumentReference/" + checkup.Id), HttpStatusCode.Conflict);
        Assert.Contains("労働安全衛生規則 第51条", refused.Issue[0].Diagnostics);
        Assert.Equal(HttpStatusCode.OK, (await w.Institution.GetAsync("DocumentReference/" + checkup.Id)).StatusCode);

        // Not a checkup record: deleted as before.
        var other = await Fhir.ExpectAsync<Composition>(await w.Employer.PostAsync("Composition", Fhir.Json(w.Example("workflows/Composition-work-measure.json").ToJsonString())), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.NoContent, (await w.Employer.DeleteAsync("Composition/" + other.Id)).StatusCode);
    }

    /// <summary>The institution opens a detailed-exam step for the worker (the judgement as text), due on <paramref name="due"/>.</summary>
    static async Task<Hl7.Fhir.Model.Task> OpenDetailedExamAsync(WorkflowActors w, DateTime? due = null)
    {
        var task = w.Example("workflows/Task-detailed-exam.json", NewCase());
        task.Remove("focus");
        if (due is { } d) task["restriction"]!["period"]!["end"] = d.ToString("yyyy-MM-dd");
        return await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await w.Institution.PostAsync("Task", Fhir.Json(task.ToJsonString())), HttpStatusCode.Created);
    }

    static async Task<List<string>> WorklistAsync(HttpClient client)
    {
        var answer = await Fhir.ExpectAsync<Parameters>(await client.GetAsync("Task/$detailed-exam-worklist"), HttpStatusCode.OK);
        return answer.Parameter.Where(p => p.Name == "item").Select(p => ((ResourceReference)p.Part.Single(x => x.Name == "task").Value).Reference["Task/".Length..]).ToList();
    }

    internal static async Task<List<Hl7.Fhir.Model.Task>> TasksAsync(HttpClient client, string search) =>
        (await Fhir.ExpectAsync<Bundle>(await client.GetAsync(search), HttpStatusCode.OK)).Entry.Select(e => e.Resource).OfType<Hl7.Fhir.Model.Task>().ToList();

    static async Task<List<string>> IdsAsync(HttpClient client, string search) =>
        (await Fhir.ExpectAsync<Bundle>(await client.GetAsync(search + "&_count=1000"), HttpStatusCode.OK)).Entry.Select(e => e.Resource.Id).ToList();
}

using Hl7.Fhir.Model;

namespace PhrFhir.Server.Workflows;

/// <summary>One step of a flow: who opens it, who owes (performs) it, and what completes it.</summary>
/// <param name="Code">The phr-task code (profiles/phrfhir.r4/package/CodeSystem-phr-task.json).</param>
/// <param name="Japanese">The step's name as people in Japan say it.</param>
/// <param name="Performers">Roles that owe the step: they move it to in-progress and complete it.</param>
/// <param name="Openers">Roles that may open the step themselves; every other step is opened by the server when the one before it completes.</param>
/// <param name="Output">The document type (phr-document-type) a completion must name in Task.output; null when nothing is produced.</param>
public sealed record WorkflowStep(string Code, string Japanese, string[] Performers, string[] Openers, string? Output);

/// <summary>
/// The two flows of the seed (../shared/MISSION.md) as data: the order of the steps, who owes each, and
/// what completes it. <see cref="WorkflowRules"/> enforces them on every write; docs/workflows.md draws them.
/// </summary>
public static class WorkflowSteps
{
    public const string TaskSystem = "http://phrfhir.example/fhir/CodeSystem/phr-task";
    public const string ActorSystem = "http://phrfhir.example/fhir/CodeSystem/phr-actor";
    public const string DocumentTypeSystem = "http://phrfhir.example/fhir/CodeSystem/phr-document-type";
    public const string Profiles = "http://phrfhir.example/fhir/StructureDefinition/";

    public static readonly WorkflowStep DetailedExam = new("detailed-exam", "精密検査の受診", ["person"], ["institution"], null);
    public static readonly WorkflowStep WorkMeasure = new("work-measure", "就業上の措置の通知", ["employer"], ["occupational-physician"], "work-measure");
    public static readonly WorkflowStep WorkInformation = new("work-information", "勤務情報提供書の登録", ["employer", "person"], ["employer", "person", "occupational-physician"], "work-information");
    public static readonly WorkflowStep PhysicianOpinion = new("physician-opinion", "主治医意見書の登録", ["physician"], [], "physician-opinion");
    public static readonly WorkflowStep SupportPlanDraft = new("support-plan-draft", "両立支援プランの作成", ["occupational-physician"], [], "support-plan");
    public static readonly WorkflowStep SupportPlanApproval = new("support-plan-approval", "両立支援プランの承認", ["employer"], [], null);
    public static readonly WorkflowStep PersonConfirmation = new("person-confirmation", "本人確認", ["person"], [], null);

    /// <summary>健診事後措置 (労働安全衛生法 第66条の4/5): detailed exam → work measures → the person confirms.</summary>
    public static readonly WorkflowStep[] FollowUp = [DetailedExam, WorkMeasure, PersonConfirmation];

    /// <summary>両立支援: work information → opinion → plan draft → approval → the person confirms.</summary>
    public static readonly WorkflowStep[] Support = [WorkInformation, PhysicianOpinion, SupportPlanDraft, SupportPlanApproval, PersonConfirmation];

    public static WorkflowStep? Of(Hl7.Fhir.Model.Task task) =>
        task.Code?.Coding.FirstOrDefault(c => c.System == TaskSystem)?.Code is { } code
            ? FollowUp.Concat(Support).FirstOrDefault(s => s.Code == code)
            : null;

    /// <summary>The flow a case follows: 両立支援 when any of its steps is one of its own, else 健診事後措置.</summary>
    public static WorkflowStep[] FlowOf(IEnumerable<string> codes) =>
        codes.Any(c => c is "work-information" or "physician-opinion" or "support-plan-draft" or "support-plan-approval") ? Support : FollowUp;

    /// <summary>The step after <paramref name="step"/> in <paramref name="flow"/>, or null at the end.</summary>
    public static WorkflowStep? After(WorkflowStep[] flow, WorkflowStep step) =>
        Array.IndexOf(flow, step) is var i and >= 0 && i + 1 < flow.Length ? flow[i + 1] : null;

    /// <summary>The steps an employer owes: the only Tasks it may be shown (Security/AccessPolicy), under the person's Consent.</summary>
    public static readonly string[] EmployerSteps = [.. FollowUp.Concat(Support).Where(s => s.Performers.Contains("employer")).Select(s => s.Code).Distinct()];

    /// <summary>Who writes each of our documents (phr-document-type), by role.</summary>
    public static readonly IReadOnlyDictionary<string, (string Japanese, string[] Authors)> Documents = new Dictionary<string, (string, string[])>
    {
        ["work-information"] = ("勤務情報提供書", ["employer", "person"]),
        ["physician-opinion"] = ("主治医意見書", ["physician"]),
        ["support-plan"] = ("両立支援プラン", ["occupational-physician"]),
        ["work-measure"] = ("就業上の措置", ["employer"]),
    };

    public static string? DocumentType(Composition composition) =>
        composition.Type?.Coding.FirstOrDefault(c => c.System == DocumentTypeSystem)?.Code;

    /// <summary>A role as people say it (English and Japanese), for the OperationOutcomes.</summary>
    public static string Role(string role) => role switch
    {
        "person" => "the person (本人)",
        "institution" => "the checkup institution (健診機関)",
        "physician" => "the attending physician (主治医)",
        "occupational-physician" => "the occupational physician (産業医)",
        "employer" => "the employer (事業者)",
        "operator" => "the PHR operator (PHR事業者)",
        _ => role,
    };

    public static string Roles(IEnumerable<string> roles) => string.Join(" or ", roles.Select(Role));

    public static string Describe(WorkflowStep step) => $"{step.Code} ({step.Japanese}), owed by {Roles(step.Performers)}";

    /// <summary>The phr-actor coding of a role (Task.performerType).</summary>
    public static CodeableConcept PerformerType(string role) => new(ActorSystem, role);

    public static CodeableConcept CodeOf(WorkflowStep step) => new(TaskSystem, step.Code, step.Japanese);
}

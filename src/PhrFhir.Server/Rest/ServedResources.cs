namespace PhrFhir.Server.Rest;

/// <summary>The resource types this PHR server holds (issue #4); the CapabilityStatement is built from this list.</summary>
public static class ServedResources
{
    public static readonly IReadOnlyList<string> Types =
    [
        "Patient", "Practitioner", "PractitionerRole", "Organization", "RelatedPerson",
        "DocumentReference", "List", "Binary", "Bundle", "Composition",
        "Observation", "Condition", "Encounter", "AllergyIntolerance", "MedicationRequest", "Medication",
        "Consent", "AuditEvent", "Subscription", "Task", "Communication",
        "Questionnaire", "QuestionnaireResponse", "Provenance", "DiagnosticReport", "Procedure", "Immunization",
        "ServiceRequest", "CarePlan", "Location", "Device", "Group",
    ];

    static readonly HashSet<string> Set = [.. Types];

    public static bool IsServed(string type) => Set.Contains(type);
}

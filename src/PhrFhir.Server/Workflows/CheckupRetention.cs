using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;

namespace PhrFhir.Server.Workflows;

/// <summary>
/// 労働安全衛生規則 第51条: the employer keeps each worker's checkup record (健康診断個人票) for five years. A
/// checkup document here — a DocumentReference of type 53576-5 (健康診断結果報告書, LOINC or the JP document
/// type codes) — is that record, so deleting it within five years of its date is refused, whoever asks
/// (break-glass included): the law does not know of exceptions. It can still be replaced (MHD relatesTo).
/// </summary>
public static class CheckupRetention
{
    public static readonly int Years = 5;

    public static void CheckDelete(StoredResource current)
    {
        if (current.Type != "DocumentReference" || FhirFormat.ParseStored(current.Json) is not DocumentReference doc
            || doc.Type?.Coding.Any(c => c.Code == "53576-5") != true)
            return;
        // The record's date: when the checkup was documented, else when it was registered here.
        var from = doc.Date ?? current.LastUpdated;
        var until = from.AddYears(Years);
        if (DateTimeOffset.UtcNow >= until) return;
        throw new FhirError(HttpStatusCode.Conflict, OperationOutcome.IssueType.BusinessRule,
            $"DocumentReference/{current.Id} is a checkup record (53576-5), kept for {Years} years under 労働安全衛生規則 第51条 (Industrial Safety and Health Regulations, art. 51): " +
            $"it cannot be deleted before {until.UtcDateTime:yyyy-MM-dd}. Replace it (relatesTo) to correct it. " +
            $"(健康診断個人票は労働安全衛生規則第51条により5年間保存するため、{until.UtcDateTime:yyyy年M月d日}まで削除できません)", "DocumentReference")
        { DetailCode = "JP-ISHR-51" };
    }
}

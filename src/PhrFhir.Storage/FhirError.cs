using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Storage;

/// <summary>
/// A FHIR error thrown where the problem is found; the server's error middleware turns it into
/// an OperationOutcome response with this status. The message is written for the integrator
/// (English, with the Japanese beside it where it helps) and never carries another person's data.
/// </summary>
public sealed class FhirError(HttpStatusCode status, OperationOutcome.IssueType code, string message, string? expression = null, Exception? cause = null)
    : Exception(message, cause)
{
    public HttpStatusCode Status { get; } = status;
    public OperationOutcome.IssueType Code { get; } = code;
    public string? Expression { get; } = expression;
    /// <summary>A code a profile defines for this failure (IHE MHD uses the XDS error codes, e.g. XDSUnknownPatientId), sent as issue.details.</summary>
    public string? DetailCode { get; init; }
    /// <summary>Further issues (e.g. every parse error of one body), reported together.</summary>
    public IReadOnlyList<OperationOutcome.IssueComponent> MoreIssues { get; init; } = [];
    /// <summary>Seconds the client should wait before retrying (a 429 or 503 sends it as Retry-After).</summary>
    public int? RetryAfterSeconds { get; init; }

    public static FhirError BadRequest(string message, string? expression = null) =>
        new(HttpStatusCode.BadRequest, OperationOutcome.IssueType.Invalid, message, expression);

    public static FhirError NotFound(string message) =>
        new(HttpStatusCode.NotFound, OperationOutcome.IssueType.NotFound, message);

    public static FhirError NotSupported(string message, string? expression = null) =>
        new(HttpStatusCode.BadRequest, OperationOutcome.IssueType.NotSupported, message, expression);

    public static FhirError Conflict(string message) =>
        new(HttpStatusCode.Conflict, OperationOutcome.IssueType.Conflict, message);

    public static FhirError PreconditionFailed(string message) =>
        new(HttpStatusCode.PreconditionFailed, OperationOutcome.IssueType.Conflict, message);
}

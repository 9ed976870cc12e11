using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Security;

/// <summary>
/// The person (本人) sees their own compartment: every resource whose `person` key is their Patient.
/// Which Patient that is is decided once, when their token is issued (<see cref="BindAsync"/>), and
/// carried in the token's <see cref="PatientClaim"/> (SMART's patient launch context); a request never
/// searches for it again, so nothing anyone writes later (a second Patient with the person's
/// identifier, say) can lock the person out or take their place (docs/consent.md, "The person's token").
/// </summary>
public static class PersonCompartment
{
    /// <summary>The access token claim naming the person's Patient id (also the token response's `patient`).</summary>
    public const string PatientClaim = "patient";

    /// <summary>The requesting person's Patient id, or null when the client is not a person (AccessPolicy keeps it per request).</summary>
    public static string? Of(HttpContext ctx)
    {
        if (ctx.User.FindFirst(AuthorizationServer.RoleClaim)?.Value != "person") return null;
        return ctx.User.FindFirst(PatientClaim)?.Value
            ?? throw Denied("The person this token names was not registered here when it was issued: register the Patient with the person's identifier, then get a new token. (本人の患者情報が登録されていません)");
    }

    /// <summary>
    /// The Patient a person's token is bound to: the one it was bound to before (a refresh keeps it while
    /// that Patient exists), else among the Patients with the person's identifier one registered by the
    /// PHR operator or by the person themself, else the one registered first. Null when none exists.
    /// </summary>
    public static async Task<string?> BindAsync(FhirStore store, ClientRegistry clients, ActorIdentifier person, string? bound, CancellationToken ct)
    {
        if (bound is not null && await store.ReadAsync("Patient", bound, ct) is { Deleted: false }) return bound;
        var identifier = person.System + "|" + person.Value;
        // Writer keys as AccessPolicy records them: the client's actor, or client:<id> without one.
        string[] trusted = [identifier, .. clients.All.Where(c => c.ParsedRole == PhrRole.Operator)
            .Select(c => c.Actor is { } a ? a.System + "|" + a.Value : "client:" + c.ClientId)];
        return await store.RegisteredPatientAsync(identifier, trusted, ct);
    }

    /// <summary>The id of the one Patient with this identifier ("system|value"), or null when there is none or more than one.</summary>
    public static async Task<string?> PatientWithIdentifierAsync(FhirStore store, string identifier, CancellationToken ct)
    {
        var query = new SearchQuery(store.SearchParameters, "Patient", [new("identifier", identifier), new("_count", "2")], lenient: false, AccessFilter.Everything);
        var found = await store.SearchAsync(query, ct);
        return found.Matches.Count == 1 ? found.Matches[0].Id : null;
    }

    static FhirError Denied(string message) => new(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden, message);
}

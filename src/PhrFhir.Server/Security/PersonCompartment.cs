using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Security;

/// <summary>
/// The person (本人) sees their own compartment: every resource whose `person` key is their Patient.
/// Their token names them by identifier (phr_actor); this resolves it to the Patient, which
/// AccessPolicy then uses to confine every read, search, history, _include and write of the request.
/// </summary>
public static class PersonCompartment
{
    /// <summary>The requesting person's Patient id, or null when the client is not a person (AccessPolicy keeps it per request).</summary>
    public static async Task<string?> OfAsync(HttpContext ctx, FhirStore store)
    {
        if (ctx.User.FindFirst(AuthorizationServer.RoleClaim)?.Value != "person") return null;
        var actor = ctx.User.FindFirst(AuthorizationServer.ActorClaim)?.Value
            ?? throw Denied("A person's token must name the person (the client's actor identifier). (本人の識別子がありません)");
        return await PatientWithIdentifierAsync(store, actor, ctx.RequestAborted)
            ?? throw Denied("The person this token names is not registered here (or not uniquely): register the Patient with that identifier first. (本人の患者情報が登録されていません)");
    }

    /// <summary>The id of the one Patient with this identifier ("system|value"), or null when there is none or more than one.</summary>
    public static async Task<string?> PatientWithIdentifierAsync(FhirStore store, string identifier, CancellationToken ct)
    {
        var query = new SearchQuery(store.SearchParameters, "Patient", [new("identifier", identifier), new("_count", "2")], lenient: false);
        var found = await store.SearchAsync(query, ct);
        return found.Matches.Count == 1 ? found.Matches[0].Id : null;
    }

    static FhirError Denied(string message) => new(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden, message);
}

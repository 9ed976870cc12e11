using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Identity;

/// <summary>
/// ITI-65 / ITI-105 / ITI-106 naming the subject by identifier (docs/identity.md, "Documents by identifier"):
/// a DocumentReference's or List's subject (and a Binary's securityContext) given as a conditional reference `Patient?identifier=system|value`,
/// or (MHD) as an identifier alone, is resolved before the resource is staged to the Patient holding that
/// identifier and through its link to the person: the document is filed under the person's own Patient.
///
/// Who may name whom: an institution by identifiers in the domains it assigns in (its own numbers), the person
/// by their own Patients' identifiers, the operator by any. Anything else — an identifier nobody holds, one in
/// another institution's domain, another person's — is the same 422 naming the identifier only: no answer tells
/// whether someone else knows the person.
/// </summary>
public sealed partial class IdentifierDomains
{
    public async Task ResolveSubjectAsync(WriteTransaction tx, Resource resource, CancellationToken ct)
    {
        var (subject, at) = resource switch
        {
            DocumentReference d => (d.Subject, "DocumentReference.subject"),
            List l => (l.Subject, "List.subject"),
            // A document's bytes (ProvideDocumentBundle copies the document's subject): Reference(Any), so an
            // identifier alone names a Patient only when it says so or says nothing.
            Binary { SecurityContext: { Type: null or "Patient" } context } => (context, "Binary.securityContext"),
            _ => (null, ""),
        };
        if (subject is null) return;
        string system, value;
        if (subject.Reference is { } reference && reference.StartsWith("Patient?", StringComparison.Ordinal))
        {
            var criteria = Rest.ResourceWrites.QueryPairs(reference[8..]);
            var token = criteria is [{ Key: "identifier", Value: var v }] ? v : null;
            var bar = token?.IndexOf('|') ?? -1;
            if (token is null || bar <= 0 || bar == token.Length - 1)
                throw new FhirError(HttpStatusCode.BadRequest, OperationOutcome.IssueType.Invalid,
                    $"A conditional subject reference is resolved in the form Patient?identifier=system|value only, not '{reference}'. (患者の条件参照は Patient?identifier=system|value の形で指定します)", at);
            (system, value) = (token[..bar], token[(bar + 1)..]);
        }
        else if (subject.Reference is null && subject.Identifier is { System.Length: > 0, Value.Length: > 0 } identifier)
            (system, value) = (identifier.System, identifier.Value);
        else return;

        var persons = await NamedPersonsAsync(tx, system, value, ct);
        if (persons.Count != 1)
            throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.NotFound,
                $"No registered Patient you may name holds the identifier {system}|{value}: register the person (or link the identifier) first. (この識別子の登録済み患者がいません)", at)
            { DetailCode = "XDSUnknownPatientId" };
        subject.Reference = "Patient/" + persons[0];
        tx.ResolvedPatients.Add(subject.Reference);
    }

    /// <summary>The persons (their own Patient ids) the identifier names for this writer, per the rule above.</summary>
    async Task<List<string>> NamedPersonsAsync(WriteTransaction tx, string system, string value, CancellationToken ct)
    {
        var user = http.HttpContext?.User;
        var role = user?.FindFirst(Security.AuthorizationServer.RoleClaim)?.Value;
        if (role is not ("operator" or "person"))
        {
            var assigners = await tx.DomainAssignersAsync(system, ct);
            var writer = tx.Writer ?? "";
            var own = assigners is not null ? assigners.Contains(writer) : InstitutionNumberOf(system) is { } number && IsInstitution(writer, number);
            if (!own) return [];
        }
        var holders = await tx.PersonsHoldingAsync(system, value, ct);
        if (role == "person")
        {
            var mine = user!.FindFirst(Security.PersonCompartment.PatientClaim)?.Value;
            holders = [.. holders.Where(h => h.Person == mine || h.Holder == mine)];
        }
        return [.. holders.Select(h => h.Person).Distinct()];
    }
}

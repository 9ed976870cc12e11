using System.Text;
using Hl7.Fhir.Model;
using Microsoft.AspNetCore.Http.Features;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Audit;

/// <summary>
/// What one request did, as its AuditEvent needs it (the patient is one: BALP records one patient per event).
/// <see cref="Query"/>: a search's query as it concerns <see cref="Patient"/> (QueryPerPatient), when it is
/// not the whole query; <see cref="QueryNote"/> says so in the query entity's description.
/// </summary>
public sealed record AuditFacts(int Outcome, string? Failure, IReadOnlyList<string> Resources, string? Patient, string? SubmissionSet = null,
    string? Query = null, string? QueryNote = null);

/// <summary>What an identity operation was asked (AuditTrail.Queried): the Parameters it was POSTed, the identifier naming its patient.</summary>
public sealed record OperationQuery(string? Query, Identifier? Patient);

/// <summary>
/// The shape of each AuditEvent, after the IHE profile that fits the request (docs/audit.md):
/// BALP 1.1.4 IHE.BasicAudit.[Patient]Read / [Patient]Query / [Patient]Create / [Patient]Update /
/// [Patient]Delete, IUA ITI-71 for token requests, MHD's own ITI-65/66/67/68 profiles, and for the identity
/// transactions PIXm 3.1 ITI-83 ($ihe-pix, Manager) and PDQm 3.2 ITI-78 (every Patient search) and ITI-119
/// ($match, Supplier), which are BALP queries with their own subtype. The profile is
/// declared in meta.profile only when the event conforms to it: BALP's RESTful profiles and ITI-71 fix
/// outcome to 0, so a refusal or failure keeps the same shape and declares none.
/// </summary>
public static class BalpAuditEvents
{
    const string Balp = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/";
    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    const string Pixm = "https://profiles.ihe.net/ITI/PIXm/StructureDefinition/";
    const string Pdqm = "https://profiles.ihe.net/ITI/PDQm/StructureDefinition/";
    const string Dcm = "http://dicom.nema.org/resources/ontology/DCM";
    const string EntityType = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
    const string ObjectRole = "http://terminology.hl7.org/CodeSystem/object-role";
    const string IheEvents = "urn:ihe:event-type-code";
    public const string ClientSystem = "urn:phrfhir:client";

    static readonly Coding RestType = new("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation");
    public static readonly Coding LoginType = new(Dcm, "110114", "User Authentication");
    static readonly Coding ImportType = new(Dcm, "110107", "Import");

    public static AuditEvent Describe(HttpContext ctx, AuditFacts facts)
    {
        var request = ctx.Request;
        // Token requests (ITI-71) and the person's sign-in pages (authorize, login, consent) are logins.
        var login = request.Path.StartsWithSegments("/auth");
        var type = ctx.GetRouteValue("type") as string;
        var (interaction, action) = login ? ("login", AuditEvent.AuditEventAction.E) : Interaction(ctx);
        var ihe = request.Path == AuthorizationServer.TokenPath ? "ITI-71"
            : login ? null
            : facts.SubmissionSet is not null ? "ITI-65"
            : interaction is "read" or "vread" && type == "Binary" ? "ITI-68"
            : interaction == "search-type" && type == "DocumentReference" ? "ITI-67"
            : interaction == "search-type" && type == "List" ? "ITI-66"
            : request.Path == "/Patient/$ihe-pix" ? "ITI-83"
            : request.Path == "/Patient/$match" ? "ITI-119"
            // PDQm: the server is the Patient Demographics Supplier for every Patient search, whoever asks.
            : interaction == "search-type" && type == "Patient" ? "ITI-78"
            : null;
        // PIXm and PDQm record these operations as BALP queries (restful-interaction "search", query entity).
        var operationQuery = ihe is "ITI-83" or "ITI-119";
        var asked = ctx.Items[AuditTrail.QueryKey] as OperationQuery;

        var audit = new AuditEvent
        {
            Type = login ? LoginType : ihe == "ITI-65" ? ImportType : RestType,
            Action = ihe == "ITI-65" ? AuditEvent.AuditEventAction.C : action,
            Recorded = DateTimeOffset.UtcNow,
            Outcome = facts.Outcome switch { 0 => AuditEvent.AuditEventOutcome.N0, 4 => AuditEvent.AuditEventOutcome.N4, _ => AuditEvent.AuditEventOutcome.N8 },
            OutcomeDesc = facts.Failure is null ? null : Truncate(facts.Failure, 500),
            Source = new AuditEvent.SourceComponent
            {
                Site = request.Host.Value,
                Observer = new ResourceReference { Display = "PhrFhir" },
                Type = [new Coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
            },
        };
        if (!login) audit.Subtype.Add(new Coding("http://hl7.org/fhir/restful-interaction", operationQuery ? "search" : interaction));
        if (ihe is not null) audit.Subtype.Add(new Coding(IheEvents, ihe, IheNames[ihe]));
        Agents(ctx, audit, interaction, login);

        if (facts.Patient is { } patient)
            // PIXm ITI-83: the patient entity carries the queried sourceIdentifier too.
            audit.Entity.Add(PatientEntity(patient, ihe == "ITI-83" ? asked?.Patient : null));
        if (ihe == "ITI-65")
            // MHD ITI-65 audit: the patient and the SubmissionSet (entity type 2 is its slice; the documents are what it lists).
            audit.Entity.Add(DataEntity(facts.SubmissionSet!, new Coding(ObjectRole, "20", "Job")));
        else if (login || operationQuery || interaction is "search-type" or "search-system" or "history-type" or "history-system")
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                Type = new Coding(EntityType, "2", "System Object"),
                Role = new Coding(ObjectRole, "24", "Query"),
                Query = Encoding.UTF8.GetBytes(facts.Query ?? asked?.Query ?? QueryText(ctx, login)),
                Description = facts.QueryNote,
            });
        else
            foreach (var key in facts.Resources)
                audit.Entity.Add(DataEntity(key, ihe == "ITI-68" ? new Coding(ObjectRole, "3", "Report") : new Coding(ObjectRole, "4", "Domain Resource")));

        // Break-glass (Security/AccessPolicy): the purpose of use, and the reason as the requester gave it.
        if (request.Headers[AccessPolicy.BreakGlassHeader].ToString() is { Length: > 0 } reason)
        {
            var btg = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ActReason", "BTG", "break the glass") { Text = Truncate(reason, 500) };
            audit.PurposeOfEvent.Add(btg);
            audit.Agent[0].PurposeOfUse.Add(btg);
        }

        if (facts.Outcome == 0 && Profile(interaction, ihe, facts, asked?.Patient is not null) is { } profile)
            audit.Meta = new Meta { Profile = [profile] };
        return audit;
    }

    /// <summary>
    /// A search's AuditEvent about one patient, stored as a part of the search's whole-query event (Schema/026,
    /// AuditTrail.SearchedAsync): that event as <see cref="Describe"/> builds it for the patient — the patient entity
    /// first, the query entity with the query as it concerns them (and says so), the profile a patient's event
    /// declares — under the part's own id.
    /// </summary>
    public static string ForPatient(AuditPart part)
    {
        var audit = (AuditEvent)FhirFormat.ParseStored(part.WholeJson);
        audit.Id = part.Id;
        audit.Entity.Insert(0, PatientEntity(part.Person));
        if (audit.Entity.FirstOrDefault(e => e.Role?.Code == "24") is { } query)
        {
            if (part.Query is not null) query.Query = Encoding.UTF8.GetBytes(part.Query);
            query.Description = part.Query is null ? null : AuditTrail.ReducedQueryNote;
        }
        var ihe = audit.Subtype.FirstOrDefault(c => c.System == IheEvents)?.Code;
        var profile = audit.Outcome == AuditEvent.AuditEventOutcome.N0 ? Profile("search-type", ihe, new AuditFacts(0, null, [], part.Person), false) : null;
        audit.Meta ??= new Meta();
        audit.Meta.Profile = profile is null ? [] : [profile];
        return FhirFormat.ToJson(audit);
    }

    static readonly Dictionary<string, string> IheNames = new()
    {
        ["ITI-65"] = "Provide Document Bundle",
        ["ITI-66"] = "Find Document Lists",
        ["ITI-67"] = "Find Document References",
        ["ITI-68"] = "Retrieve Document",
        ["ITI-71"] = "Get Access Token",
        // As the PIXm/PDQm profiles fix them (display included).
        ["ITI-78"] = "Mobile Patient Demographics Query",
        ["ITI-83"] = "Mobile Patient Identifier Cross-reference Query",
        ["ITI-119"] = "Patient Demographics Match",
    };

    /// <summary>The profile this (successful) event conforms to, or null where IHE defines none (history, transactions, operations).</summary>
    static string? Profile(string interaction, string? ihe, AuditFacts facts, bool patientIdentified)
    {
        var patient = facts.Patient is not null;
        return ihe switch
        {
            "ITI-71" => Balp + "IHE.IUA.71",
            "ITI-65" when patient => Mhd + "IHE.MHD.ProvideBundle.Audit.Recipient",
            "ITI-66" when patient => Mhd + "IHE.MHD.FindDocumentLists.Audit.Responder",
            "ITI-67" when patient => Mhd + "IHE.MHD.FindDocumentReferences.Audit.Responder",
            "ITI-68" when patient && facts.Resources.Count == 1 => Mhd + "IHE.MHD.RetrieveDocument.Audit.Responder",
            // PIXm's patient entity is 1..1 and names the patient by identifier; PDQm's patient is 0..1.
            "ITI-83" => patient && patientIdentified ? Pixm + "IHE.PIXm.Query.Audit.Manager" : null,
            "ITI-78" => Pdqm + "IHE.PDQm.Query.Audit.Supplier",
            "ITI-119" => Pdqm + "IHE.PDQm.Match.Audit.Supplier",
            _ => interaction switch
            {
                "search-type" or "search-system" => Balp + (patient ? "IHE.BasicAudit.PatientQuery" : "IHE.BasicAudit.Query"),
                // One data entity: BALP's `data` slice is 1..1 (entity type 2 is its discriminator).
                _ when facts.Resources.Count != 1 => null,
                "read" or "vread" => Balp + (patient ? "IHE.BasicAudit.PatientRead" : "IHE.BasicAudit.Read"),
                "create" => Balp + (patient ? "IHE.BasicAudit.PatientCreate" : "IHE.BasicAudit.Create"),
                "update" or "patch" => Balp + (patient ? "IHE.BasicAudit.PatientUpdate" : "IHE.BasicAudit.Update"),
                "delete" => Balp + (patient ? "IHE.BasicAudit.PatientDelete" : "IHE.BasicAudit.Delete"),
                _ => null,
            },
        };
    }

    static AuditEvent.EntityComponent PatientEntity(string patient, Identifier? identifier = null) => new()
    {
        What = new ResourceReference("Patient/" + patient) { Identifier = identifier },
        Type = new Coding(EntityType, "1", "Person"),
        Role = new Coding(ObjectRole, "1", "Patient"),
    };

    static AuditEvent.EntityComponent DataEntity(string key, Coding role) => new()
    {
        What = new ResourceReference(key),
        Type = new Coding(EntityType, "2", "System Object"),
        Role = role,
    };

    /// <summary>
    /// Client and server agents with the type codes each BALP 1.1.4 profile fixes. They are not the same
    /// across profiles: Read has the client as 110152 and the server as 110153 (its examples too), Delete has
    /// the client as 110150 Application and the server as custodian, the others 110153 / 110152; ITI-71
    /// names the authorisation server AuthzOauthService. A person (本人) is also the human user agent.
    /// </summary>
    static void Agents(HttpContext ctx, AuditEvent audit, string interaction, bool login)
    {
        var request = ctx.Request;
        var (client, server) = interaction switch
        {
            "login" => (new Coding(Dcm, "110150", "Application"), new Coding("https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes", "AuthzOauthService", "OAuth Authorization Server")),
            "read" or "vread" => (new Coding(Dcm, "110152", "Destination Role ID"), new Coding(Dcm, "110153", "Source Role ID")),
            "delete" => (new Coding(Dcm, "110150", "Application"), new Coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "custodian", "Custodian")),
            _ => (new Coding(Dcm, "110153", "Source Role ID"), new Coding(Dcm, "110152", "Destination Role ID")),
        };
        var clientId = ctx.User.FindFirst("client_id")?.Value ?? ctx.User.FindFirst("sub")?.Value ?? (login ? LoginClient(request) : null);
        var person = ctx.User.FindFirst(AuthorizationServer.RoleClaim)?.Value == "person" ? ctx.User.FindFirst(AuthorizationServer.ActorClaim)?.Value : null;
        audit.Agent.Add(new AuditEvent.AgentComponent
        {
            Type = new CodeableConcept { Coding = [client] },
            Who = new ResourceReference { Identifier = new Identifier(ClientSystem, clientId ?? "anonymous"), Display = ctx.User.FindFirst(AuthorizationServer.RoleClaim)?.Value },
            AltId = ctx.User.FindFirst("sub")?.Value, // the person signed in through the app (or a login's username as typed)
            Requestor = person is null,
            Network = new AuditEvent.NetworkComponent { Address = ctx.Connection.RemoteIpAddress?.ToString() ?? "unknown", Type = AuditEvent.AuditEventAgentNetworkType.N2 },
        });
        audit.Agent.Add(new AuditEvent.AgentComponent
        {
            Type = new CodeableConcept { Coding = [server] },
            Who = new ResourceReference { Display = "PhrFhir" },
            Requestor = false,
            Network = new AuditEvent.NetworkComponent { Address = $"{request.Scheme}://{request.Host}{request.PathBase}", Type = AuditEvent.AuditEventAgentNetworkType.N5 },
        });
        if (person is not null && person.Split('|') is [var system, var value])
            audit.Agent.Add(new AuditEvent.AgentComponent
            {
                // BALP: IRCP (information recipient) for reads and queries; a write's user is its author (DataSources AUT).
                Type = interaction is "create" or "update" or "patch" or "delete" or "transaction"
                    ? new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "AUT", "author (originator)")
                    : new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient"),
                Who = new ResourceReference { Identifier = new Identifier(system, value) },
                Requestor = true,
            });
    }

    /// <summary>True for a search (GET [type]?…, POST [type]/_search): its query entity is recorded per patient.</summary>
    public static bool IsSearch(HttpContext ctx) => !ctx.Request.Path.StartsWithSegments("/auth") && Interaction(ctx).Item1 == "search-type";

    static (string, AuditEvent.AuditEventAction) Interaction(HttpContext ctx)
    {
        var method = ctx.Request.Method;
        var path = ctx.Request.Path.Value ?? "";
        var hasId = ctx.GetRouteValue("id") is not null;
        return method switch
        {
            "GET" when ctx.GetRouteValue("vid") is not null => ("vread", AuditEvent.AuditEventAction.R),
            "GET" when path.Contains("/_history", StringComparison.Ordinal) => (hasId ? "history-instance" : path == "/_history" ? "history-system" : "history-type", AuditEvent.AuditEventAction.R),
            "GET" when path.Contains('$') => ("operation", AuditEvent.AuditEventAction.E),
            "GET" => (hasId ? "read" : "search-type", hasId ? AuditEvent.AuditEventAction.R : AuditEvent.AuditEventAction.E),
            "POST" when path.EndsWith("/_search", StringComparison.Ordinal) => ("search-type", AuditEvent.AuditEventAction.E),
            "POST" when path.Contains('$') => ("operation", AuditEvent.AuditEventAction.E),
            "POST" when path is "/" or "" => ("transaction", AuditEvent.AuditEventAction.E),
            "POST" => ("create", AuditEvent.AuditEventAction.C),
            "PUT" => ("update", AuditEvent.AuditEventAction.U),
            "PATCH" => ("patch", AuditEvent.AuditEventAction.U),
            "DELETE" => ("delete", AuditEvent.AuditEventAction.D),
            _ => ("operation", AuditEvent.AuditEventAction.E),
        };
    }

    // Parameters of a token request that may be recorded: never a secret or a signed assertion.
    static readonly string[] LoginParameters = ["grant_type", "scope", "client_id"];

    /// <summary>
    /// The query as received (BALP entity:query, base64 in JSON): method, path, query string, and a POSTed
    /// search's form parameters when the endpoint read them. A token request keeps only its harmless parameters.
    /// </summary>
    static string QueryText(HttpContext ctx, bool login)
    {
        var request = ctx.Request;
        var text = new StringBuilder($"{request.Method} {request.Path}{(login ? "" : request.QueryString.Value)}");
        if (request.HasFormContentType && ctx.Features.Get<IFormFeature>()?.Form is { } form)
        {
            var pairs = form.Where(kv => !login || LoginParameters.Contains(kv.Key))
                .SelectMany(kv => kv.Value.Select(v => Uri.EscapeDataString(kv.Key) + "=" + Uri.EscapeDataString(v ?? "")));
            text.Append('\n').AppendJoin('&', pairs);
        }
        return text.ToString();
    }

    // The client a token request names (Basic header user); never the secret.
    static string? LoginClient(HttpRequest request)
    {
        var auth = request.Headers.Authorization.ToString();
        if (auth.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            try { return Encoding.UTF8.GetString(Convert.FromBase64String(auth[6..].Trim())).Split(':')[0]; }
            catch (FormatException) { return null; }
        }
        return request.HasFormContentType && request.HttpContext.Features.Get<IFormFeature>()?.Form is { } form
            && form["client_id"].ToString() is { Length: > 0 } id ? id
            : request.Query["client_id"].FirstOrDefault(); // an authorization request names its app in the query
    }

    /// <summary>The Patient ids a search names in its patient/subject parameters (BALP: the patient a query is about).</summary>
    public static IEnumerable<string> PatientsNamedBy(HttpRequest request)
    {
        foreach (var name in (string[])["patient", "subject", "subject:Patient", "patient:Patient"])
            foreach (var value in request.Query[name])
                foreach (var one in (value ?? "").Split(','))
                {
                    if (ReferenceTarget.Local(one) is { Type: "Patient" } target) yield return target.Id;
                    else if (name != "subject" && one.Length is > 0 and <= 64 && !one.Contains('/') && !one.Contains(':')) yield return one;
                }
    }

    static string Truncate(string s, int max) => s.Length <= max ? s : s[..max];
}

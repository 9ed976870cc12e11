using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Security;

/// <summary>
/// What one request may see and change, by role (README "Authorisation", docs/consent.md). Scopes say
/// which interactions a token may attempt (<see cref="AccessControl.Demand"/>); this says which rows:
///
/// - the person (本人): their own compartment — read, and write what belongs to it;
/// - checkup institutions, physicians, occupational physicians: what they wrote, plus what the
///   person's Consents permit them (purpose TREAT; BTG too when they break the glass);
/// - the employer (事業者): what it wrote, plus only work-measure documents and support plans
///   (category from <see cref="DocumentClass"/>) that a Consent addresses to it;
/// - the PHR operator: administrative resources (patients' registrations, directories, consents, the
///   audit trail); medical content only with an audited break-glass (<see cref="BreakGlassHeader"/>).
///
/// The read rule is one SQL condition (<see cref="AccessFilter"/>) applied by the store to reads,
/// searches (so totals never count what is hidden), _include/_revinclude, history, Binary and Bundle
/// entries; what is not visible answers 404, exactly as if it did not exist. Write rules run on every
/// version written (WriteTransaction.Guard).
/// </summary>
public sealed class AccessPolicy
{
    /// <summary>Break-glass: the request states why (free text, audited with purpose of use BTG).</summary>
    public const string BreakGlassHeader = "X-Break-Glass";

    /// <summary>Our CodeSystem of document classes the employer may be given (profiles/phrfhir.r4/package/CodeSystem-phr-document-class.json).</summary>
    public const string DocumentClass = "http://phrfhir.example/fhir/CodeSystem/phr-document-class";

    /// <summary>Resources an operator administers without break-glass: registrations, directories, consents, audit.</summary>
    public static readonly string[] AdministrativeTypes =
        ["Patient", "Practitioner", "PractitionerRole", "Organization", "Group", "Endpoint", "Location", "Consent", "AuditEvent",
         "Subscription", "CapabilityStatement", "StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "OperationDefinition"];

    const string Key = "phrfhir.access";

    public string? Role { get; }
    /// <summary>Roles that see what they wrote plus what Consents permit them (everyone but the person and the operator).</summary>
    bool ConsentGoverned => Role is "institution" or "physician" or "occupational-physician" or "employer";
    /// <summary>The key recorded as ResourceDocument.Writer on what this requester creates.</summary>
    public string WriterKey { get; }
    /// <summary>The stated break-glass reason, when the request broke the glass (and may).</summary>
    public string? BreakGlass { get; }
    /// <summary>The person's own Patient id, for a person's token.</summary>
    public string? Person { get; private init; }

    readonly HttpContext _ctx;
    readonly FhirStore _store;
#if BENCH
    // Bench:AuthAndAuditOff (the Bench build only; loopback only): no rules at all, so the benchmark's
    // "off" runs measure the server without them (docs/audit.md).
    readonly bool _benchOff;
#endif
    readonly Dictionary<string, AccessFilter?> _filters = new();

    AccessPolicy(HttpContext ctx, FhirStore store)
    {
        _ctx = ctx;
        _store = store;
#if BENCH
        _benchOff = ctx.RequestServices.GetRequiredService<IConfiguration>().GetValue(Audit.BenchSwitch.Key, false);
#endif
        Role = ctx.User.FindFirst(AuthorizationServer.RoleClaim)?.Value;
        var actor = ctx.User.FindFirst(AuthorizationServer.ActorClaim)?.Value;
        WriterKey = actor ?? "client:" + (ctx.User.FindFirst("client_id")?.Value ?? ctx.User.FindFirst("sub")?.Value ?? "?");
        var reason = ctx.Request.Headers[BreakGlassHeader].ToString();
        if (reason.Length > 0)
        {
            if (Role is not ("operator" or "physician" or "occupational-physician" or "institution"))
                throw Denied($"Role '{Role}' cannot break the glass. (この役割では緊急アクセスはできません)");
            if (reason.Length > 500) throw FhirError.BadRequest($"{BreakGlassHeader}: the reason is limited to 500 characters.");
            BreakGlass = reason;
        }
    }

    /// <summary>The request's policy (resolved once per request).</summary>
    public static async Task<AccessPolicy> OfAsync(HttpContext ctx, FhirStore store)
    {
        if (ctx.Items[Key] is AccessPolicy known) return known;
        var policy = new AccessPolicy(ctx, store) { Person = PersonCompartment.Of(ctx) };
        ctx.Items[Key] = policy;
        return policy;
    }

    /// <summary>
    /// The condition rows must meet to be seen, or null when this requester sees everything (the
    /// operator breaking the glass). <paramref name="person"/> narrows which Consents are read when the
    /// request concerns one patient only.
    /// </summary>
    public async Task<AccessFilter?> FilterAsync(string? person = null)
    {
        var cacheKey = person ?? "";
        if (_filters.TryGetValue(cacheKey, out var cached)) return cached;
        var filter = await BuildAsync(person);
        _filters[cacheKey] = filter;
        return filter;
    }

    async Task<AccessFilter?> BuildAsync(string? person)
    {
#if BENCH
        if (_benchOff) return null;
#endif
        var args = new List<object>();
        switch (Role)
        {
            case "person":
                // Their own Patient and every Patient linked to it (Identity/PatientLinks: an institution's
                // record of them, one merged into theirs): their token, Consents and access log cover all.
                args.Add(await _ctx.RequestServices.GetRequiredService<PersonPatients>().OfAsync(Person!, _ctx.RequestAborted));
                return new AccessFilter("d.person = any(@0)", args, indexSql: "person = any(@0)");
            case "operator":
                if (BreakGlass is not null) return null;
                args.Add(AdministrativeTypes);
                return new AccessFilter("d.resource_type = any(@0)", args);
            case var _ when ConsentGoverned:
                args.Add(WriterKey);
                var consents = await _ctx.RequestServices.GetRequiredService<ConsentRules>().ActiveAsync(person, _ctx.RequestAborted);
                var who = await RequesterAsync(ConsentRules.NamesActors(consents));
                var consented = Consented("d");
                var binaries = Consented("b");
                // A document's bytes are seen with the document that points at them, written by the same writer.
                var viaDocument =
                    "(d.resource_type = 'Binary' and exists(select 1 from fhir.ix_reference br join fhir.mt_doc_resourcedocument b on b.id = br.rkey " +
                    "where br.param = 'DocumentReference._binary' and br.target = d.id and not b.deleted " +
                    $"and b.writer is not distinct from d.writer and b.person is not distinct from d.person and {binaries}))";
                if (consented == "false" && binaries == "false") // no Consent applies: only what it wrote
                    return new AccessFilter("d.writer = @0", args, indexSql: "writer = @0");
                return new AccessFilter($"(d.writer = @0 or (d.resource_type <> 'Binary' and {consented}) or {viaDocument})", args);

                string Consented(string alias)
                {
                    var condition = ConsentRules.Condition(consents, who, alias, args);
                    if (Role != "employer" || condition == "false") return condition;
                    // The employer never sees medical content: only documents (DocumentReference, Composition) of the
                    // work-measure classes, and the steps it owes in 健診事後措置/両立支援 (Workflows/WorkflowSteps).
                    var classes = args.Count;
                    args.Add(DocumentClass);
                    args.Add(Workflows.WorkflowSteps.TaskSystem);
                    args.Add(Workflows.WorkflowSteps.EmployerSteps);
                    return $"({condition} and ({alias}.resource_type in ('DocumentReference', 'Composition') and exists(select 1 from fhir.ix_token t " +
                           $"where t.rkey = {alias}.id and t.param = {alias}.resource_type || '.category' and t.system = @{classes})" +
                           $" or {alias}.resource_type = 'Task' and exists(select 1 from fhir.ix_token t " +
                           $"where t.rkey = {alias}.id and t.param = 'Task.code' and t.system = @{classes + 1} and t.code = any(@{classes + 2}))))";
                }
            default:
                return AccessFilter.None;
        }
    }

    /// <summary>
    /// The requester as Consents name it: its actor resources (and Groups holding them), purposes. The
    /// actor resources are looked up only when some Consent names actors by reference.
    /// </summary>
    async Task<Requester> RequesterAsync(bool resolveActor)
    {
        var actor = _ctx.User.FindFirst(AuthorizationServer.ActorClaim)?.Value;
        var keys = actor is null || !resolveActor ? [] : await _store.ActorKeysAsync(actor, _ctx.RequestAborted);
        HashSet<string> purposes = Role == "employer" ? [] : ["TREAT"];
        if (BreakGlass is not null) purposes.Add("BTG");
        return new Requester(keys.ToHashSet(), actor, purposes);
    }

    /// <summary>
    /// The one patient a search is confined to by its own criteria (patient/subject as a reference or
    /// by identifier, or a Patient search by _id), so that only that patient's Consents are read. Using
    /// it can only hide more, never show more: other patients' rows then have no Consent to permit them.
    /// </summary>
    public async Task<string?> SearchedPersonAsync(string type, IEnumerable<KeyValuePair<string, string>> parameters)
    {
        if (!ConsentGoverned) return null;
        foreach (var (name, value) in parameters)
        {
            if (value.Contains(',')) continue;
            var code = name.Split(':')[0];
            if (code is "patient" or "subject" && ReferenceTarget.Local(value.Contains('/') ? value : "Patient/" + value) is { Type: "Patient" } target)
                return target.Id;
            if (type == "Patient" && code == "_id") return value;
            // Resolving an identifier costs a query; worth it only when Consents are read per patient.
            if (code is "patient.identifier" or "subject.identifier" && !_ctx.RequestServices.GetRequiredService<ConsentRules>().HoldsAll
                && await PersonCompartment.PatientWithIdentifierAsync(_store, value, _ctx.RequestAborted) is { } id)
                return id;
        }
        return null;
    }

    /// <summary>Refuses, as not found, a stored resource this requester may not see.</summary>
    public async Task CheckReadAsync(StoredResource s)
    {
        // What one wrote is always visible to its writer (the filter says so too): no Consents to read.
        if (ConsentGoverned && s.Writer == WriterKey) return;
        if (await FilterAsync(s.Person) is { } filter && !await _store.VisibleAsync(s.Key, filter, _ctx.RequestAborted))
            throw FhirError.NotFound($"{s.Type}/{s.Id} is not known. (リソースがありません)");
    }

    /// <summary>
    /// True when this requester sees every row of <paramref name="type"/>: only then may a PUT create a
    /// resource at an id of its choosing, since for anyone else "that id is taken by something you cannot
    /// see" and "that id is free" would be two different answers.
    /// </summary>
    public bool SeesEveryRowOf(string type) =>
        Role == "operator" && (BreakGlass is not null || AdministrativeTypes.Contains(type));

    /// <summary>
    /// The write rule, for every version about to be written (<paramref name="current"/> null: a create,
    /// or an id the requester cannot see, which ResourceWrites answers as one that does not exist).
    /// Only the person and the operator record Consents; others change only what they wrote.
    /// </summary>
    public void CheckWrite(StoredResource? current, ResourceDocument next, string method)
    {
#if BENCH
        if (_benchOff) return;
#endif
        // R4 http.html#update: 405 when the resource did not exist and the server does not allow client-defined ids (for this requester).
        if (current is null && method == "PUT" && !SeesEveryRowOf(next.ResourceType))
            throw new FhirError(HttpStatusCode.MethodNotAllowed, OperationOutcome.IssueType.NotSupported,
                $"There is no {next.ResourceType} with this id that you can see, and update-as-create (a PUT choosing the id) is offered only to the PHR operator: create it with POST. " +
                "(参照できるリソースがありません。新規登録は POST で行ってください)");
        var existing = current is { Deleted: false } ? current : null;
        switch (Role)
        {
            case "person":
                // Someone else's record answers as if it did not exist, exactly like a read.
                if (existing is not null && existing.Person != Person)
                    throw FhirError.NotFound($"{existing.Type}/{existing.Id} is not known. (リソースがありません)");
                if (next.Person != Person)
                    throw Denied($"A person writes only their own records: {next.ResourceType} must belong to Patient/{Person}. (本人の記録のみ登録できます)");
                return;
            case "operator":
                if (BreakGlass is null && !AdministrativeTypes.Contains(next.ResourceType))
                    throw Denied($"The operator writes {next.ResourceType} (medical content) only with break-glass ({BreakGlassHeader}). (医療情報の更新には緊急アクセスが必要です)");
                return;
            default:
                if (next.ResourceType == "Consent")
                    throw Denied("Consents are recorded by the person (or the PHR operator on their behalf). (同意は本人が登録します)");
                // A step of 健診事後措置/両立支援 the flow lets this role make on what another wrote (Workflows/WorkflowRules).
                if (existing is not null && existing.Writer != WriterKey && !Workflows.WorkflowRules.Approved(_ctx, next.Id))
                    throw Denied($"You may change only what you wrote: {existing.Type}/{existing.Id} was not written by you. (自分が登録したリソースのみ変更できます)");
                return;
        }
    }

    static FhirError Denied(string message) => new(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden, message);
}

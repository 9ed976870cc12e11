using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using PhrFhir.Storage;
using Microsoft.Extensions.Options;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Rest;

public sealed record WriteOutcome(StoredResource Stored, bool Created)
{
    public int Status => Created ? 201 : 200;
}

/// <summary>
/// create / update / delete and their conditional forms (R4 http.html), inside a caller's
/// <see cref="WriteTransaction"/> so a single request and a transaction Bundle share one code path.
/// </summary>
public sealed partial class ResourceWrites(FhirStore store, IOptions<ServerLimits> limits, Validation.ProfileEnforcement enforcement, Mhd.DocumentRegistry registry,
    Workflows.WorkflowRules workflow, Subscriptions.SubscriptionRules subscriptions, Identity.IdentifierDomains domains)
{
    public FhirStore Store => store;

    [GeneratedRegex(@"^[A-Za-z0-9\-\.]{1,64}$")]
    public static partial Regex IdPattern();

    /// <summary>
    /// The id the server gives a new resource: time-ordered (UUIDv7, RFC 9562), as the AuditEvents' are. A resource's
    /// key ends every index entry of it (`rkey` in fhir.ix_*, the document and history keys), so with random ids every
    /// create wrote into random leaf pages across the indexes, and once those outgrew memory each write read pages in,
    /// evicted dirty ones and logged whole pages after every checkpoint; time-ordered keys land at the right edge of
    /// each key range. The id tells when it was made, to the millisecond, which `meta.lastUpdated` of its first
    /// version already shows.
    /// </summary>
    public static string NewId() => Guid.CreateVersion7().ToString();

    public async Task<WriteOutcome> CreateAsync(WriteTransaction tx, Resource resource, string? ifNoneExist, CancellationToken ct, string? assignedId = null)
    {
        if (!string.IsNullOrEmpty(ifNoneExist) && await FindConditionalAsync(tx, resource.TypeName, ifNoneExist, ct) is { } existing)
            return new WriteOutcome(existing, Created: false);
        resource.Id = assignedId ?? NewId();
        var stored = await StageAsync(tx, resource, null, "POST", ct);
        return new WriteOutcome(stored, Created: true);
    }

    /// <summary>A Binary whose bytes arrive as the raw request body (R4 binary.html#rest), streamed to storage.</summary>
    public async Task<WriteOutcome> CreateRawBinaryAsync(WriteTransaction tx, string contentType, Stream content, string? id, CancellationToken ct)
    {
        var binary = new Binary { Id = id ?? NewId(), ContentType = contentType };
        var current = id is null ? null : await CurrentAsync(tx, "Binary", id, ct);
        var stored = await StageAsync(tx, binary, current, id is null ? "POST" : "PUT", ct, content);
        return new WriteOutcome(stored, Created: current is null || current.Deleted);
    }

    /// <summary>
    /// The one resource If-None-Exist finds, or null. Takes a transaction lock on the criteria first:
    /// concurrent identical conditional creates then run one after another and only the first creates.
    /// </summary>
    public async Task<StoredResource?> FindConditionalAsync(WriteTransaction tx, string type, string ifNoneExist, CancellationToken ct)
    {
        var query = ParseCriteria(tx, type, ifNoneExist, "If-None-Exist");
        await tx.LockAsync("create:" + type + "?" + string.Join("&", query.Applied.Select(a => a.Key + "=" + a.Value).Order()), ct);
        var found = await tx.SearchAsync(query, 2, ct);
        if (found.Count > 1)
            throw FhirError.PreconditionFailed($"If-None-Exist '{ifNoneExist}' matches more than one {type}: the create is ambiguous. (条件に一致するリソースが複数あります)");
        return found.FirstOrDefault();
    }

    public async Task<WriteOutcome> UpdateAsync(WriteTransaction tx, string type, string id, Resource resource, int? ifMatch, CancellationToken ct)
    {
        AppendOnly(type);
        if (resource.Id is null)
            throw FhirError.BadRequest($"The resource has no id: an update must carry id '{id}' (R4 http.html#update). (id がありません)", $"{type}.id");
        if (resource.Id != id)
            throw FhirError.BadRequest($"The resource id '{resource.Id}' does not match the URL id '{id}'. (URL と本文の id が一致しません)", $"{type}.id");
        if (!IdPattern().IsMatch(id))
            throw FhirError.BadRequest($"'{id}' is not a valid FHIR id (1–64 of A-Z a-z 0-9 - .).", $"{type}.id");

        var current = await CurrentAsync(tx, type, id, ct);
        if (ifMatch is { } expected && (current is null || current.Deleted || current.Version != expected))
            throw FhirError.PreconditionFailed($"If-Match W/\"{expected}\" does not match the current version of {type}/{id}{(current is null ? " (it does not exist)" : $" (W/\"{current.Version}\")")}. (版が一致しません)");
        var stored = await StageAsync(tx, resource, current, "PUT", ct);
        return new WriteOutcome(stored, Created: current is null || current.Deleted);
    }

    public async Task<WriteOutcome> ConditionalUpdateAsync(WriteTransaction tx, string type, string criteria, Resource resource, CancellationToken ct)
    {
        var query = ParseCriteria(tx, type, criteria, "conditional update");
        await tx.LockAsync("update:" + type + "?" + criteria, ct);
        var found = await tx.SearchAsync(query, 2, ct);
        if (found.Count > 1)
            throw FhirError.PreconditionFailed($"The criteria '{criteria}' match more than one {type}. (条件に一致するリソースが複数あります)");
        if (found.Count == 1)
        {
            resource.Id ??= found[0].Id;
            if (resource.Id != found[0].Id)
                throw FhirError.BadRequest($"The resource id '{resource.Id}' differs from the matching {type}/{found[0].Id}.", $"{type}.id");
            return await UpdateAsync(tx, type, found[0].Id, resource, null, ct);
        }
        if (resource.Id is null) return await CreateAsync(tx, resource, null, ct);
        return await UpdateAsync(tx, type, resource.Id, resource, null, ct);
    }

    /// <summary>
    /// The current version when the requester may see it; null when there is none <em>or it is hidden</em>:
    /// every write answers a resource the requester cannot see exactly as one that does not exist
    /// (docs/consent.md, "Writes"). Update-as-create on such an id is refused by the write rule
    /// (Security/AccessPolicy.CheckWrite) unless the requester sees every row of the type.
    /// </summary>
    static async Task<StoredResource?> CurrentAsync(WriteTransaction tx, string type, string id, CancellationToken ct)
    {
        var (current, visible) = await tx.ReadVisibleAsync(type, id, ct);
        return visible ? current : null;
    }

    /// <summary>The audit trail is append-only (ATNA): an AuditEvent is never changed or deleted.</summary>
    static void AppendOnly(string type)
    {
        if (type == "AuditEvent")
            throw new FhirError(System.Net.HttpStatusCode.MethodNotAllowed, OperationOutcome.IssueType.NotSupported,
                "AuditEvents are append-only: they cannot be updated, patched or deleted. (監査ログは変更・削除できません)");
    }

    /// <summary>FHIRPath Patch of the current version; the result is stored like an update.</summary>
    public async Task<WriteOutcome> PatchAsync(WriteTransaction tx, string type, string id, Parameters patch, int? ifMatch, CancellationToken ct)
    {
        AppendOnly(type);
        var current = await CurrentAsync(tx, type, id, ct);
        if (current is null || current.Deleted)
            throw FhirError.NotFound($"{type}/{id} is not known: there is nothing to patch. (リソースがありません)");
        if (type == "Binary") throw FhirError.NotSupported("Binary content cannot be patched: send the new document with PUT.");
        var patched = FhirPatch.Apply(FhirFormat.ParseStored(current.Json), patch);
        if (patched.Id != id || patched.TypeName != type)
            throw FhirError.BadRequest("A patch may not change the resource's type or id.");
        return await UpdateAsync(tx, type, id, patched, ifMatch ?? current.Version, ct);
    }

    /// <summary>Soft delete: a new version marked deleted; the index rows go, history keeps everything.</summary>
    public async Task<StoredResource?> DeleteAsync(WriteTransaction tx, string type, string id, CancellationToken ct)
    {
        AppendOnly(type);
        var current = await CurrentAsync(tx, type, id, ct);
        // Deleting nothing is still a success (R4 http.html#delete): 204 for a missing id and a hidden one alike.
        if (current is null || current.Deleted) return null;
        Workflows.CheckupRetention.CheckDelete(current); // 労働安全衛生規則 第51条: checkup records are kept 5 years
        var doc = new ResourceDocument
        {
            Id = ResourceDocument.Key(type, id),
            ResourceType = type,
            Version = current.Version + 1,
            LastUpdated = Now(),
            Deleted = true,
            Json = "",
            // Its deletion stays in the patient's compartment: their history shows it and its AuditEvent names them.
            Person = current.Person,
            Writer = current.Writer,
        };
        tx.Guard?.Invoke(current, doc, "DELETE");
        tx.Write(doc, current.Version, "DELETE", rows: null);
        if (type == "Subscription") tx.EndSubscription(id); // as status off: no more events or notifications
        return new StoredResource(type, id, doc.Version, doc.LastUpdated, true, "");
    }

    public async Task<int> ConditionalDeleteAsync(WriteTransaction tx, string type, string criteria, CancellationToken ct)
    {
        var query = ParseCriteria(tx, type, criteria, "conditional delete");
        var found = await tx.SearchAsync(query, 2, ct);
        if (found.Count > 1)
            throw FhirError.PreconditionFailed($"The criteria '{criteria}' match more than one {type}: refusing to delete several. (複数一致のため削除しません)");
        if (found.Count == 1) await DeleteAsync(tx, type, found[0].Id, ct);
        return found.Count;
    }

    /// <summary>Conditional criteria match only what the requester may see (WriteTransaction.ReadFilter), nested sets included.</summary>
    SearchQuery ParseCriteria(WriteTransaction tx, string type, string criteria, string what)
    {
        var pairs = QueryPairs(criteria.TrimStart('?'));
        if (pairs.Count == 0) throw FhirError.BadRequest($"The {what} criteria are empty.");
        return new SearchQuery(store.SearchParameters, type, pairs, lenient: false, tx.ReadFilter ?? AccessFilter.Everything);
    }

    public static List<KeyValuePair<string, string>> QueryPairs(string query) =>
        query.Split('&', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => p.Split('=', 2))
            .Select(kv => new KeyValuePair<string, string>(Uri.UnescapeDataString(kv[0].Replace('+', ' ')),
                kv.Length > 1 ? Uri.UnescapeDataString(kv[1].Replace('+', ' ')) : ""))
            .ToList();

    /// <summary>Sets id/meta, serialises and indexes one version, and queues it on the transaction.</summary>
    async Task<StoredResource> StageAsync(WriteTransaction tx, Resource resource, StoredResource? current, string method, CancellationToken ct, Stream? rawContent = null)
    {
        // AuditEvents live in the audit table (Audit/AuditEndpoints: POST /AuditEvent), never as documents.
        if (resource.TypeName == "AuditEvent")
            throw new FhirError(System.Net.HttpStatusCode.MethodNotAllowed, OperationOutcome.IssueType.NotSupported,
                "AuditEvents are recorded with POST /AuditEvent only, not in a Bundle or by a conditional write. (監査ログは POST /AuditEvent で記録します)");
        var version = (current?.Version ?? 0) + 1;
        await domains.ResolveSubjectAsync(tx, resource, ct); // a subject named by identifier (Patient?identifier=) becomes the person's Patient
        await enforcement.CheckAsync(resource, resource.TypeName, ct);
        var now = Now();
        resource.Meta ??= new Meta();
        resource.Meta.VersionId = version.ToString(System.Globalization.CultureInfo.InvariantCulture);
        resource.Meta.LastUpdated = now;
        var rows = store.Indexer.Extract(resource);
        var doc = new ResourceDocument
        {
            Id = ResourceDocument.Key(resource.TypeName, resource.Id!),
            ResourceType = resource.TypeName,
            Person = SearchIndexer.PersonOf(resource, rows) ?? subscriptions.PersonOf(resource, current), // a person's Subscription is in their compartment
            Writer = current is { Deleted: false } ? current.Writer : tx.Writer,
            LastUpdated = now,
            Version = version,
        };
        // The steps of 健診事後措置 and 両立支援 (before the access rule: a step the flow lets a non-writer make is approved there).
        await workflow.CheckAsync(tx, this, resource, current, ct);
        tx.Guard?.Invoke(current, doc, method); // before any bytes are streamed to storage
        // Every DocumentReference and List meets the MHDS registry rules, whichever path writes it
        // (after the access rule: a refused requester learns nothing of the registry).
        await registry.CheckAsync(tx, this, resource, current, ct);
        await subscriptions.CheckAsync(tx, resource, current, ct); // ITI-110: topic, filters, channel, SSRF rule
        await domains.CheckAsync(tx, resource, current, ct); // a Patient's identifiers in their domains, its links
        if (resource is Binary binary)
        {
            // The bytes go to chunk rows, not into the JSON: reads stream them (BinaryContent).
            var content = rawContent ?? new MemoryStream(binary.Data ?? []);
            binary.Data = null;
            binary.ContentType ??= "application/octet-stream";
            await tx.WriteBinaryAsync(resource.Id!, version, doc.Person, binary.ContentType, content, limits.Value.MaxBinaryBytes, ct);
        }
        doc.Json = FhirFormat.ToJson(resource);
        tx.Write(doc, version - 1, method, rows);
        return new StoredResource(doc.ResourceType, resource.Id!, version, now, false, doc.Json, doc.Person, doc.Writer);
    }

    // Milliseconds: what meta.lastUpdated shows is exactly what PostgreSQL keeps and compares.
    static DateTimeOffset Now()
    {
        var t = DateTimeOffset.UtcNow;
        return new DateTimeOffset(t.Ticks - t.Ticks % TimeSpan.TicksPerMillisecond, TimeSpan.Zero);
    }
}

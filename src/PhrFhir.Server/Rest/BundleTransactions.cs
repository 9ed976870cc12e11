using System.Globalization;
using System.Net;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Audit;
using PhrFhir.Storage;

namespace PhrFhir.Server.Rest;

/// <summary>
/// POST [base] with a batch or transaction Bundle (R4 http.html#transaction). A transaction is one
/// database transaction: every entry is written or none is. urn:uuid fullUrls are given server ids and
/// every reference to them (and attachment URLs, which MHD uses for Binaries) is rewritten first.
/// </summary>
public static class BundleTransactions
{
    sealed record Entry(int Index, Bundle.EntryComponent Source, Bundle.HTTPVerb Method, string Type, string? Id, string? Query)
    {
        public string? AssignedId { get; set; }
        public StoredResource? Existing { get; set; }
        public Bundle.EntryComponent Response { get; } = new() { Response = new Bundle.ResponseComponent() };
    }

    public static async Task HandleAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, AuditTrail trail, IOptions<ServerLimits> limits)
    {
        var resource = await FhirFormat.ReadResourceAsync(ctx.Request, limits.Value, ctx.RequestAborted);
        if (resource is not Bundle bundle || bundle.Type is not (Bundle.BundleType.Transaction or Bundle.BundleType.Batch))
            throw FhirError.BadRequest("POST to the base URL takes a Bundle of type transaction or batch. (transaction か batch の Bundle を送ってください)", "Bundle.type");
        if (bundle.Entry.Count > limits.Value.MaxBundleEntries)
            throw new FhirError(HttpStatusCode.RequestEntityTooLarge, OperationOutcome.IssueType.TooCostly,
                $"The Bundle has {bundle.Entry.Count} entries; at most {limits.Value.MaxBundleEntries} are accepted. (エントリ数が多すぎます)", "Bundle.entry");

        UniqueFullUrls(bundle);
        if (bundle.Type == Bundle.BundleType.Transaction && Mhd.ProvideDocumentBundle.IsSubmission(bundle))
        {
            await Mhd.ProvideDocumentBundle.HandleAsync(ctx, bundle, store, writes); // IHE MHD ITI-65
            return;
        }
        var response = bundle.Type == Bundle.BundleType.Transaction
            ? await TransactionAsync(ctx, bundle, store, writes)
            : await BatchAsync(ctx, bundle, writes, trail);
        await FhirResponse.ResourceAsync(ctx, response, 200);
    }

    /// <summary>
    /// R4 bundle.html bdl-7: a fullUrl is unique within a Bundle (only a history Bundle repeats one, one
    /// entry per version). In a batch or transaction it is also what references resolve to, so a repeat is
    /// refused whatever its meta.versionId.
    /// </summary>
    static void UniqueFullUrls(Bundle bundle)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < bundle.Entry.Count; i++)
            if (bundle.Entry[i].FullUrl is { } fullUrl && !seen.Add(fullUrl))
                throw FhirError.BadRequest($"Bundle.entry[{i}].fullUrl '{fullUrl}' is the fullUrl of an earlier entry: a fullUrl is unique within a Bundle (R4 bdl-7). (fullUrl が重複しています)",
                    $"Bundle.entry[{i}].fullUrl");
    }

    /// <summary>Runs a transaction Bundle in one database transaction and returns its transaction-response.</summary>
    public static async Task<Bundle> TransactionAsync(HttpContext ctx, Bundle bundle, FhirStore store, ResourceWrites writes)
    {
        var entries = bundle.Entry.Select(Parse).ToList();
        // Every entry is authorised before anything is read: a refused client learns nothing from the registry.
        foreach (var e in entries)
            await Run(e, () => { Security.AccessControl.Demand(ctx.User, Security.AccessControl.ForMethod(e.Method, e.Id is not null), e.Type, inBundle: true); return Task.CompletedTask; });
        await using var tx = await ctx.BeginAuditedWriteAsync();
        await AssignIdsAsync(tx, writes, entries, ctx.RequestAborted);
        RewriteReferences(entries, FhirResponse.BaseUrl(ctx.Request));
        // What the Bundle will write: a reference to it resolves before the entry that writes it has run.
        tx.Planned = entries.Where(e => e.AssignedId is not null && e.Existing is null).Select(e => e.Type + "/" + e.AssignedId).ToHashSet();
        // R4 http.html#trules: DELETE, then POST, then PUT/PATCH, then GET.
        foreach (var e in entries.OrderBy(e => e.Method switch { Bundle.HTTPVerb.DELETE => 0, Bundle.HTTPVerb.POST => 1, Bundle.HTTPVerb.PUT or Bundle.HTTPVerb.PATCH => 2, _ => 3 }))
        {
            if (e.Method == Bundle.HTTPVerb.GET) await tx.FlushAsync(ctx.RequestAborted);
            await Run(e, async () => await ExecuteAsync(tx, writes, e, FhirResponse.BaseUrl(ctx.Request), ctx.RequestAborted));
        }
        await tx.CommitAsync(ctx.RequestAborted);
        return Response(Bundle.BundleType.TransactionResponse, entries);
    }

    static async Task<Bundle> BatchAsync(HttpContext ctx, Bundle bundle, ResourceWrites writes, AuditTrail trail)
    {
        var entries = bundle.Entry.Select(Parse).ToList();
        foreach (var e in entries)
        {
            await using var tx = await ctx.BeginAuditedWriteAsync();
            try
            {
                await Run(e, async () =>
                {
                    Security.AccessControl.Demand(ctx.User, Security.AccessControl.ForMethod(e.Method, e.Id is not null), e.Type, inBundle: true);
                    if (e.Method == Bundle.HTTPVerb.POST) e.AssignedId = ResourceWrites.NewId();
                    await ExecuteAsync(tx, writes, e, FhirResponse.BaseUrl(ctx.Request), ctx.RequestAborted);
                });
                await tx.CommitAsync(ctx.RequestAborted);
            }
            catch (FhirError err)
            {
                // A batch entry fails alone (R4 http.html#brules); its attempt is audited alone too.
                e.Response.Response!.Status = ((int)err.Status).ToString(CultureInfo.InvariantCulture) + " " + err.Status;
                e.Response.Response!.Outcome = ErrorHandling.ToOutcome(err);
                await trail.EntryFailedAsync(ctx, tx, err, (e.Id ?? e.AssignedId) is { } id ? e.Type + "/" + id : null);
            }
        }
        return Response(Bundle.BundleType.BatchResponse, entries);
    }

    static Bundle Response(Bundle.BundleType type, List<Entry> entries) => new()
    {
        Id = Guid.NewGuid().ToString(),
        Type = type,
        Meta = new Meta { LastUpdated = DateTimeOffset.UtcNow },
        Entry = entries.Select(e => e.Response).ToList(),
    };

    // Errors name the entry they come from, so an integrator finds it in a 50-entry Bundle.
    static async Task Run(Entry e, Func<Task> action)
    {
        try { await action(); }
        catch (FhirError err)
        {
            throw new FhirError(err.Status, err.Code, $"Bundle.entry[{e.Index}]: {err.Message}",
                InEntry(e.Index, err.Expression))
            { MoreIssues = err.MoreIssues, DetailCode = err.DetailCode };
        }
    }

    /// <summary>An entry resource's own path ("Patient.name", or just "Patient") as a path in the Bundle.</summary>
    static string InEntry(int index, string? expression) => expression switch
    {
        null => $"Bundle.entry[{index}]",
        _ when char.IsUpper(expression[0]) && !expression.Contains('.') => $"Bundle.entry[{index}].resource",
        _ when char.IsUpper(expression[0]) => $"Bundle.entry[{index}].resource.{expression[(expression.IndexOf('.') + 1)..]}",
        _ => $"Bundle.entry[{index}].resource.{expression}",
    };

    static Entry Parse(Bundle.EntryComponent source, int index)
    {
        FhirError Bad(string msg, string at) => FhirError.BadRequest($"Bundle.entry[{index}]: {msg}", $"Bundle.entry[{index}].{at}");
        var request = source.Request ?? throw Bad("every entry needs request.method and request.url. (request がありません)", "request");
        var method = request.Method ?? throw Bad("request.method is missing.", "request.method");
        var url = request.Url ?? throw Bad("request.url is missing.", "request.url");
        var path = url;
        string? query = null;
        var q = url.IndexOf('?');
        if (q >= 0) { path = url[..q]; query = url[(q + 1)..]; }
        var parts = path.Trim('/').Split('/');
        if (parts.Length is < 1 or > 2 || !ServedResources.IsServed(parts[0]))
            throw Bad($"request.url '{url}' is not 'Type', 'Type/id' or 'Type?query' of a served resource type.", "request.url");
        var id = parts.Length == 2 ? parts[1] : null;
        // PUT to a bare type with the id in the resource (as IHE MHD's add-to-folder example sends it)
        // is read as the update of that id: there is no other sensible meaning.
        if (method == Bundle.HTTPVerb.PUT && id is null && query is null && source.Resource?.Id is { } bodyId) id = bodyId;
        if (method is Bundle.HTTPVerb.POST or Bundle.HTTPVerb.PUT)
        {
            if (source.Resource is null) throw Bad($"a {method} entry needs a resource.", "resource");
            if (source.Resource.TypeName != parts[0]) throw Bad($"the resource is a {source.Resource.TypeName} but request.url names {parts[0]}.", "resource");
        }
        if (method == Bundle.HTTPVerb.PATCH && (id is null || source.Resource is not Parameters))
            throw Bad("a PATCH entry needs request.url 'Type/id' and a FHIRPath Patch Parameters resource.", "resource");
        if (method == Bundle.HTTPVerb.HEAD)
            throw FhirError.NotSupported($"Bundle.entry[{index}]: HEAD is not supported in a Bundle.", $"Bundle.entry[{index}].request.method");
        return new Entry(index, source, method, parts[0], id, query);
    }

    static async Task AssignIdsAsync(WriteTransaction tx, ResourceWrites writes, List<Entry> entries, CancellationToken ct)
    {
        foreach (var e in entries.Where(e => e.Method == Bundle.HTTPVerb.POST))
        {
            var ifNoneExist = e.Source.Request!.IfNoneExist;
            if (!string.IsNullOrEmpty(ifNoneExist))
            {
                var existing = await Run2(e, () => writes.FindConditionalAsync(tx, e.Type, ifNoneExist, ct));
                if (existing is not null) { e.Existing = existing; e.AssignedId = existing.Id; continue; }
            }
            e.AssignedId = ResourceWrites.NewId();
        }
        foreach (var e in entries.Where(e => e.Method == Bundle.HTTPVerb.PUT && e.Id is not null))
            e.AssignedId = e.Id;
    }

    static async Task<T> Run2<T>(Entry e, Func<Task<T>> action)
    {
        T result = default!;
        await Run(e, async () => result = await action());
        return result;
    }

    static void RewriteReferences(List<Entry> entries, string baseUrl)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var e in entries)
            if (e.Source.FullUrl is { } full && e.AssignedId is not null && e.Method is Bundle.HTTPVerb.POST or Bundle.HTTPVerb.PUT)
                map[full] = e.Type + "/" + e.AssignedId;

        foreach (var e in entries)
        {
            if (e.Source.Resource is null) continue;
            foreach (var node in Descendants(e.Source.Resource))
            {
                if (node is ResourceReference { Reference: { } r } rr)
                {
                    if (map.TryGetValue(r, out var local)) rr.Reference = local;
                    else if (r.StartsWith("urn:uuid:", StringComparison.Ordinal) || r.StartsWith("urn:oid:", StringComparison.Ordinal))
                        throw FhirError.BadRequest($"Bundle.entry[{e.Index}]: reference '{r}' does not resolve to any entry's fullUrl. (参照先がバンドル内にありません)",
                            $"Bundle.entry[{e.Index}].resource");
                }
                else if (node is Attachment { Url: { } u } att && map.TryGetValue(u, out var target))
                    att.Url = baseUrl + "/" + target; // an attachment URL is fetched as is (MHD ITI-68): absolute
            }
        }
    }

    static IEnumerable<Base> Descendants(Base root)
    {
        var stack = new Stack<Base>();
        stack.Push(root);
        while (stack.Count > 0)
        {
            var b = stack.Pop();
            yield return b;
            // A Bundle inside an entry (a FHIR document: HS037, MHD's FHIR Documents option) resolves its
            // own urn:uuid references internally: they are not references into the transaction.
            if (b is Bundle) continue;
            foreach (var (_, value) in b.EnumerateElements())
            {
                if (value is Base one) stack.Push(one);
                else if (value is System.Collections.IEnumerable many and not string)
                    foreach (var item in many) if (item is Base c) stack.Push(c);
            }
        }
    }

    static async Task ExecuteAsync(WriteTransaction tx, ResourceWrites writes, Entry e, string baseUrl, CancellationToken ct)
    {
        var r = e.Response.Response!;
        switch (e.Method)
        {
            case Bundle.HTTPVerb.POST when e.Existing is not null:
                Describe(e, e.Existing, "200 OK");
                break;
            case Bundle.HTTPVerb.POST:
                var created = await writes.CreateAsync(tx, e.Source.Resource!, null, ct, e.AssignedId);
                Describe(e, created.Stored, "201 Created", e.Source.Resource);
                r.Location = $"{baseUrl}/{e.Type}/{created.Stored.Id}/_history/{created.Stored.Version}"; // absolute, as the Location header would be
                break;
            case Bundle.HTTPVerb.PUT:
                var ifMatch = FhirResponse.ParseVersionETag(e.Source.Request!.IfMatch, "request.ifMatch");
                var updated = e.Id is not null
                    ? await writes.UpdateAsync(tx, e.Type, e.Id, e.Source.Resource!, ifMatch, ct)
                    : await writes.ConditionalUpdateAsync(tx, e.Type, e.Query ?? "", e.Source.Resource!, ct);
                Describe(e, updated.Stored, updated.Created ? "201 Created" : "200 OK", e.Source.Resource);
                break;
            case Bundle.HTTPVerb.PATCH:
                var patchIfMatch = FhirResponse.ParseVersionETag(e.Source.Request!.IfMatch, "request.ifMatch");
                var patched = await writes.PatchAsync(tx, e.Type, e.Id!, (Parameters)e.Source.Resource!, patchIfMatch, ct);
                Describe(e, patched.Stored, "200 OK");
                break;
            case Bundle.HTTPVerb.DELETE:
                if (e.Id is not null) await writes.DeleteAsync(tx, e.Type, e.Id, ct);
                else await writes.ConditionalDeleteAsync(tx, e.Type, e.Query ?? "", ct);
                r.Status = "204 No Content";
                break;
            case Bundle.HTTPVerb.GET:
                if (e.Id is null || e.Query is not null)
                    throw FhirError.NotSupported("searches inside a Bundle are not supported yet: send them as GET requests.", "request.url");
                var (s, visible) = await tx.ReadVisibleAsync(e.Type, e.Id, ct);
                if (s is null || s.Deleted || !visible) throw FhirError.NotFound($"{e.Type}/{e.Id} is not known.");
                Describe(e, s, "200 OK");
                break;
        }
    }

    /// <summary>
    /// The entry's response. The written resource is the request's own POCO once the write has set
    /// its id and meta (no re-parse); other outcomes are read from the stored JSON.
    /// </summary>
    static void Describe(Entry e, StoredResource s, string status, Resource? written = null)
    {
        e.Response.FullUrl = null;
        e.Response.Resource = written ?? FhirFormat.ParseStored(s.Json);
        e.Response.Response!.Status = status;
        e.Response.Response.Etag = $"W/\"{s.Version}\"";
        e.Response.Response.LastModified = s.LastUpdated;
    }
}

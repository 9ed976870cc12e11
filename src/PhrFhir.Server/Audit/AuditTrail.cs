using System.Net;
using System.Text;
using System.Threading.Channels;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Audit;

/// <summary>
/// Every request leaves an AuditEvent (IHE BALP "basic" RESTful shape; the seed's ATNA): who (client,
/// role, network address), what (interaction, resources or query), outcome, when (UTC). A write's
/// AuditEvent is stored in the write's own transaction; reads, searches, refusals and failures are
/// queued and stored in small batches by <see cref="AuditWriter"/>. AuditEvents are append-only and
/// hash-chained (FhirStore.SealAuditChainAsync / VerifyAuditChainAsync).
/// </summary>
public sealed class AuditTrail(FhirStore store)
{
    const string Recorded = "phrfhir.audited";
    readonly Channel<AuditEvent> _queue = Channel.CreateBounded<AuditEvent>(new BoundedChannelOptions(10_000) { FullMode = BoundedChannelFullMode.Wait });

    public ChannelReader<AuditEvent> Queue => _queue.Reader;

    /// <summary>A write transaction whose commit also stores the request's AuditEvent.</summary>
    public async Task<WriteTransaction> BeginWriteAsync(HttpContext ctx)
    {
        var tx = await store.BeginWriteAsync(ctx.RequestAborted);
        tx.BeforeCommit = (t, _) =>
        {
            var written = t.Written.Select(w => w.Key).ToList();
            var audit = Describe(ctx, 0, null, written);
            var person = t.Written.Select(w => w.Person).FirstOrDefault(p => p is not null);
            t.AppendAudit(AuditDocument(audit, person), store.Indexer.Extract(audit));
            ctx.Items[Recorded] = true;
            return Task.CompletedTask;
        };
        return tx;
    }

    /// <summary>The document an AuditEvent is stored as (ids and meta set here: it never goes through ResourceWrites).</summary>
    public static ResourceDocument AuditDocument(AuditEvent audit, string? person)
    {
        var now = DateTimeOffset.UtcNow;
        audit.Id = Guid.NewGuid().ToString();
        audit.Meta = new Meta { VersionId = "1", LastUpdated = new DateTimeOffset(now.Ticks - now.Ticks % TimeSpan.TicksPerMillisecond, TimeSpan.Zero) };
        return new ResourceDocument
        {
            Id = ResourceDocument.Key("AuditEvent", audit.Id),
            ResourceType = "AuditEvent",
            Person = person,
            LastUpdated = audit.Meta.LastUpdated.Value,
            Version = 1,
            Json = FhirFormat.ToJson(audit),
        };
    }

    public void Use(WebApplication app) => app.Use(async (ctx, next) =>
    {
        Exception? failure = null;
        try { await next(ctx); }
        catch (Exception e) { failure = e; throw; }
        finally
        {
            if (!ctx.Items.ContainsKey(Recorded) && ShouldAudit(ctx))
            {
                var status = failure switch { FhirError fe => (int)fe.Status, null => ctx.Response.StatusCode, _ => 500 };
                var outcome = status < 400 ? 0 : status < 500 ? 4 : 8;
                var keys = ctx.GetRouteValue("type") is string type && ctx.GetRouteValue("id") is string id ? [type + "/" + id] : new List<string>();
                await _queue.Writer.WriteAsync(Describe(ctx, outcome, failure?.Message, keys), CancellationToken.None);
            }
        }
    });

    // Discovery, health and published conformance material carry no one's data; token requests are
    // logins and are always recorded.
    static bool ShouldAudit(HttpContext ctx)
    {
        var path = ctx.Request.Path.Value ?? "";
        if (path.StartsWith("/auth/", StringComparison.Ordinal)) return true; // token, authorize, login
        if (path is "/healthz" or "/readyz" or "/metadata" or "/.well-known/smart-configuration") return false;
        return !(ctx.GetEndpoint()?.Metadata.GetMetadata<Microsoft.AspNetCore.Authorization.IAllowAnonymous>() is not null && ctx.Response.StatusCode < 400);
    }

    static readonly Coding RestType = new("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation");
    static readonly Coding LoginType = new("http://dicom.nema.org/resources/ontology/DCM", "110114", "User Authentication");

    /// <summary>An AuditEvent for this request (BALP: agents client and server, entities the resources or the query).</summary>
    public static AuditEvent Describe(HttpContext ctx, int outcome, string? failure, IReadOnlyList<string> resources)
    {
        var request = ctx.Request;
        var login = request.Path.StartsWithSegments("/auth");
        var (interaction, action) = Interaction(request.Method, ctx.GetRouteValue("id") is not null, request.Path.Value ?? "");
        var clientId = ctx.User.FindFirst("client_id")?.Value ?? ctx.User.FindFirst("sub")?.Value ?? (login ? LoginClient(request) : null);
        var audit = new AuditEvent
        {
            Type = login ? LoginType : RestType,
            Subtype = login ? [] : [new Coding("http://hl7.org/fhir/restful-interaction", interaction)],
            Action = login ? AuditEvent.AuditEventAction.E : action,
            Recorded = DateTimeOffset.UtcNow,
            Outcome = outcome switch { 0 => AuditEvent.AuditEventOutcome.N0, 4 => AuditEvent.AuditEventOutcome.N4, _ => AuditEvent.AuditEventOutcome.N8 },
            OutcomeDesc = failure is null ? null : Truncate(failure, 500),
            Agent =
            [
                new AuditEvent.AgentComponent
                {
                    Type = new CodeableConcept("http://dicom.nema.org/resources/ontology/DCM", "110153", "Source Role ID"),
                    Who = new ResourceReference { Identifier = new Identifier("urn:phrfhir:client", clientId ?? "anonymous"), Display = ctx.User.FindFirst(AuthorizationServer.RoleClaim)?.Value },
                    AltId = ctx.User.FindFirst("sub")?.Value, // the person signed in through the app (or a login's username as typed)
                    Requestor = true,
                    Network = new AuditEvent.NetworkComponent { Address = ctx.Connection.RemoteIpAddress?.ToString(), Type = AuditEvent.AuditEventAgentNetworkType.N2 },
                },
                new AuditEvent.AgentComponent
                {
                    Type = new CodeableConcept("http://dicom.nema.org/resources/ontology/DCM", "110152", "Destination Role ID"),
                    Who = new ResourceReference { Display = "PhrFhir" },
                    Requestor = false,
                    Network = new AuditEvent.NetworkComponent { Address = $"{request.Scheme}://{request.Host}{request.PathBase}", Type = AuditEvent.AuditEventAgentNetworkType.N5 },
                },
            ],
            Source = new AuditEvent.SourceComponent
            {
                Observer = new ResourceReference { Display = "PhrFhir" },
                Type = [new Coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
            },
        };
        foreach (var key in resources.Where(k => !k.StartsWith("AuditEvent/", StringComparison.Ordinal)))
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                What = new ResourceReference(key),
                Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
                Role = key.StartsWith("Patient/", StringComparison.Ordinal) ? new Coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient") : null,
            });
        if (request.QueryString.HasValue && interaction is "search-type" or "history-type" or "history-system")
            audit.Entity.Add(new AuditEvent.EntityComponent
            {
                Type = new Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
                Role = new Coding("http://terminology.hl7.org/CodeSystem/object-role", "24", "Query"),
                Query = Encoding.UTF8.GetBytes(request.Path + request.QueryString),
            });
        // Break-glass (Security/AccessPolicy): the purpose of use, and the reason as the requester gave it.
        if (request.Headers[AccessPolicy.BreakGlassHeader].ToString() is { Length: > 0 } reason)
        {
            var btg = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ActReason", "BTG", "break the glass") { Text = Truncate(reason, 500) };
            audit.PurposeOfEvent.Add(btg);
            audit.Agent[0].PurposeOfUse.Add(btg);
        }
        return audit;
    }

    static (string, AuditEvent.AuditEventAction) Interaction(string method, bool hasId, string path) => method switch
    {
        "GET" when path.Contains("/_history", StringComparison.Ordinal) => (hasId ? "history-instance" : path == "/_history" ? "history-system" : "history-type", AuditEvent.AuditEventAction.R),
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

    // The client a token request names (Basic header user, or the form's client_id); never the secret.
    static string? LoginClient(HttpRequest request)
    {
        var auth = request.Headers.Authorization.ToString();
        if (auth.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            try { return Encoding.UTF8.GetString(Convert.FromBase64String(auth[6..].Trim())).Split(':')[0]; }
            catch (FormatException) { return null; }
        }
        return request.Query["client_id"].FirstOrDefault(); // an authorization request names its app in the query
    }

    static string Truncate(string s, int max) => s.Length <= max ? s : s[..max];
}

public static class AuditedWrites
{
    /// <summary>The request's write transaction; its commit stores the request's AuditEvent too.</summary>
    /// It carries the requester's write rule and writer key (Security/AccessPolicy) to every write.
    public static async Task<WriteTransaction> BeginAuditedWriteAsync(this HttpContext ctx)
    {
        var policy = await Security.AccessPolicy.OfAsync(ctx, ctx.RequestServices.GetRequiredService<FhirStore>());
        var filter = await policy.FilterAsync();
        var tx = await ctx.RequestServices.GetRequiredService<AuditTrail>().BeginWriteAsync(ctx);
        tx.Writer = policy.WriterKey;
        tx.Guard = policy.CheckWrite;
        tx.ReadFilter = filter;
        return tx;
    }
}

/// <summary>Stores queued AuditEvents in batches (one transaction each) and seals the hash chain.</summary>
public sealed class AuditWriter(AuditTrail trail, FhirStore store, ILogger<AuditWriter> log) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<AuditEvent>();
        var sealEvery = TimeSpan.FromSeconds(1);
        var lastSeal = DateTime.UtcNow;
        while (true)
        {
            try
            {
                using var tick = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                tick.CancelAfter(TimeSpan.FromMilliseconds(200));
                try { if (await trail.Queue.WaitToReadAsync(tick.Token)) while (batch.Count < 500 && trail.Queue.TryRead(out var a)) batch.Add(a); }
                catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested) { }
                if (batch.Count > 0) await StoreAsync(batch);
                if (DateTime.UtcNow - lastSeal > sealEvery || stoppingToken.IsCancellationRequested)
                {
                    while (await store.SealAuditChainAsync(CancellationToken.None) > 0) { }
                    lastSeal = DateTime.UtcNow;
                }
                if (stoppingToken.IsCancellationRequested)
                {
                    while (trail.Queue.TryRead(out var a)) batch.Add(a); // drain on shutdown
                    if (batch.Count > 0) await StoreAsync(batch);
                    await store.SealAuditChainAsync(CancellationToken.None);
                    return;
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                log.LogError(e, "Storing {Count} audit events failed; retrying", batch.Count);
                await Task.Delay(1000, CancellationToken.None);
            }
        }
    }

    async Task StoreAsync(List<AuditEvent> batch)
    {
        await using var tx = await store.BeginWriteAsync(CancellationToken.None);
        foreach (var audit in batch) tx.AppendAudit(AuditTrail.AuditDocument(audit, null), store.Indexer.Extract(audit));
        await tx.CommitAsync(CancellationToken.None);
        batch.Clear();
    }
}

using System.Net;
using System.Text;
using System.Collections.Concurrent;
using Hl7.Fhir.Model;
using Hl7.Fhir.Utility;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Audit;

/// <summary>
/// Every request leaves an AuditEvent (IHE BALP; <see cref="BalpAuditEvents"/> gives its shape): who
/// (client, role, network address, the person), what (interaction, resources or query), about whom (the
/// patient), outcome, when (UTC). An event about a patient's data names that patient and is stored in that
/// patient's compartment (ResourceDocument.Person), so the person can read who accessed their record
/// (ITI-81 style); a request about several patients leaves one event per patient, as BALP recommends. A
/// write's AuditEvents are stored in the write's own transaction; reads, searches, refusals and failures
/// are queued and stored in small batches by <see cref="AuditWriter"/>. AuditEvents are append-only and
/// hash-chained (FhirStore.SealAuditChainAsync / VerifyAuditChainAsync).
/// </summary>
public sealed class AuditTrail(FhirStore store)
{
    const string TransactionsKey = "phrfhir.audit.transactions";
    const string AccountedKey = "phrfhir.audit.accounted";
    const string PatientsKey = "phrfhir.audit.patients";
    const string SubmissionSetKey = "phrfhir.audit.submission-set";
    const string RecordedKey = "phrfhir.audit.recorded-by-endpoint";
    public const string QueryKey = "phrfhir.audit.query";
    const int MaxNamedPatients = 100;
    // Queued events wait in a lock-free queue, counted, and the writer is woken only when a batch is full (else it
    // comes every Gather): the bounded Channel before took a lock on every request's write and on each of the
    // writer's reads, and at 8 clients 3 % of a read's server CPU samples spun on it (docs/performance.md, session 8).
    // The bound stays: past MaxQueued events a request waits for the writer to catch up.
    public const int BatchSize = 500;
    const int MaxQueued = 10_000;
    readonly ConcurrentQueue<AuditEvent> _queue = new();
    readonly SemaphoreSlim _batchFull = new(0);
    int _queued;

    /// <summary>Waits until a batch is full or <paramref name="gather"/> has passed.</summary>
    public Task WaitForBatchAsync(TimeSpan gather, CancellationToken ct) => _batchFull.WaitAsync(gather, ct);

    public bool TryTake(out AuditEvent audit)
    {
        if (!_queue.TryDequeue(out audit!)) return false;
        Interlocked.Decrement(ref _queued);
        return true;
    }

    /// <summary>
    /// Tells the audit trail whose data the request touched (the `person` keys of what it read or found):
    /// endpoints call it once they know, after their access checks.
    /// </summary>
    public static void Concerns(HttpContext ctx, IEnumerable<string?> persons)
    {
        if (ctx.Items[PatientsKey] is not HashSet<string> set) ctx.Items[PatientsKey] = set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in persons) if (p is not null) set.Add(p);
    }

    /// <summary>
    /// What an operation was asked (IHE PIXm/PDQm query entity): the Parameters a POST sent (the query
    /// string of a GET is read from the request), and the identifier that names the patient (PIXm ITI-83's
    /// sourceIdentifier: its patient entity is required to carry it).
    /// </summary>
    public static void Queried(HttpContext ctx, string? query, Identifier? patient = null) =>
        ctx.Items[QueryKey] = new OperationQuery(query, patient);

    /// <summary>The endpoint stored the request's AuditEvents itself (Sharing/LinkAudit): nothing more to record.</summary>
    public static void RecordedByEndpoint(HttpContext ctx) => ctx.Items[RecordedKey] = true;

    /// <summary>The request is an ITI-65 submission of this SubmissionSet (its id is assigned by commit time).</summary>
    public static void SubmitsDocuments(HttpContext ctx, List submissionSet) => ctx.Items[SubmissionSetKey] = submissionSet;

    /// <summary>
    /// A write transaction whose commit also stores the request's AuditEvents (one per patient whose data
    /// it wrote or read). If it never commits — refused, or failed inside the database — the request's
    /// events are written by <see cref="Use"/> instead, with that outcome and the same patients.
    /// </summary>
    public async Task<WriteTransaction> BeginWriteAsync(HttpContext ctx)
    {
        var tx = await store.BeginWriteAsync(ctx.RequestAborted);
        Transactions(ctx).Add(tx);
        tx.BeforeCommit = (t, ct) =>
        {
            var written = t.Written.ToList(); // before the AuditEvents below add themselves
            var audits = new List<AuditEvent>();
            if (ctx.Items[SubmissionSetKey] is List { Id: { } setId })
            {
                var set = "List/" + setId;
                var patient = written.FirstOrDefault(w => w.Key == set).Person ?? written.Select(w => w.Person).FirstOrDefault(p => p is not null);
                audits.Add(BalpAuditEvents.Describe(ctx, new AuditFacts(0, null, [.. written.Select(w => w.Key)], patient, set)));
            }
            else
                foreach (var (patient, keys) in ByPatient(written.Concat(t.Touched)))
                    audits.Add(BalpAuditEvents.Describe(ctx, new AuditFacts(0, null, keys, patient)));
            if (audits.Count == 0) audits.Add(BalpAuditEvents.Describe(ctx, new AuditFacts(0, null, [], null)));
            return t.AppendAuditsAsync([.. audits.Select(Row)], ct);
        };
        return tx;
    }

    /// <summary>
    /// A batch entry failed alone (its transaction rolled back, the batch goes on): its attempt is
    /// recorded now, with the entry's outcome and the patients whose data it reached for.
    /// </summary>
    public async Task EntryFailedAsync(HttpContext ctx, WriteTransaction tx, FhirError error, string? entryKey)
    {
        ((HashSet<WriteTransaction>)(ctx.Items[AccountedKey] ??= new HashSet<WriteTransaction>())).Add(tx);
        var groups = ByPatient(tx.Written.Concat(tx.Touched)).ToList();
        if (groups.Count == 0)
            groups.Add((entryKey?.StartsWith("Patient/", StringComparison.Ordinal) == true ? entryKey[8..] : null, entryKey is null ? [] : [entryKey]));
        foreach (var (patient, keys) in groups)
            await RecordAsync(BalpAuditEvents.Describe(ctx, new AuditFacts(OutcomeOf((int)error.Status), error.Message, keys, patient)));
    }

    static List<WriteTransaction> Transactions(HttpContext ctx) =>
        (List<WriteTransaction>)(ctx.Items[TransactionsKey] ??= new List<WriteTransaction>());

    /// <summary>One group per patient (null: no patient), each with the keys of that patient's resources only.</summary>
    static IEnumerable<(string? Patient, List<string> Keys)> ByPatient(IEnumerable<(string Key, string? Person)> touched) =>
        touched.Distinct().GroupBy(t => t.Person).OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => (g.Key, g.Select(t => t.Key).Distinct().ToList()));

    // A client's error is described as it was answered; our own failure only by its kind (the details,
    // which may quote SQL or data, are in the server log, not in someone's access log).
    static string? Described(Exception? failure) => failure switch
    {
        null => null,
        FhirError fe => fe.Message,
        _ => $"The server failed ({failure.GetType().Name}); nothing was stored.",
    };

    static int OutcomeOf(int status) => status < 400 ? 0 : status < 500 ? 4 : 8;

    /// <summary>
    /// The row an AuditEvent is stored as (fhir.audit_event: ids and meta set here, it never goes through
    /// ResourceWrites), in the compartment of the patient its BALP patient entity names, with the columns the
    /// access log searches (Storage/AuditQuery).
    /// </summary>
    public static AuditRow Row(AuditEvent audit)
    {
        // Milliseconds: what the JSON shows is exactly what the row keeps (and its MAC covers).
        var at = audit.Recorded ?? DateTimeOffset.UtcNow;
        var recorded = new DateTimeOffset(at.UtcTicks - at.UtcTicks % TimeSpan.TicksPerMillisecond, TimeSpan.Zero);
        // Time-ordered (UUIDv7, RFC 9562): each insert lands at the right edge of the unique id index instead of
        // on a random leaf, so a growing trail costs no more to append to (random ids doubled the WAL and the
        // time of every audit COPY and seal on a 2.5 GB database; docs/performance.md).
        audit.Id = Guid.CreateVersion7(recorded).ToString();
        audit.Recorded = recorded;
        audit.Meta ??= new Meta();
        audit.Meta.VersionId = "1";
        audit.Meta.LastUpdated = recorded;
        // A refused request is recorded with what it sent (a query, a client id, a break-glass reason);
        // a control character in it would make the whole batch unstorable (U+0000) or unsafe to display.
        // Every string of the event is in its JSON, where the serializer escapes such a character: a vectorised
        // scan of the bytes says whether the walk over the whole POCO is needed (it was a third of the audit's
        // CPU per read; docs/performance.md "The read row, by phase").
        var json = FhirFormat.Serialize(audit, WireFormat.Json);
        if (ControlCharacters.MayBeIn(json))
        {
            ControlCharacters.Scrub(audit);
            json = FhirFormat.Serialize(audit, WireFormat.Json);
        }
        return new AuditRow(audit.Id, recorded, PatientOf(audit), audit.Type?.System, audit.Type?.Code,
            [.. audit.Subtype.Select(c => $"{c.System}|{c.Code}")],
            audit.Action?.GetLiteral(), audit.Outcome?.GetLiteral(),
            [.. audit.Agent.SelectMany(a => new[] { a.Who?.Reference, a.Who?.Identifier is { } id ? $"{id.System}|{id.Value}" : null }).OfType<string>()],
            [.. audit.Agent.Select(a => a.AltId).OfType<string>()],
            [.. audit.Entity.Select(e => e.What?.Reference).OfType<string>()],
            Encoding.UTF8.GetString(json),
            audit.Annotation<SearchParts>()?.Persons, audit.Annotation<SearchParts>()?.Queries);
    }

    static string? PatientOf(AuditEvent audit) =>
        audit.Entity.FirstOrDefault(e => e.Type?.Code == "1" && e.Role?.Code == "1")?.What?.Reference is { } r
            && ReferenceTarget.Local(r) is { Type: "Patient" } p ? p.Id : null;

    public void Use(WebApplication app) => app.Use(async (ctx, next) =>
    {
        Exception? failure = null;
        try { await next(ctx); }
        catch (Exception e) { failure = e; throw; }
        finally
        {
            // A write transaction that committed stored the request's events; one that did not (refused,
            // or failed in the database: its events rolled back with it) is recorded here.
            var transactions = ctx.Items[TransactionsKey] as List<WriteTransaction> ?? [];
            var accounted = ctx.Items[AccountedKey] as HashSet<WriteTransaction> ?? [];
            var open = transactions.Where(t => !t.Committed && !accounted.Contains(t)).ToList();
            if ((transactions.Count == 0 || open.Count > 0) && ShouldAudit(ctx))
            {
                var status = failure switch { FhirError fe => (int)fe.Status, null => ctx.Response.StatusCode, _ => 500 };
                var keys = ctx.GetRouteValue("type") is string type && ctx.GetRouteValue("id") is string id ? [type + "/" + id] : new List<string>();
                var groups = ByPatient(open.SelectMany(t => t.Written.Concat(t.Touched))).ToList();
                if (groups.Count > 0 || !BalpAuditEvents.IsSearch(ctx))
                {
                    if (groups.Count == 0) groups = [.. Patients(ctx, keys).Select(p => (p, keys))];
                    foreach (var (patient, resources) in groups)
                        await RecordAsync(BalpAuditEvents.Describe(ctx, new AuditFacts(OutcomeOf(status), Described(failure), resources, patient)));
                }
                else
                    await SearchedAsync(ctx, OutcomeOf(status), Described(failure));
            }
        }
    });

    async Task RecordAsync(AuditEvent audit)
    {
        while (Volatile.Read(ref _queued) >= MaxQueued) await Task.Delay(10, CancellationToken.None);
        _queue.Enqueue(audit);
        if (Interlocked.Increment(ref _queued) % BatchSize == 0) _batchFull.Release();
    }

    /// <summary>
    /// A search: one event per patient concerned, each with the query reduced to what concerns that patient
    /// (QueryPerPatient), and then the whole query once, outside every compartment, for the operator. When the
    /// query is reduced for someone (so the operator's event exists), the per-patient events are stored as parts of
    /// the operator's event — one row, one serialisation, one MAC and one chain link per search (Schema/026) — and
    /// served as AuditEvents of their own (BalpAuditEvents.ForPatient).
    /// </summary>
    async Task SearchedAsync(HttpContext ctx, int outcome, string? failure)
    {
        var patients = Patients(ctx, []).OfType<string>().ToList();
        var query = await QueryPerPatient.ReadAsync(ctx, store, patients, MaxNamedPatients);
        patients = [.. patients.Union(query.Identified, StringComparer.Ordinal).Order(StringComparer.Ordinal)];
        // Parts are numbered by a smallint (Schema/026); a search is bounded far below (_count, MaxNamedPatients), but a
        // row that could not be stored would hold up its whole batch: beyond the bound, one row per patient as before.
        if (patients.Count is > 0 and <= MaxParts && patients.Any(query.Reduces))
        {
            var whole = BalpAuditEvents.Describe(ctx, new AuditFacts(outcome, failure, [], null, QueryNote: WholeQueryNote));
            whole.AddAnnotation(new SearchParts(
                [.. patients.Select(ControlCharacters.Scrubbed)],
                [.. patients.Select(p => query.Reduces(p) ? query.For(p) : null)]));
            await RecordAsync(whole);
            return;
        }
        var reduced = false;
        foreach (var patient in patients)
        {
            var part = query.Reduces(patient);
            reduced |= part;
            await RecordAsync(BalpAuditEvents.Describe(ctx, new AuditFacts(outcome, failure, [], patient,
                Query: part ? query.For(patient) : null, QueryNote: part ? ReducedQueryNote : null)));
        }
        if (patients.Count == 0 || reduced)
            await RecordAsync(BalpAuditEvents.Describe(ctx, new AuditFacts(outcome, failure, [], null, QueryNote: reduced ? WholeQueryNote : null)));
    }

    const int MaxParts = 10_000;

    public const string ReducedQueryNote = "Only the parts of the query that concern this patient; the whole query is in the operator's audit trail. (本人に関する検索条件のみ)";
    const string WholeQueryNote = "The whole query of a search about several patients; each patient's own AuditEvent records only the parts naming them. (複数患者の検索条件の全体)";

    /// <summary>A search's per-patient events, carried by its whole-query event to <see cref="Row"/> (AuditRow.PartPerson).</summary>
    sealed record SearchParts(string[] Persons, string?[] Queries);

    /// <summary>
    /// The patients a read, search or refusal was about: what the endpoint reported (the resource read,
    /// the persons of the results), the patient the URL names, the patient/subject a search names. No
    /// patient: one event without one.
    /// </summary>
    static IEnumerable<string?> Patients(HttpContext ctx, List<string> keys)
    {
        var patients = ctx.Items[PatientsKey] as HashSet<string> ?? new HashSet<string>(StringComparer.Ordinal);
        foreach (var key in keys) if (key.StartsWith("Patient/", StringComparison.Ordinal)) patients.Add(key[8..]);
        // Bounded: a query string naming hundreds of ids must not turn one request into hundreds of events
        // (the query entity still records all of them); matches are bounded by _count already.
        if (ctx.Request.Method == "GET" && ctx.GetRouteValue("id") is null) patients.UnionWith(BalpAuditEvents.PatientsNamedBy(ctx.Request).Take(MaxNamedPatients));
        return patients.Count == 0 ? [null] : patients.Order(StringComparer.Ordinal);
    }

    // Discovery, health and published conformance material carry no one's data; token requests are
    // logins and are always recorded.
    static bool ShouldAudit(HttpContext ctx)
    {
        if (ctx.Items[RecordedKey] is true) return false;
        var path = ctx.Request.Path.Value ?? "";
        if (path.StartsWith("/auth/", StringComparison.Ordinal)) return true; // token, authorize, login
        if (path is "/healthz" or "/readyz" or "/metadata" or "/.well-known/smart-configuration") return false;
        return !(ctx.GetEndpoint()?.Metadata.GetMetadata<Microsoft.AspNetCore.Authorization.IAllowAnonymous>() is not null && ctx.Response.StatusCode < 400);
    }
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
        tx.Guard = (current, next, method) =>
        {
            tx.Touched.Add((next.Id, next.Person)); // a refused write is audited in that patient's log too
            policy.CheckWrite(current, next, method);
        };
        tx.ReadFilter = filter;
        tx.BaseUrl = Rest.FhirResponse.BaseUrl(ctx.Request);
        return tx;
    }
}

/// <summary>Stores queued AuditEvents in batches (one transaction each) and seals the hash chain.</summary>
public sealed class AuditWriter(AuditTrail trail, FhirStore store, ILogger<AuditWriter> log) : BackgroundService
{
    /// <summary>How long the first queued event waits for others before the batch is stored.</summary>
    static readonly TimeSpan Gather = TimeSpan.FromMilliseconds(100);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<AuditEvent>();
        var sealEvery = TimeSpan.FromSeconds(1);
        var lastSeal = DateTime.UtcNow;
        while (true)
        {
            try
            {
                // Let a batch gather: storing each event as it came meant one transaction (and WAL flush) per
                // request under load, which doubled ITI-67's latency (bench/PhrFhir.AuditBench).
                try { await trail.WaitForBatchAsync(Gather, stoppingToken); }
                catch (OperationCanceledException) { }
                while (batch.Count < AuditTrail.BatchSize && trail.TryTake(out var a)) batch.Add(a);
                if (batch.Count > 0) await StoreAsync(batch);
                if (DateTime.UtcNow - lastSeal > sealEvery || stoppingToken.IsCancellationRequested)
                {
                    while (await store.SealAuditChainAsync(CancellationToken.None) > 0) { }
                    lastSeal = DateTime.UtcNow;
                }
                if (stoppingToken.IsCancellationRequested)
                {
                    while (trail.TryTake(out var a)) batch.Add(a); // drain on shutdown
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
        await tx.AppendAuditsAsync([.. batch.Select(AuditTrail.Row)], CancellationToken.None);
        await tx.CommitAsync(CancellationToken.None);
        batch.Clear();
    }
}

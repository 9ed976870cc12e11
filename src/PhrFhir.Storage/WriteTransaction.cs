using Npgsql;
using NpgsqlTypes;
using PhrFhir.Storage.Search;

namespace PhrFhir.Storage;

/// <summary>
/// The writes of one FHIR request or one transaction Bundle: one connection, one PostgreSQL
/// transaction. The current documents (in Marten's document table, checking its numeric revisions), the
/// history and index rows go in one batch on that transaction when something must be read back or at
/// commit. Nothing is visible until <see cref="CommitAsync"/>.
/// </summary>
public sealed partial class WriteTransaction : IAsyncDisposable
{
    readonly FhirStore _store;
    readonly NpgsqlConnection _conn;
    readonly NpgsqlTransaction _tx;
    readonly NpgsqlBatch _batch;

    WriteTransaction(FhirStore store, NpgsqlConnection conn, NpgsqlTransaction tx)
    {
        _store = store;
        _conn = conn;
        _tx = tx;
        _batch = new NpgsqlBatch(conn, tx);
    }

    internal static async Task<WriteTransaction> BeginAsync(FhirStore store, CancellationToken ct)
    {
        var conn = await store.DataSource.OpenConnectionAsync(ct);
        try
        {
            var tx = await conn.BeginTransactionAsync(ct);
            return new WriteTransaction(store, conn, tx);
        }
        catch
        {
            await conn.DisposeAsync();
            throw;
        }
    }

    /// <summary>Who writes (the requesting client's actor key): recorded on what it creates (ResourceDocument.Writer).</summary>
    public string? Writer { get; set; }

    /// <summary>
    /// The request's write rule (Security/AccessPolicy): called with the current version the requester
    /// can see (null for a create, and for an id it cannot see), the version about to be written and the
    /// method (POST, PUT — PATCH included — or DELETE), before anything is queued; it throws to refuse.
    /// Every write path (REST, Bundles, MHD) goes through ResourceWrites, which calls it.
    /// </summary>
    public Action<StoredResource?, ResourceDocument, string>? Guard { get; set; }

    /// <summary>
    /// What the requester may see: conditional create/update/delete match only within it, so that
    /// If-None-Exist never answers with (or reveals) a resource the requester could not read.
    /// </summary>
    public AccessFilter? ReadFilter { get; set; }

    /// <summary>
    /// The server's base URL as the request addressed it: an absolute reference under it is a local one
    /// (the registry rules resolve subjects, relatesTo targets and attachment URLs with it).
    /// </summary>
    public string? BaseUrl { get; set; }

    /// <summary>
    /// Keys ("Type/id") a transaction Bundle is yet to write, known once its ids are assigned: a
    /// reference to one resolves although the entry that writes it may come later.
    /// </summary>
    public IReadOnlySet<string> Planned { get; set; } = new HashSet<string>();

    readonly List<Func<CancellationToken, Task>> _deferred = [];

    /// <summary>
    /// A check that needs what a later entry of the transaction writes (a document's bytes, say): run by
    /// <see cref="CommitAsync"/> once everything is written and before anything is committed; it throws to refuse.
    /// </summary>
    public void Defer(Func<CancellationToken, Task> check) => _deferred.Add(check);

    /// <summary>
    /// Serialises writers that must not interleave (conditional create/update with the same criteria),
    /// until this transaction ends. Without it, 16 identical conditional creates racing each other
    /// could each find nothing and each create.
    /// </summary>
    public async Task LockAsync(string key, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("select pg_advisory_xact_lock(hashtextextended($1, 0))", _conn, _tx);
        cmd.Parameters.Add(new() { Value = key });
        try { await cmd.ExecuteNonQueryAsync(ct); }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.DeadlockDetected) { throw LockConflict(); }
    }

    // Two transactions took the same keys in opposite orders (two submissions sharing uniqueIds):
    // PostgreSQL ends one of them; its client is told to retry, not given a 500.
    static FhirError LockConflict() =>
        FhirError.Conflict("Another request was writing the same identifiers at the same time; retry. (他の更新と競合しました)");

    /// <summary>
    /// <see cref="LockAsync"/> and then <see cref="SearchAsync"/>, in one round trip (the MHDS uniqueId checks): the
    /// search is the later statement, so it sees what a writer that held the lock committed.
    /// </summary>
    public async Task<List<StoredResource>> LockAndSearchAsync(string lockKey, SearchQuery q, int limit, CancellationToken ct)
    {
        await FlushBeforeSearchAsync(q, ct);
        await using var batch = new NpgsqlBatch(_conn, _tx);
        FhirStore.Statement(batch, "select pg_advisory_xact_lock(hashtextextended($1, 0))", lockKey);
        var search = new NpgsqlBatchCommand(SearchSql(q, limit));
        FhirStore.Bind(search.Parameters, q);
        batch.BatchCommands.Add(search);
        var found = new List<StoredResource>();
        try
        {
            await using var reader = await batch.ExecuteReaderAsync(ct);
            await reader.NextResultAsync(ct); // past the lock
            while (await reader.ReadAsync(ct)) found.Add(FhirStore.Read(reader));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.DeadlockDetected) { throw LockConflict(); }
        return found;
    }

    /// <summary>Current version inside this transaction, including this transaction's own earlier writes.</summary>
    public async Task<StoredResource?> ReadAsync(string type, string id, CancellationToken ct)
    {
        var key = ResourceDocument.Key(type, id);
        await FlushForAsync(p => p.Doc.Id == key, ct);
        await using var cmd = new NpgsqlCommand(
            $"select {FhirStore.DocColumns} from fhir.mt_doc_resourcedocument d where d.id = $1",
            _conn, _tx);
        cmd.Parameters.Add(new() { Value = key });
        var found = (await FhirStore.ReadAll(cmd, ct)).FirstOrDefault();
        if (found is not null) Touched.Add((found.Key, found.Person));
        return found;
    }

    /// <summary>
    /// The current version (null when there is none) and whether the requester may see it (<see cref="ReadFilter"/>), in
    /// one statement inside this transaction.
    /// </summary>
    public async Task<(StoredResource? Found, bool Visible)> ReadVisibleAsync(string type, string id, CancellationToken ct)
    {
        var key = ResourceDocument.Key(type, id);
        // The filter may look at other resources' rows (a Binary is seen through the document naming it): all must be written.
        if (ReadFilter is null) await FlushForAsync(p => p.Doc.Id == key, ct);
        else await FlushAsync(ct);
        await using var cmd = new NpgsqlCommand(
            $"select {FhirStore.DocColumns}, {(ReadFilter is { } filter ? filter.Render(2) : "true")} from fhir.mt_doc_resourcedocument d where d.id = $1",
            _conn, _tx);
        cmd.Parameters.Add(new() { Value = key });
        foreach (var a in ReadFilter?.Args ?? []) cmd.Parameters.Add(new() { Value = a });
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct)) return (null, false);
        var found = FhirStore.Read(reader);
        Touched.Add((found.Key, found.Person));
        return (found, reader.GetBoolean(8));
    }

    /// <summary>
    /// What the requester's criteria match inside this transaction (conditional create/update/delete):
    /// the query carries the filter it was built with (<see cref="ReadFilter"/> for the request's criteria).
    /// </summary>
    public async Task<List<StoredResource>> SearchAsync(SearchQuery q, int limit, CancellationToken ct)
    {
        await FlushBeforeSearchAsync(q, ct);
        await using var cmd = new NpgsqlCommand(SearchSql(q, limit), _conn, _tx);
        FhirStore.Bind(cmd, q);
        return await FhirStore.ReadAll(cmd, ct);
    }

    static string SearchSql(SearchQuery q, int limit) =>
        $"select {FhirStore.DocColumns} from fhir.mt_doc_resourcedocument d " +
        $"where d.resource_type = $1 and not d.deleted{q.WhereSql} order by d.id limit {limit}";

    // Without a filter or a chain the statement reads rows of q's type only (its documents, their index rows).
    Task FlushBeforeSearchAsync(SearchQuery q, CancellationToken ct) =>
        q.Filter is not null || q.ReadsOtherResources ? FlushAsync(ct) : FlushForAsync(p => p.Doc.ResourceType == q.ResourceType, ct);

    /// <summary>
    /// Queues a new version. <paramref name="previousVersion"/> is the version this write replaces
    /// (0 for a create): the write is refused at flush if another writer got there first.
    /// </summary>
    public void Write(ResourceDocument doc, int previousVersion, string method, IndexRows? rows)
    {
        Written.Add((doc.Id, doc.Person));
        if (doc.Deleted) _binariesWritten.Remove(doc.Id);
        // Other server processes learn at commit that a watched type changed (FhirStore.ListenAsync).
        if (_store.Watched.Contains(doc.ResourceType) && _notified.Add(doc.ResourceType))
            Add("select pg_notify($1, $2)", FhirStore.ChangeChannel, doc.ResourceType);
        if (_store.Outboxed.ContainsKey(doc.ResourceType)) RecordChange(doc, method); // Subscriptions: in the write's transaction
        // Nothing is sent yet: FlushAsync writes every version queued since the last flush with one statement
        // for the documents and their history rows and one per index table, whatever their number (issue #12).
        _pending.Add(new Pending(doc, previousVersion, method, rows));
    }

    sealed record Pending(ResourceDocument Doc, int PreviousVersion, string Method, IndexRows? Rows);

    readonly List<Pending> _pending = [];

    /// <summary>Index rows queued but not yet sent (identity checks look at them: WriteTransaction.Identity).</summary>
    IEnumerable<(string Key, IndexRows Rows)> PendingRows => _pending.Where(p => p.Rows is not null).Select(p => (p.Doc.Id, p.Rows!));

    /// <summary>Keys whose rows in the database are about to be replaced (an update or deletion is queued).</summary>
    string[] PendingReplacedKeys => [.. _pending.Where(p => p.PreviousVersion != 0).Select(p => p.Doc.Id)];

    // The current document (in the table Marten created, with the JSON shape Marten gave a ResourceDocument and
    // its numeric revision = version) and the history row, from one set of arrays: the JSON is sent once.
    const string Versions =
        "with u as (select * from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::bool[], $8::text[], $9::text[]) " +
        "as u(id, version, resource_type, person, writer, last_updated, deleted, method, json)), " +
        "h as (insert into fhir.resource_history (rkey, version, resource_type, person, last_updated, deleted, method, json) " +
        "select id, version, resource_type, person, last_updated, deleted, method, json from u) ";
    const string DocumentData =
        "jsonb_build_object('id', u.id, 'json', u.json, 'person', u.person, 'writer', u.writer, 'deleted', u.deleted, 'version', u.version, " +
        "'lastUpdated', u.last_updated, 'resourceType', u.resource_type)";
    const string InsertDocuments = Versions +
        "insert into fhir.mt_doc_resourcedocument (id, data, mt_version, mt_dotnet_type, mt_last_modified, resource_type, person, writer, last_updated, deleted) " +
        "select u.id, " + DocumentData + ", u.version, 'PhrFhir.Storage.ResourceDocument', transaction_timestamp(), u.resource_type, u.person, u.writer, u.last_updated, u.deleted from u";
    // The revision check: only the version this write replaces is updated; a row another writer changed
    // meanwhile is not (PostgreSQL re-checks the condition after waiting for its lock), and the count tells.
    const string UpdateDocuments = Versions +
        "update fhir.mt_doc_resourcedocument d set data = " + DocumentData + ", mt_version = u.version, mt_last_modified = transaction_timestamp(), " +
        "person = u.person, writer = u.writer, last_updated = u.last_updated, deleted = u.deleted from u where d.id = u.id and d.mt_version = u.version - 1";
    const string DeleteIndexRows =
        "with s as (delete from fhir.ix_string where rkey = any($1)), t as (delete from fhir.ix_token where rkey = any($1)), " +
        "r as (delete from fhir.ix_reference where rkey = any($1)), d as (delete from fhir.ix_date where rkey = any($1)), " +
        "n as (delete from fhir.ix_number where rkey = any($1)) delete from fhir.ix_uri where rkey = any($1)";

    /// <summary>Sends the queued versions first, then what else was queued (outbox, notifications, audit rows), in one batch.</summary>
    NpgsqlBatchCommand? QueuePending()
    {
        if (_pending.Count == 0) return null;
        var queued = Enumerable.ToList<NpgsqlBatchCommand>(_batch.BatchCommands);
        _batch.BatchCommands.Clear();
        void Versions(string sql, List<Pending> docs) =>
            Add(sql, docs.Select(p => p.Doc.Id).ToArray(), docs.Select(p => p.Doc.Version).ToArray(), docs.Select(p => p.Doc.ResourceType).ToArray(),
                docs.Select(p => p.Doc.Person).ToArray(), docs.Select(p => p.Doc.Writer).ToArray(), docs.Select(p => p.Doc.LastUpdated.UtcDateTime).ToArray(),
                docs.Select(p => p.Doc.Deleted).ToArray(), docs.Select(p => p.Method).ToArray(), docs.Select(p => p.Doc.Json).ToArray());
        var creates = _pending.Where(p => p.PreviousVersion == 0).ToList();
        var updates = _pending.Where(p => p.PreviousVersion != 0).ToList();
        if (creates.Count > 0) Versions(InsertDocuments, creates);
        NpgsqlBatchCommand? update = null;
        if (updates.Count > 0)
        {
            Versions(UpdateDocuments, updates);
            update = _batch.BatchCommands[^1];
            Add(DeleteIndexRows, (object)updates.Select(p => p.Doc.Id).ToArray()); // one argument, not params
        }
        IndexRowsOf([.. _pending.Where(p => p.Rows is not null).Select(p => (p.Doc.Id, p.Doc.Person, p.Doc.Writer, p.Rows!))]);
        _updatesExpected = updates.Count;
        _pending.Clear();
        foreach (var cmd in queued) _batch.BatchCommands.Add(cmd);
        return update;
    }

    int _updatesExpected;

    /// <summary>
    /// The index rows of several resources, one statement per index table whatever their number.
    /// </summary>
    internal void IndexRowsOf(IReadOnlyList<(string Key, string? Person, string? Writer, IndexRows Rows)> docs)
    {
        // Each row carries its resource's key, person and writer (access filters read them on the index
        // rows: AccessFilter.IndexSql): unnest walks all the arrays in step.
        (string[] Keys, string?[] Persons, string?[] Writers) Owners<T>(Func<IndexRows, List<T>> rowsOf) =>
            (docs.SelectMany(d => rowsOf(d.Rows).Select(_ => d.Key)).ToArray(), docs.SelectMany(d => rowsOf(d.Rows).Select(_ => d.Person)).ToArray(),
             docs.SelectMany(d => rowsOf(d.Rows).Select(_ => d.Writer)).ToArray());
        IEnumerable<T> All<T>(Func<IndexRows, List<T>> rowsOf) => docs.SelectMany(d => rowsOf(d.Rows));

        if (docs.Any(d => d.Rows.Strings.Count > 0))
        {
            var (keys, persons, writers) = Owners(r => r.Strings);
            Add("insert into fhir.ix_string (rkey, person, writer, param, norm, exact) select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])",
                keys, persons, writers, All(r => r.Strings).Select(r => r.Param).ToArray(), All(r => r.Strings).Select(r => r.Norm).ToArray(), All(r => r.Strings).Select(r => r.Exact).ToArray());
        }
        if (docs.Any(d => d.Rows.Tokens.Count > 0))
        {
            var (keys, persons, writers) = Owners(r => r.Tokens);
            var t = All(r => r.Tokens).ToList();
            Add("insert into fhir.ix_token (rkey, person, writer, param, system, code, display, type_system, type_code) select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
                keys, persons, writers, t.Select(r => r.Param).ToArray(), t.Select(r => r.System).ToArray(), t.Select(r => r.Code).ToArray(),
                t.Select(r => r.Display).ToArray(), t.Select(r => r.TypeSystem).ToArray(), t.Select(r => r.TypeCode).ToArray());
        }
        if (docs.Any(d => d.Rows.References.Count > 0))
        {
            var (keys, persons, writers) = Owners(r => r.References);
            var t = All(r => r.References).ToList();
            Add("insert into fhir.ix_reference (rkey, person, writer, param, target, target_id) select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])",
                keys, persons, writers, t.Select(r => r.Param).ToArray(), t.Select(r => r.Target).ToArray(), t.Select(r => r.TargetId).ToArray());
        }
        if (docs.Any(d => d.Rows.Dates.Count > 0))
        {
            var (keys, persons, writers) = Owners(r => r.Dates);
            var t = All(r => r.Dates).ToList();
            Add("insert into fhir.ix_date (rkey, person, writer, param, low, high) select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[])",
                keys, persons, writers, t.Select(r => r.Param).ToArray(), t.Select(r => Clamp(r.Low)).ToArray(), t.Select(r => Clamp(r.High)).ToArray());
        }
        if (docs.Any(d => d.Rows.Numbers.Count > 0))
        {
            var (keys, persons, writers) = Owners(r => r.Numbers);
            var t = All(r => r.Numbers).ToList();
            Add("insert into fhir.ix_number (rkey, person, writer, param, value, system, code) select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::text[])",
                keys, persons, writers, t.Select(r => r.Param).ToArray(), t.Select(r => r.Value).ToArray(), t.Select(r => r.System).ToArray(), t.Select(r => r.Code).ToArray());
        }
        if (docs.Any(d => d.Rows.Uris.Count > 0))
        {
            var (keys, persons, writers) = Owners(r => r.Uris);
            var t = All(r => r.Uris).ToList();
            Add("insert into fhir.ix_uri (rkey, person, writer, param, uri) select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
                keys, persons, writers, t.Select(r => r.Param).ToArray(), t.Select(r => r.Uri).ToArray());
        }
    }

    // Open-ended periods are stored as ±infinity so range comparisons stay simple.
    static DateTime Clamp(DateTimeOffset v) =>
        v == DateTimeOffset.MinValue ? DateTime.MinValue : v == DateTimeOffset.MaxValue ? DateTime.MaxValue : v.UtcDateTime;

    NpgsqlBatchCommand Add(string sql, params object?[] args)
    {
        var cmd = new NpgsqlBatchCommand(sql);
        foreach (var a in args) cmd.Parameters.Add(new NpgsqlParameter { Value = a ?? DBNull.Value });
        _batch.BatchCommands.Add(cmd);
        return cmd;
    }

    /// <summary>
    /// Writes everything queued so far (so later reads in this transaction see it) without committing, in one
    /// round trip. A lost revision race or a duplicate key becomes 412: another writer changed the resource first.
    /// </summary>
    public async Task FlushAsync(CancellationToken ct) => await FlushAsync(committing: false, ct);

    /// <summary>
    /// Writes what is queued; <paramref name="committing"/>: and commits. When nothing queued is an update or deletion,
    /// the <c>commit</c> goes in the same batch as the writes (one round trip less per create, issue #12): the batch is
    /// one extended-protocol sequence up to its Sync, so when a statement fails PostgreSQL skips the rest, the commit
    /// included, and the transaction is rolled back as before. An update's revision check is read from the batch's
    /// result, so its commit waits for that result. Answers whether it committed.
    /// </summary>
    async Task<bool> FlushAsync(bool committing, CancellationToken ct)
    {
        var update = QueuePending();
        if (_batch.BatchCommands.Count == 0) return false;
        if (update is null && Enumerable.All<NpgsqlBatchCommand>(_batch.BatchCommands, c => Appends(c.CommandText))) PlannedGenerically(_batch, committing);
        var commits = committing && update is null;
        if (commits) _batch.BatchCommands.Add(new NpgsqlBatchCommand("commit"));
        try
        {
            await _batch.ExecuteNonQueryAsync(ct);
        }
        catch (Exception e) when (IsUniqueViolation(e))
        {
            // Two creates of one id, or two updates of one version (their history rows share a key).
            throw FhirError.PreconditionFailed("The resource was created by another request at the same time; read it again and retry. (他の更新と競合しました)");
        }
        finally
        {
            _batch.BatchCommands.Clear();
        }
        if (update is not null && update.RecordsAffected != _updatesExpected)
            throw FhirError.PreconditionFailed("The resource was changed by another request at the same time; read it again and retry. (他の更新と競合しました)");
        return commits;
    }

    /// <summary>
    /// Our own write statements (inserts from arrays, probes by key: their best plan does not depend on their values)
    /// are planned once per connection and statement — a generic plan — while the request pool plans every statement
    /// for its values for the searches' sake (FhirStore.ForRequests). Planning them for their values cost PostgreSQL
    /// 0.6 ms per POST /Patient, a third of executing them (docs/performance.md, "Creates and transactions").
    /// The batch sets it for its own statements and sets it back after them, unless the transaction ends with it, so
    /// that a search later in the transaction (a conditional create's) is planned for its values as before.
    /// </summary>
    /// <remarks>
    /// Only for statements whose best plan cannot depend on how big the tables are — rows given in the statement
    /// inserted, notifications (FlushAsync checks; the outbox's look at the Subscriptions is a search). A generic plan is made once per connection
    /// with the statistics of that moment and kept: made while a table is small it scans the table, and keeps scanning as
    /// it grows until the next ANALYZE. That is what the identity check did while the bench seeded 10,000 Patients into an
    /// empty database (2,800 buffers and 3.2 ms per check instead of 3 buffers: seeding took twice as long), so searches,
    /// updates and deletes are planned for their values, as every other statement of a request connection.
    /// </remarks>
    static void PlannedGenerically(NpgsqlBatch batch, bool last)
    {
        batch.BatchCommands.Insert(0, new NpgsqlBatchCommand("set local plan_cache_mode = force_generic_plan"));
        if (!last) batch.BatchCommands.Add(new NpgsqlBatchCommand("set local plan_cache_mode = force_custom_plan"));
    }

    /// <summary>
    /// Flushes before a read unless nothing queued can change what it reads: no statement is queued besides the
    /// versions, and none of those is <paramref name="seenByRead"/>. An ITI-65's registry checks read the
    /// Patient and other types' identifiers while its SubmissionSet is queued: its versions then go in one flush,
    /// one statement per table, instead of one flush per check (issue #12). A refusal at flush (412) is the same,
    /// only later in the same transaction.
    /// </summary>
    async Task FlushForAsync(Func<Pending, bool> seenByRead, CancellationToken ct)
    {
        if (_batch.BatchCommands.Count == 0 && !_pending.Any(seenByRead)) return;
        await FlushAsync(ct);
    }

    static bool Appends(string sql) =>
        sql == InsertDocuments || sql.StartsWith("insert into ", StringComparison.Ordinal) || sql.StartsWith("select pg_notify(", StringComparison.Ordinal);

    static bool IsUniqueViolation(Exception e) =>
        e is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation }
        || e.InnerException is { } inner && IsUniqueViolation(inner);

    readonly HashSet<string> _notified = [];

    public async Task CommitAsync(CancellationToken ct)
    {
        foreach (var check in _deferred) await check(ct);
        _deferred.Clear();
        if (BeforeCommit is { } hook)
        {
            BeforeCommit = null;
            await hook(this, ct);
        }
        var outbox = RecordChanges(); // Subscriptions: last, once everything is written
        if (!await FlushAsync(committing: true, ct)) await _tx.CommitAsync(ct);
        Committed = true;
        // This process learns synchronously, before the request is answered: a revoked Consent is
        // never served from a cache by the next request.
        foreach (var type in _notified) _store.RaiseChanged(type);
        if (outbox is { RecordsAffected: > 0 }) _store.RaiseChanged(SubscriptionStore.OutboxSignal);
    }

    public async ValueTask DisposeAsync()
    {
        await _batch.DisposeAsync();
        await _tx.DisposeAsync(); // rolls back unless committed
        await _conn.DisposeAsync();
    }
}

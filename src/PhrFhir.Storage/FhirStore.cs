using System.Reflection;
using JasperFx;
using Marten;
using Npgsql;
using NpgsqlTypes;
using PhrFhir.Storage.Search;
using Weasel.Core;

namespace PhrFhir.Storage;

/// <summary>
/// The one place that talks to PostgreSQL: Marten holds the current version of each resource (numeric
/// revisions give optimistic concurrency); plain SQL beside it owns the history and search index tables
/// and answers searches. Every write of a request runs in one database transaction (<see cref="WriteTransaction"/>).
/// </summary>
public sealed partial class FhirStore : IAsyncDisposable
{
    public const string Schema = "fhir";
    const string Docs = "fhir.mt_doc_resourcedocument";
    internal const string DocColumns = "d.resource_type, d.id, d.mt_version, d.last_updated, d.deleted, d.data->>'json', d.person, d.writer";

    /// <summary>
    /// The pool every request uses. Its connections go back to the pool as they are, without Npgsql's reset
    /// (seven statements piggybacked on the next use): nothing that runs on them leaves session state behind.
    /// Session-level work (LISTEN, session advisory locks, the schema migration) runs on <see cref="Sessions"/>.
    /// </summary>
    public NpgsqlDataSource DataSource { get; }

    /// <summary>
    /// Connections that hold session state — the change LISTEN, the session advisory locks of the subscription
    /// deliverer, the client registration and the migration — unpooled: closing one ends its session, which
    /// releases its locks and listeners at once (a pooled one would keep them until its next use), and none of
    /// it can reach a request's connection. They are few and long-lived, so opening them costs nothing that counts.
    /// </summary>
    public NpgsqlDataSource Sessions { get; }

    public DocumentStore Marten { get; }
    public SearchParameters SearchParameters { get; }
    public SearchIndexer Indexer { get; }

    FhirStore(NpgsqlDataSource dataSource, NpgsqlDataSource sessions, DocumentStore marten, SearchParameters parameters)
    {
        DataSource = dataSource;
        Sessions = sessions;
        Marten = marten;
        SearchParameters = parameters;
        Indexer = new SearchIndexer(parameters);
    }

    /// <summary>
    /// Opens the store on one connection pool shared with Marten, and brings the schema up to date
    /// in an explicit step (Marten's document table, then our numbered scripts). After that Marten
    /// never touches the schema again (AutoCreate.None).
    /// </summary>
    public static async Task<FhirStore> OpenAsync(string connectionString, SearchParameters parameters, CancellationToken ct, AuditChain? auditChain = null)
    {
        var csb = new NpgsqlConnectionStringBuilder(connectionString);
        if (csb.MaxAutoPrepare == 0) csb.MaxAutoPrepare = 200; // search SQL repeats: prepare it
        csb.AutoPrepareMinUsages = 2;
        var sessions = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(csb.ConnectionString) { Pooling = false }.ConnectionString);
        var dataSource = NpgsqlDataSource.Create(ForRequests(csb).ConnectionString);
        await MigrateAsync(sessions, ct);
        var marten = DocumentStore.For(o => Configure(o, dataSource, AutoCreate.None));
        return new FhirStore(dataSource, sessions, marten, parameters) { _auditChain = auditChain };
    }

    /// <summary>
    /// The request pool's settings: no reset on return to the pool (docs/performance.md, "The connection
    /// reset"), and every statement planned for its own values, set once per connection instead of a
    /// <c>set</c> before each search (a search's best starting set depends on its values: status=current
    /// matches most documents, patient=… a few; the generic plan of a prepared statement guesses from averages).
    /// </summary>
    internal static NpgsqlConnectionStringBuilder ForRequests(NpgsqlConnectionStringBuilder csb) =>
        new(csb.ConnectionString)
        {
            NoResetOnClose = true,
            Options = $"{csb.Options} -c plan_cache_mode=force_custom_plan".TrimStart(),
        };

    /// <summary>Drops every pooled connection (the embedded PostgreSQL restarted: they are dead).</summary>
    public void ClearPools()
    {
        DataSource.Clear();
        Sessions.Clear();
    }

    static void Configure(StoreOptions o, NpgsqlDataSource dataSource, AutoCreate autoCreate)
    {
        o.Connection(dataSource);
        o.DatabaseSchemaName = Schema;
        o.AutoCreateSchemaObjects = autoCreate;
        o.UseSystemTextJsonForSerialization(EnumStorage.AsString, Casing.CamelCase);
        o.Schema.For<ResourceDocument>()
            .UseNumericRevisions(true)
            .Duplicate(x => x.ResourceType, "text", NpgsqlDbType.Text, notNull: true)
            .Duplicate(x => x.Person!)
            .Duplicate(x => x.Writer!)
            .Duplicate(x => x.LastUpdated, "timestamptz", NpgsqlDbType.TimestampTz, notNull: true)
            // Marten drops every index named mt_… on its tables that it was not told about: without this, the covering
            // index of Schema/005 (recreated by 023) was gone after the first restart.
            .IgnoreIndex("mt_doc_resourcedocument_access");
        // `deleted` is a column without an index of its own (Duplicate would add one): every statement asks for
        // `not deleted` of rows found by key or by the index tables, and nothing ever looks rows up by it, while every
        // create paid for an index entry (issue #12). Marten drops the index it made before at the next start.
        o.Policies.ForAllDocuments(m =>
        {
            if (m.DocumentType == typeof(ResourceDocument)) m.DuplicateField(nameof(ResourceDocument.Deleted), "boolean", notNull: true);
        });
    }

    static async Task MigrateAsync(NpgsqlDataSource dataSource, CancellationToken ct)
    {
        await using (var conn = await dataSource.OpenConnectionAsync(ct))
        {
            // One migrator at a time, even with several server processes starting together.
            await using var lockCmd = new NpgsqlCommand("select pg_advisory_lock(7262019)", conn);
            await lockCmd.ExecuteNonQueryAsync(ct);
            try
            {
                var marten = DocumentStore.For(o => Configure(o, dataSource, AutoCreate.CreateOrUpdate));
                await marten.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
                await marten.DisposeAsync();

                await Exec(conn, "create table if not exists fhir.schema_scripts (name text primary key, applied timestamptz not null default now())", ct);
                var asm = typeof(FhirStore).Assembly;
                foreach (var name in asm.GetManifestResourceNames().Where(n => n.EndsWith(".sql", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
                {
                    await using var check = new NpgsqlCommand("select 1 from fhir.schema_scripts where name = $1", conn) { Parameters = { new() { Value = name } } };
                    if (await check.ExecuteScalarAsync(ct) is not null) continue;
                    await using var tx = await conn.BeginTransactionAsync(ct);
                    await using (var stream = asm.GetManifestResourceStream(name)!)
                    using (var reader = new StreamReader(stream))
                        await Exec(conn, await reader.ReadToEndAsync(ct), ct, tx);
                    await using var mark = new NpgsqlCommand("insert into fhir.schema_scripts(name) values ($1)", conn, tx) { Parameters = { new() { Value = name } } };
                    await mark.ExecuteNonQueryAsync(ct);
                    await tx.CommitAsync(ct);
                }
            }
            finally
            {
                await Exec(conn, "select pg_advisory_unlock(7262019)", CancellationToken.None);
            }
        }
    }

    static async Task Exec(NpgsqlConnection conn, string sql, CancellationToken ct, NpgsqlTransaction? tx = null)
    {
        await using var cmd = new NpgsqlCommand(sql, conn, tx) { CommandTimeout = 0 };
        await cmd.ExecuteNonQueryAsync(ct);
    }

    public Task<WriteTransaction> BeginWriteAsync(CancellationToken ct) => WriteTransaction.BeginAsync(this, ct);

    // ---- change notification (caches of rarely written types, e.g. Consents) ----------------------

    internal const string ChangeChannel = "phrfhir_changed";

    /// <summary>
    /// Announced like a watched type's name when fhir.person_link changes (Patient/$link, $unlink, $merge): no
    /// resource type is spelled so. Add it to <see cref="Watched"/> to hear it again after a reconnection.
    /// </summary>
    public const string PersonLinksChanged = "person_link";

    /// <summary>Resource types whose writes are announced: at commit to this process, and by NOTIFY to every process.</summary>
    public HashSet<string> Watched { get; } = [];

    /// <summary>
    /// Resource types some SubscriptionTopic watches, each with the topics' canonical URLs: a version written
    /// goes to the Subscriptions outbox, in the same transaction, when a Subscription to one of them is live
    /// (SubscriptionStore, WriteTransaction.RecordChanges).
    /// </summary>
    public Dictionary<string, string[]> Outboxed { get; } = [];

    /// <summary>A watched type was written and committed (here, or by another process sharing the database).</summary>
    public event Action<string>? Changed;

    internal void RaiseChanged(string type) => Changed?.Invoke(type);

    /// <summary>
    /// Listens for other processes' commits of watched types (PostgreSQL LISTEN) until cancelled,
    /// reconnecting after failures; each reconnection also raises <see cref="Changed"/> for every
    /// watched type, since notifications sent while disconnected are lost.
    /// </summary>
    public async Task ListenAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await using var conn = await Sessions.OpenConnectionAsync(ct);
                conn.Notification += (_, e) => RaiseChanged(e.Payload);
                await using (var listen = new NpgsqlCommand($"listen {ChangeChannel}", conn)) await listen.ExecuteNonQueryAsync(ct);
                foreach (var type in Watched) RaiseChanged(type);
                while (!ct.IsCancellationRequested) await conn.WaitAsync(ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
            catch (Exception) when (!ct.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), ct).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }
    }

    /// <summary>
    /// The database cannot be reached right now, and the request may be retried: a failed or broken
    /// connection, a timeout, or PostgreSQL shutting down, in crash recovery or out of connections
    /// (SQLSTATE classes 08, 57P and 53). Marten wraps Npgsql's exceptions, hence the walk inwards.
    /// </summary>
    public static bool IsUnavailable(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is PostgresException pg)
                return pg.SqlState.StartsWith("08", StringComparison.Ordinal) || pg.SqlState.StartsWith("57P", StringComparison.Ordinal)
                    || pg.SqlState.StartsWith("53", StringComparison.Ordinal);
            if (e is NpgsqlException { IsTransient: true }) return true;
        }
        return false;
    }

    public async Task<bool> PingAsync(CancellationToken ct)
    {
        try
        {
            await using var cmd = DataSource.CreateCommand("select 1");
            return await cmd.ExecuteScalarAsync(ct) is 1;
        }
        catch (NpgsqlException) { return false; }
    }

    // ---- reads -------------------------------------------------------------------------------

    /// <summary>The current version (possibly a deletion marker), or null if the resource never existed.</summary>
    public async Task<StoredResource?> ReadAsync(string type, string id, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand($"select {DocColumns} from {Docs} d where d.id = $1");
        cmd.Parameters.Add(new() { Value = ResourceDocument.Key(type, id) });
        return (await ReadAll(cmd, ct)).FirstOrDefault();
    }

    public async Task<StoredResource?> ReadVersionAsync(string type, string id, int version, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "select resource_type, rkey, version, last_updated, deleted, json, person, null from fhir.resource_history where rkey = $1 and version = $2");
        cmd.Parameters.Add(new() { Value = ResourceDocument.Key(type, id) });
        cmd.Parameters.Add(new() { Value = version });
        return (await ReadAll(cmd, ct)).FirstOrDefault();
    }

    /// <summary>
    /// The local keys of the Practitioner, PractitionerRole and Organization resources an actor
    /// identifier ("system|value") names, and of the Groups that have one of them as a member.
    /// </summary>
    public async Task<List<string>> ActorKeysAsync(string actor, CancellationToken ct)
    {
        var bar = actor.IndexOf('|');
        await using var cmd = DataSource.CreateCommand(
            "with me as (select rkey from fhir.ix_token where param in ('Practitioner.identifier', 'PractitionerRole.identifier', 'Organization.identifier') " +
            "and system = $1 and code = $2) " +
            "select rkey from me union select rkey from fhir.ix_reference where param = 'Group.member' and target in (select rkey from me)");
        cmd.Parameters.Add(new() { Value = bar < 0 ? "" : actor[..bar] });
        cmd.Parameters.Add(new() { Value = bar < 0 ? actor : actor[(bar + 1)..] });
        var keys = new List<string>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) keys.Add(reader.GetString(0));
        return keys;
    }

    /// <summary>
    /// The Patient a person's identifier ("system|value") names, when several may carry it: one written by
    /// one of <paramref name="trustedWriters"/> first, then the one registered first (its first version's
    /// time), then by id. Null when no current Patient has the identifier. Decides which Patient a
    /// person's token is bound to (Security/PersonCompartment), so a Patient someone else creates later
    /// with the same identifier cannot take the person's place.
    /// </summary>
    public async Task<string?> RegisteredPatientAsync(string identifier, string[] trustedWriters, CancellationToken ct)
    {
        var bar = identifier.IndexOf('|');
        await using var cmd = DataSource.CreateCommand(
            $"select d.id from {Docs} d where d.resource_type = 'Patient' and not d.deleted " +
            "and d.id in (select rkey from fhir.ix_token where param = 'Patient.identifier' and system = $1 and code = $2) " +
            "order by coalesce(d.writer = any($3), false) desc, (select min(h.last_updated) from fhir.resource_history h where h.rkey = d.id), d.id limit 1");
        cmd.Parameters.Add(new() { Value = bar < 0 ? "" : identifier[..bar] });
        cmd.Parameters.Add(new() { Value = bar < 0 ? identifier : identifier[(bar + 1)..] });
        cmd.Parameters.Add(new() { Value = trustedWriters });
        return await cmd.ExecuteScalarAsync(ct) is string key ? key["Patient/".Length..] : null;
    }

    /// <summary>Current, undeleted resources of one type (of one person when given), at most <paramref name="limit"/>.</summary>
    public async Task<List<StoredResource>> CurrentOfTypeAsync(string type, string? person, int limit, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            $"select {DocColumns} from {Docs} d where d.resource_type = $1 and not d.deleted" + (person is null ? "" : " and d.person = $2") + $" limit {limit}");
        cmd.Parameters.Add(new() { Value = type });
        if (person is not null) cmd.Parameters.Add(new() { Value = person });
        return await ReadAll(cmd, ct);
    }

    /// <summary>True when the resource's current row passes the request's access filter.</summary>
    public async Task<bool> VisibleAsync(string key, AccessFilter filter, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand();
        cmd.CommandText = $"select exists(select 1 from {Docs} d where d.id = $1 and ({filter.Render(2)}))";
        cmd.Parameters.Add(new() { Value = key });
        foreach (var a in filter.Args) cmd.Parameters.Add(new() { Value = a });
        return await cmd.ExecuteScalarAsync(ct) is true;
    }

    /// <summary>
    /// History newest first: of one resource, of a type, or of everything (type and id null). With a
    /// filter, only versions of resources whose current row passes it.
    /// </summary>
    public async Task<(List<StoredResource> Page, int Total)> HistoryAsync(
        string? type, string? id, DateTimeOffset? since, int count, int offset, CancellationToken ct, AccessFilter? filter = null)
    {
        var where = new List<string>();
        var args = new List<object>();
        if (filter is not null)
        {
            where.Add($"exists(select 1 from {Docs} d where d.id = h.rkey and ({filter.Render(args.Count + 1)}))");
            args.AddRange(filter.Args);
        }
        if (id is not null) { args.Add(ResourceDocument.Key(type!, id)); where.Add($"rkey = ${args.Count}"); }
        else if (type is not null) { args.Add(type); where.Add($"resource_type = ${args.Count}"); }
        if (since is { } s) { args.Add(s.ToUniversalTime()); where.Add($"last_updated >= ${args.Count}"); }
        var condition = where.Count == 0 ? "" : " where " + string.Join(" and ", where);

        await using var countCmd = DataSource.CreateCommand("select count(*) from fhir.resource_history h" + condition);
        foreach (var a in args) countCmd.Parameters.Add(new() { Value = a });
        var total = Convert.ToInt32(await countCmd.ExecuteScalarAsync(ct));

        await using var cmd = DataSource.CreateCommand(
            $"select resource_type, rkey, version, last_updated, deleted, json, person, null from fhir.resource_history h{condition} order by last_updated desc, rkey, version desc limit {count} offset {offset}");
        foreach (var a in args) cmd.Parameters.Add(new() { Value = a });
        return (await ReadAll(cmd, ct), total);
    }

    /// <summary>
    /// A page of matches (<c>_count</c> + 1 rows are read, so the next link is known) and a total as the
    /// query's <see cref="TotalMode"/> asks (docs/storage.md, "Totals"): by default counted only up to
    /// <see cref="SearchQuery.CountedTotalLimit"/> matches, in the page's own statement, and left out beyond
    /// that; exactly with <c>_total=accurate</c> (and <c>estimate</c>, <c>_summary=count</c>); never with
    /// <c>_total=none</c>. Every count is of what the access filter lets the requester see.
    /// </summary>
    public async Task<SearchResult> SearchAsync(SearchQuery q, CancellationToken ct)
    {
        var where = $"d.resource_type = $1 and not d.deleted{q.WhereSql}";
        // Index rows exist only for current, undeleted versions and their param names the type, so
        // when every criterion is a key set, the intersection of the sets is the answer: page it on the
        // index tables and read only the page's documents (docs/storage.md, "Search SQL"). The intersection
        // is written as semi-joins (`in`), not INTERSECT, so that PostgreSQL can start from the smallest set
        // and probe the others by key (Schema/015): DocumentReference?patient=…&status=current then reads
        // the patient's few rows, not the status rows of every current document.
        var keys = q.OnlyKeySets && q.Sort.Count == 0 ? Intersection(q.KeySets) : null;
        // Unless a key set is already confined by the filter's index-row form (AccessFilter.IndexSql), the
        // matching keys are joined to their documents and tested there, before they are counted and paged.
        var matching = keys is not null && q.FilterSql is { } access && !q.KeySetsFiltered
            ? $"select d.id from ({keys}) k(rkey) join {Docs} d on d.id = k.rkey where d.resource_type = $1 and not d.deleted and {access}"
            : keys;
        var order = q.OrderSql(); // may add arguments: build before binding
        var exact = q.Total is TotalMode.Accurate or TotalMode.Estimate;
        // Matches counted at most (null: all of them). The page needs the first offset + count + 1 anyway.
        var counting = SearchQuery.CountingBound(q.Total, q.Offset, q.Count);
        var page = new List<StoredResource>();
        int? counted = null;
        if (q.Count > 0 && q.Sort.Count == 0 && q.OnlyKeySets && q.KeySets is [{ Prefix: { } prefix, Visible: true }])
        {
            await using var batch = PlannedForItsValues(OrderedByValue(prefix, q, counting), q);
            await using var reader = await batch.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                page.Add(Read(reader));
                counted = reader.IsDBNull(8) ? null : (int)reader.GetInt64(8);
            }
        }
        else if (q.Count > 0 && matching is not null)
        {
            // One statement: the page's keys with the number of matches counted (a window over the first
            // `counting` keys in key order, computed on the index tables), joined to the page's documents only.
            var counts = counting is { } limit ? $"(select c.id from ({matching}) c(id) order by c.id limit {limit})" : $"({matching})";
            await using var batch = PlannedForItsValues(
                $"select {DocColumns}, p.total from (select m.id, count(*) over () as total from {counts} m(id) order by m.id limit {q.Count + 1} offset {q.Offset}) p " +
                $"join {Docs} d on d.id = p.id where d.resource_type = $1 order by d.id", q);
            await using var reader = await batch.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                page.Add(Read(reader));
                counted = (int)reader.GetInt64(8);
            }
        }
        else if (q.Count > 0)
        {
            await using var cmd = DataSource.CreateCommand($"select {DocColumns} from {Docs} d where {where} order by {order} limit {q.Count + 1} offset {q.Offset}");
            Bind(cmd, q);
            page = await ReadAll(cmd, ct);
        }
        var hasMore = page.Count > q.Count;
        if (hasMore) page.RemoveAt(page.Count - 1);

        var total = SearchQuery.TotalShownByPage(q.Offset, q.Count, page.Count, hasMore); // the page shows the end: the total costs nothing
        if (total is null && counted is { } c && (counting is null || c < counting))
            total = c; // every match was counted
        if (q.Total == TotalMode.None || total is not null || (!exact && counted is not null)) // counted up to the limit: more than that, left out
            return new SearchResult(page, await IncludesOfAsync(q, page, ct), q.Total == TotalMode.None ? null : total, hasMore);

        // The page could not carry the count (no page asked for, a page past the end, a sorted search): count on its own.
        var countable = matching is null ? $"select 1 from {Docs} d where {where}" : $"select 1 from ({matching}) c where $1::text is not null"; // $1 (the type) is bound to every search statement
        await using (var batch = PlannedForItsValues(counting is { } bound ? $"select count(*) from ({countable} limit {bound}) n" : $"select count(*) from ({countable}) n", q))
        {
            var n = Convert.ToInt32(await batch.ExecuteScalarAsync(ct));
            if (counting is null || n < counting) total = n;
        }
        return new SearchResult(page, await IncludesOfAsync(q, page, ct), total, hasMore);
    }

    /// <summary>
    /// The page of a search on one string prefix (<c>Patient?family=東海林</c>), in the order its index gives: by the
    /// matched value (folded), then by key. Only the page's index rows are read (<c>_offset</c> + <c>_count</c> + 1 of
    /// them, each with one probe), where the key order had to sort every match first (2,000 for the bench's family:
    /// docs/performance.md "Search", session 7). A resource with several matching values is listed once, at its first
    /// (smallest) one: a row is skipped when the same resource has a matching row with a smaller value (all rows of a
    /// resource carry its writer and person, so the access filter passes all or none of them), and rows with the same
    /// value and key are one. The total, as <paramref name="counting"/> bounds it: by default the first
    /// <c>counting</c> index entries are counted and, when there are no more, their distinct keys (exact); when there
    /// are more, <c>counting</c> stands for "more than the bound" and the total is left out. With _total=accurate
    /// (or estimate) every match is counted; with _total=none nothing.
    /// </summary>
    static string OrderedByValue(StringPrefix prefix, SearchQuery q, long? counting)
    {
        // A parameter read from several `param`s' rows (`name`: SearchParam.PartsIn) is several ranges, each in index order:
        // each branch says its order, so that PostgreSQL merges them (a Merge Append) instead of sorting every match, which
        // it does for a union of the same ranges unordered (name=藤田 on the bench's data: 5,600 buffers and 18 ms → 96 buffers).
        var rows = prefix.Wheres is [var one] ? $"select norm, rkey from fhir.ix_string where {one}"
            : string.Join(" union all ", prefix.Wheres.Select(w => $"(select norm, rkey from fhir.ix_string where {w} order by norm using ~<~, rkey)"));
        var total = q.Total == TotalMode.None ? "null::bigint"
            : counting is { } bound
                ? $"(select case when count(*) >= {bound} then {bound}::bigint else (select count(distinct z.rkey) from ({rows} limit {bound}) z) end from ({rows} limit {bound}) n)"
                : $"(select count(distinct z.rkey) from ({rows}) z)";
        return $"select {DocColumns}, {total} from (select k.norm, k.rkey from (select distinct on (norm, rkey) norm, rkey from ({rows}) s order by norm using ~<~, rkey) k " +
               $"where not exists (select 1 from fhir.ix_string x where x.rkey = k.rkey and x.param = any(${prefix.Keys}) and x.norm ~>=~ ${prefix.Low} and x.norm ~<~ k.norm) " +
               $"order by k.norm using ~<~, k.rkey limit {q.Count + 1} offset {q.Offset}) p " +
               $"join {Docs} d on d.id = p.rkey where d.resource_type = $1 order by p.norm using ~<~, p.rkey";
    }

    /// <summary>
    /// The keys in every set, as semi-joins on the first. When one set names Patients by reference (ITI-67's
    /// patient=…), it comes first and the token criteria are read for its rows' persons only: every index row carries its
    /// resource's person, so DocumentReference?patient=…&amp;status=current reads the status rows of that person's
    /// documents as one range of ix_token_search_person (Schema/021), instead of probing the status index once per
    /// document of the patient (4 buffers each; 500 documents: ~1,900 buffers → ~100, docs/performance.md "Search").
    /// A row of the driving set without a person (none in practice) falls back to the whole set, by a branch
    /// PostgreSQL skips at once when there is none. Each person's range is read by equality (a lateral join): given as
    /// <c>person = any(array(…))</c>, PostgreSQL may apply it as a filter over every row of the code instead — it did when
    /// one other patient of the same writer had 3,000 current documents (1,700 buffers and 12 ms a search, instead of 118
    /// and 2.6 ms; docs/performance.md, session 8).
    /// </summary>
    static string Intersection(List<KeySet> sets)
    {
        var driver = sets.Count > 1 && sets.FirstOrDefault(k => k.PersonsSql is not null) is { } d && sets.Any(k => k.PersonKeyed) ? d : null;
        var ordered = driver is null ? sets : [driver, .. sets.Where(k => !ReferenceEquals(k, driver))];
        // "offset 0" keeps the lateral subquery whole, so that its person is a condition of the index range; pulled up
        // into the join, PostgreSQL may read the code's whole range and compare persons afterwards.
        string Confined(KeySet k) => driver is null || !k.PersonKeyed ? k.Sql
            : $"select t.rkey from (select distinct p.person from ({driver.PersonsSql}) p(person) where p.person is not null) pp, lateral ({k.Sql} and person = pp.person offset 0) t " +
              $"union all {k.Sql} and exists(select 1 from ({driver.PersonsSql}) p(person) where p.person is null)";
        // When every set is confined to the driver's persons, each is small: read each once and keep the keys found in
        // all of them. As semi-joins, PostgreSQL re-read a person's range once per key of the driver whenever its
        // statistics predated a burst of writes (one row guessed for each set): ITI-67 after 1,800 ITI-65 submissions
        // for another patient, 1.1 M buffers and 720 ms instead of 150 buffers and 2-3 ms (docs/performance.md, session 9).
        if (driver is not null && ordered.Count <= 30 && ordered.Skip(1).All(k => k.PersonKeyed)) // 30: one bit per set
            return "select u.rkey from (" + string.Join(" union all ", ordered.Select((k, i) => $"select rkey, {i} as s from ({(i == 0 ? k.Sql : Confined(k))}) k{i}(rkey)")) +
                   $") u group by u.rkey having bit_or(1 << u.s) = {(1 << ordered.Count) - 1}"; // one resource can match with several rows
        return $"select distinct k0.rkey from ({ordered[0].Sql}) k0(rkey)" + // one resource can match with several rows
               string.Concat(ordered.Skip(1).Select((k, i) => $"{(i == 0 ? " where" : " and")} k0.rkey in ({Confined(k)})"));
    }

    /// <summary>
    /// A search statement planned for its own values each time (which key set to start from depends on them:
    /// status=current matches most documents, patient=… a few): every connection of the request pool has
    /// <c>plan_cache_mode = force_custom_plan</c> (<see cref="ForRequests"/>); the statement stays prepared (parsed once).
    /// </summary>
    NpgsqlBatch PlannedForItsValues(string sql, SearchQuery q)
    {
        var batch = DataSource.CreateBatch();
        var cmd = new NpgsqlBatchCommand(sql);
        Bind(cmd.Parameters, q);
        batch.BatchCommands.Add(cmd);
        return batch;
    }

    Task<List<StoredResource>> IncludesOfAsync(SearchQuery q, List<StoredResource> page, CancellationToken ct) =>
        page.Count > 0 && (q.Includes.Count > 0 || q.RevIncludes.Count > 0) ? IncludesAsync(q, page, ct) : Task.FromResult(new List<StoredResource>());

    async Task<List<StoredResource>> IncludesAsync(SearchQuery q, List<StoredResource> page, CancellationToken ct)
    {
        var seen = page.Select(r => r.Key).ToHashSet();
        var found = new List<StoredResource>();
        var keys = page.Select(r => r.Key).ToArray();
        foreach (var inc in q.Includes)
        {
            var sql = $"select {DocColumns} from {Docs} d where not d.deleted and d.id in " +
                      "(select target from fhir.ix_reference where rkey = any($1) and param = $2)" +
                      (inc.TargetType is null ? "" : " and d.resource_type = $3");
            if (q.Filter is { } f) sql += $" and ({f.Render(inc.TargetType is null ? 3 : 4)})";
            await using var cmd = DataSource.CreateCommand(sql);
            cmd.Parameters.Add(new() { Value = inc.Iterate ? keys.Concat(found.Select(f => f.Key)).ToArray() : keys });
            cmd.Parameters.Add(new() { Value = inc.SourceType + "." + inc.ParamCode });
            if (inc.TargetType is not null) cmd.Parameters.Add(new() { Value = inc.TargetType });
            foreach (var a in q.Filter?.Args ?? []) cmd.Parameters.Add(new() { Value = a });
            found.AddRange((await ReadAll(cmd, ct)).Where(r => seen.Add(r.Key)));
        }
        foreach (var inc in q.RevIncludes)
        {
            await using var cmd = DataSource.CreateCommand(
                $"select {DocColumns} from {Docs} d where not d.deleted and d.id in " +
                "(select rkey from fhir.ix_reference where target = any($1) and param = $2)" + (q.Filter is { } f ? $" and ({f.Render(3)})" : ""));
            cmd.Parameters.Add(new() { Value = keys });
            cmd.Parameters.Add(new() { Value = inc.SourceType + "." + inc.ParamCode });
            foreach (var a in q.Filter?.Args ?? []) cmd.Parameters.Add(new() { Value = a });
            found.AddRange((await ReadAll(cmd, ct)).Where(r => seen.Add(r.Key)));
        }
        return found;
    }

    /// <summary>Adds one statement with positional arguments ($1, $2, …) to a batch sent in one round trip.</summary>
    internal static NpgsqlBatchCommand Statement(NpgsqlBatch batch, string sql, params object[] args)
    {
        var cmd = new NpgsqlBatchCommand(sql);
        foreach (var a in args) cmd.Parameters.Add(new NpgsqlParameter { Value = a });
        batch.BatchCommands.Add(cmd);
        return cmd;
    }

    internal static void Bind(NpgsqlCommand cmd, SearchQuery q) => Bind(cmd.Parameters, q);

    internal static void Bind(NpgsqlParameterCollection parameters, SearchQuery q)
    {
        parameters.Add(new() { Value = q.ResourceType });
        foreach (var a in q.Arguments) parameters.Add(new() { Value = a });
    }

    internal static async Task<List<StoredResource>> ReadAll(NpgsqlCommand cmd, CancellationToken ct)
    {
        var list = new List<StoredResource>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) list.Add(Read(reader));
        return list;
    }

    internal static StoredResource Read(NpgsqlDataReader reader)
    {
        var type = reader.GetString(0);
        var key = reader.GetString(1);
        return new StoredResource(type, key[(type.Length + 1)..], reader.GetInt32(2),
            reader.GetFieldValue<DateTimeOffset>(3), reader.GetBoolean(4), reader.GetString(5), reader.IsDBNull(6) ? null : reader.GetString(6),
            reader.IsDBNull(7) ? null : reader.GetString(7));
    }

    public async ValueTask DisposeAsync()
    {
        await Marten.DisposeAsync();
        await DataSource.DisposeAsync();
        await Sessions.DisposeAsync();
    }
}

public sealed record SearchResult(List<StoredResource> Matches, List<StoredResource> Included, int? Total, bool HasMore);

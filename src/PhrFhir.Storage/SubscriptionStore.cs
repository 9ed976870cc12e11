using Npgsql;

namespace PhrFhir.Storage;

/// <summary>A Subscription as the deliverer keeps it (fhir.subscription_state, Schema/013).</summary>
public sealed record SubscriptionRow(
    string Id, string Topic, string Status, string Definition, DateTimeOffset Created, long EventsSinceStart,
    long DeliveredThrough, int Attempts, DateTimeOffset? FirstFailure, DateTimeOffset NextAttempt, DateTimeOffset? LastSent, string? LastError);

/// <summary>
/// A committed write waiting in the outbox, with the JSON of the version written and of the one before it,
/// and the live Subscriptions its transaction's check counted (the only ones it can be an event of).
/// </summary>
public sealed record OutboxChange(long Id, string Key, int Version, string Type, string Method, string? Person, DateTimeOffset Recorded, string Json, string? PreviousJson, string[] Counted);

/// <summary>A numbered event of one Subscription, with the JSON of the version it is about ("" for a deletion).</summary>
public sealed record SubscriptionEvent(long Number, string Key, int Version, string Method, DateTimeOffset Recorded, string Json, string? Person = null);

/// <summary>
/// The SQL of topic-based Subscriptions (docs/subscriptions.md): the outbox written with each change,
/// numbering its rows into per-subscription events, and the delivery state.
/// </summary>
public sealed class SubscriptionStore(FhirStore store)
{
    const string Columns = "s.id, s.topic, s.status, s.definition::text, s.created, s.events_since_start, s.delivered_through, s.attempts, s.first_failure, s.next_attempt, s.last_sent, s.last_error";

    /// <summary>The payload of the NOTIFY a commit sends when it put rows in the outbox (FhirStore.Changed raises it too, in-process).</summary>
    public const string OutboxSignal = "subscription_outbox";

    /// <summary>Every Subscription that is not off (a deleted one is off).</summary>
    public async Task<List<SubscriptionRow>> LiveAsync(CancellationToken ct)
    {
        await using var cmd = store.DataSource.CreateCommand(
            // A deleted Subscription is off (WriteTransaction.EndSubscription): the partial index of Schema/017 answers this.
            $"select {Columns} from fhir.subscription_state s where s.status <> 'off' order by s.id");
        return await ReadRows(cmd, ct);
    }

    public async Task<SubscriptionRow?> OneAsync(string id, CancellationToken ct)
    {
        await using var cmd = store.DataSource.CreateCommand($"select {Columns} from fhir.subscription_state s where s.id = $1");
        cmd.Parameters.Add(new() { Value = id });
        return (await ReadRows(cmd, ct)).FirstOrDefault();
    }

    static async Task<List<SubscriptionRow>> ReadRows(NpgsqlCommand cmd, CancellationToken ct)
    {
        var rows = new List<SubscriptionRow>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
            rows.Add(new SubscriptionRow(r.GetString(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetFieldValue<DateTimeOffset>(4),
                r.GetInt64(5), r.GetInt64(6), r.GetInt32(7), r.IsDBNull(8) ? null : r.GetFieldValue<DateTimeOffset>(8),
                r.GetFieldValue<DateTimeOffset>(9), r.IsDBNull(10) ? null : r.GetFieldValue<DateTimeOffset>(10), r.IsDBNull(11) ? null : r.GetString(11)));
        return rows;
    }

    /// <summary>
    /// Turns up to <paramref name="limit"/> outbox rows, oldest first, into events of the Subscriptions
    /// <paramref name="subscribersOf"/> names for each, and removes them from the outbox — one transaction.
    /// The rows are locked (`for update`): a second dispatcher waits and then finds them gone, so a change
    /// is numbered once. Each number is the Subscription's counter plus one under its row lock: no gaps,
    /// no repeats, whatever runs concurrently. Returns how many outbox rows were taken.
    /// </summary>
    public async Task<int> DispatchAsync(int limit, Func<OutboxChange, Task<IReadOnlyList<string>>> subscribersOf, CancellationToken ct)
    {
        await using var conn = await store.DataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var changes = new List<OutboxChange>();
        await using (var select = new NpgsqlCommand(
            "select o.id, o.rkey, o.version, o.resource_type, o.method, o.person, o.recorded, coalesce(h.json, a.json, ''), p.json, " +
            // The Subscriptions the write's check saw live (Schema/017); rows written before 017 have no snapshot.
            "       array(select s.id from fhir.subscription_state s where s.status <> 'off' and case when o.seen is null or s.live_xid is null " +
            "             then s.created <= o.recorded else pg_visible_in_snapshot(s.live_xid, o.seen) end) " +
            "from (select * from fhir.subscription_outbox order by id limit $1 for update) o " +
            // An AuditEvent's JSON is in the audit table (Schema/009): it has one version.
            "left join fhir.resource_history h on h.rkey = o.rkey and h.version = o.version " +
            "left join fhir.audit_event a on o.resource_type = 'AuditEvent' and a.id = o.rkey " +
            "left join fhir.resource_history p on p.rkey = o.rkey and p.version = o.version - 1 order by o.id", conn, tx))
        {
            select.Parameters.Add(new() { Value = limit });
            await using var r = await select.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
                changes.Add(new OutboxChange(r.GetInt64(0), r.GetString(1), r.GetInt32(2), r.GetString(3), r.GetString(4), r.IsDBNull(5) ? null : r.GetString(5),
                    r.GetFieldValue<DateTimeOffset>(6), r.GetString(7), r.IsDBNull(8) ? null : r.GetString(8), r.GetFieldValue<string[]>(9)));
        }
        if (changes.Count == 0) return 0;
        foreach (var change in changes)
            foreach (var id in await subscribersOf(change))
            {
                await using var number = new NpgsqlCommand(
                    "with n as (update fhir.subscription_state set events_since_start = events_since_start + 1 where id = $1 and status <> 'off' returning events_since_start) " +
                    "insert into fhir.subscription_event (subscription_id, number, rkey, version, method, person, recorded) select $1, n.events_since_start, $2, $3, $4, $5, $6 from n", conn, tx);
                number.Parameters.Add(new() { Value = id });
                number.Parameters.Add(new() { Value = change.Key });
                number.Parameters.Add(new() { Value = change.Version });
                number.Parameters.Add(new() { Value = change.Method });
                number.Parameters.Add(new() { Value = (object?)change.Person ?? DBNull.Value });
                number.Parameters.Add(new() { Value = change.Recorded });
                await number.ExecuteNonQueryAsync(ct);
            }
        await using (var delete = new NpgsqlCommand("delete from fhir.subscription_outbox where id = any($1)", conn, tx))
        {
            delete.Parameters.Add(new() { Value = changes.Select(c => c.Id).ToArray() });
            await delete.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        return changes.Count;
    }

    /// <summary>The transactions in progress now (pg_current_snapshot), as text.</summary>
    public async Task<string> SnapshotAsync(CancellationToken ct)
    {
        await using var cmd = store.DataSource.CreateCommand("select pg_current_snapshot()::text");
        return (string)(await cmd.ExecuteScalarAsync(ct))!;
    }

    /// <summary>True when every transaction in progress at <paramref name="snapshot"/> has ended (committed or rolled back).</summary>
    public async Task<bool> EndedAsync(string snapshot, CancellationToken ct)
    {
        await using var cmd = store.DataSource.CreateCommand(
            "select not exists (select 1 from pg_snapshot_xip($1::pg_snapshot) x where pg_xact_status(x) = 'in progress')");
        cmd.Parameters.Add(new() { Value = snapshot });
        return (bool)(await cmd.ExecuteScalarAsync(ct))!;
    }

    /// <summary>Events <paramref name="from"/>..<paramref name="through"/> (inclusive) of one Subscription, in order, at most <paramref name="limit"/>.</summary>
    public async Task<List<SubscriptionEvent>> EventsAsync(string id, long from, long through, int limit, CancellationToken ct)
    {
        await using var cmd = store.DataSource.CreateCommand(
            "select e.number, e.rkey, e.version, e.method, e.recorded, coalesce(h.json, a.json, ''), e.person from fhir.subscription_event e " +
            "left join fhir.resource_history h on h.rkey = e.rkey and h.version = e.version " +
            "left join fhir.audit_event a on e.rkey like 'AuditEvent/%' and a.id = e.rkey " +
            "where e.subscription_id = $1 and e.number between $2 and $3 order by e.number limit $4");
        cmd.Parameters.Add(new() { Value = id });
        cmd.Parameters.Add(new() { Value = from });
        cmd.Parameters.Add(new() { Value = through });
        cmd.Parameters.Add(new() { Value = limit });
        var events = new List<SubscriptionEvent>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
            events.Add(new SubscriptionEvent(r.GetInt64(0), r.GetString(1), r.GetInt32(2), r.GetString(3), r.GetFieldValue<DateTimeOffset>(4), r.GetString(5), r.IsDBNull(6) ? null : r.GetString(6)));
        return events;
    }

    /// <summary>The endpoint acknowledged events up to <paramref name="through"/>: the failure count starts again.</summary>
    public Task DeliveredAsync(string id, long through, CancellationToken ct) => ExecAsync(
        "update fhir.subscription_state set delivered_through = greatest(delivered_through, $2), attempts = 0, first_failure = null, last_error = null, " +
        "next_attempt = now(), last_sent = now() where id = $1", ct, id, through);

    /// <summary>A notification failed: try again at <paramref name="next"/>.</summary>
    public Task FailedAsync(string id, DateTimeOffset next, string error, CancellationToken ct) => ExecAsync(
        "update fhir.subscription_state set attempts = attempts + 1, first_failure = coalesce(first_failure, now()), next_attempt = $2, last_error = $3 where id = $1",
        ct, id, next, error);

    /// <summary>A heartbeat reached the endpoint.</summary>
    public Task SentAsync(string id, CancellationToken ct) => ExecAsync("update fhir.subscription_state set last_sent = now() where id = $1", ct, id);

    async Task<int> ExecAsync(string sql, CancellationToken ct, params object?[] args)
    {
        await using var cmd = store.DataSource.CreateCommand(sql);
        foreach (var a in args) cmd.Parameters.Add(new() { Value = a ?? DBNull.Value });
        return await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// One deliverer among the server processes sharing the database: a connection holding a session
    /// advisory lock (released when the connection closes, also when the process dies), or null when
    /// another process holds it.
    /// </summary>
    public async Task<NpgsqlConnection?> TryLeadAsync(CancellationToken ct)
    {
        var conn = await store.Sessions.OpenConnectionAsync(ct); // the session lock must not stay on a request's connection
        await using var cmd = new NpgsqlCommand("select pg_try_advisory_lock(7262113)", conn);
        if (await cmd.ExecuteScalarAsync(ct) is true) return conn;
        await conn.DisposeAsync();
        return null;
    }
}

public sealed partial class WriteTransaction
{
    /// <summary>
    /// The deliverer's record of a Subscription, in the transaction that writes the resource. A client's
    /// change starts it again (status requested: a new handshake) and keeps its event numbers.
    /// </summary>
    public void SaveSubscription(string id, string topic, string status, string definitionJson) =>
        Add("insert into fhir.subscription_state (id, topic, status, definition, live_xid) values ($1, $2, $3, $4::jsonb, pg_current_xact_id()) " +
            "on conflict (id) do update set topic = excluded.topic, status = excluded.status, definition = excluded.definition, " +
            // Live again after off, or about another topic: a new live_xid (changes checked before are not its events).
            "live_xid = case when subscription_state.status = 'off' or subscription_state.topic <> excluded.topic then excluded.live_xid else subscription_state.live_xid end, " +
            "attempts = 0, first_failure = null, next_attempt = now(), last_error = null", id, topic, status, definitionJson);

    /// <summary>The server moves a Subscription from one status to another with the write of its resource (handshake, giving up).</summary>
    public void SetSubscriptionStatus(string id, string from, string to, string? error) =>
        Add("update fhir.subscription_state set status = $3, last_error = $4, last_sent = now() where id = $1 and status = $2", id, from, to, error);

    /// <summary>A Subscription deleted: off, like status off (no events, the outbox stops counting it).</summary>
    public void EndSubscription(string id) => Add("update fhir.subscription_state set status = 'off' where id = $1", id);

    readonly List<(string Key, int Version, string Type, string Method, string? Person)> _changes = [];

    /// <summary>
    /// AuditEvents that a topic may be about (a share link opened: Sharing/LinkAudit), kept for
    /// <see cref="RecordChanges"/> like a resource's version. Only where the code recording them says so:
    /// the trail of every request is not checked for listeners.
    /// </summary>
    public void RecordAuditChange(AuditRow row)
    {
        if (_store.Outboxed.ContainsKey("AuditEvent")) _changes.Add((row.Key, 1, "AuditEvent", "POST", row.Person));
    }

    /// <summary>A version of a type some topic watches (FhirStore.Outboxed): kept for <see cref="RecordChanges"/>.</summary>
    void RecordChange(ResourceDocument doc, string method) => _changes.Add((doc.Id, doc.Version, doc.ResourceType, method, doc.Person));

    /// <summary>
    /// The transaction's changes of watched types go to the outbox — one statement, queued last before the
    /// commit — but only those of a type a live Subscription (status not off) watches through one of its
    /// topics: with no listener, no row and no NOTIFY (the ITI-65 hot path). The check and the insert are
    /// one statement, whose snapshot is kept (`seen`): this transaction has its xid by then (it wrote
    /// before), which is what lets the deliverer hold a new Subscription's activation until every
    /// transaction whose check could not see it has ended (Schema/017, docs/subscriptions.md).
    /// </summary>
    NpgsqlBatchCommand? RecordChanges()
    {
        if (_changes.Count == 0) return null;
        var watching = _changes.Select(c => c.Type).Distinct().SelectMany(t => _store.Outboxed[t].Select(topic => (Topic: topic, Type: t))).ToList();
        var command = Add(
            "with live as (select distinct w.type from unnest($6::text[], $7::text[]) w(topic, type) " +
            "              where exists (select 1 from fhir.subscription_state s where s.topic = w.topic and s.status <> 'off')), " +
            $"     signal as (select pg_notify('{FhirStore.ChangeChannel}', '{SubscriptionStore.OutboxSignal}') from live limit 1) " +
            "insert into fhir.subscription_outbox (rkey, version, resource_type, method, person, seen) " +
            "select c.rkey, c.version, c.type, c.method, c.person, pg_current_snapshot() " +
            "from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[]) with ordinality c(rkey, version, type, method, person, n) " +
            "where c.type in (select type from live) and exists (select 1 from signal) order by c.n",
            _changes.Select(c => c.Key).ToArray(), _changes.Select(c => c.Version).ToArray(), _changes.Select(c => c.Type).ToArray(),
            _changes.Select(c => c.Method).ToArray(), _changes.Select(c => c.Person).ToArray(),
            watching.Select(w => w.Topic).ToArray(), watching.Select(w => w.Type).ToArray());
        _changes.Clear();
        return command;
    }
}
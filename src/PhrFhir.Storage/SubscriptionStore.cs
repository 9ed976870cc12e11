using Npgsql;

namespace PhrFhir.Storage;

/// <summary>A Subscription as the deliverer keeps it (fhir.subscription_state, Schema/013).</summary>
public sealed record SubscriptionRow(
    string Id, string Topic, string Status, string Definition, DateTimeOffset Created, long EventsSinceStart,
    long DeliveredThrough, int Attempts, DateTimeOffset? FirstFailure, DateTimeOffset NextAttempt, DateTimeOffset? LastSent, string? LastError);

/// <summary>A committed write waiting in the outbox, with the JSON of the version written and of the one before it.</summary>
public sealed record OutboxChange(long Id, string Key, int Version, string Type, string Method, string? Person, DateTimeOffset Recorded, string Json, string? PreviousJson);

/// <summary>A numbered event of one Subscription, with the JSON of the version it is about ("" for a deletion).</summary>
public sealed record SubscriptionEvent(long Number, string Key, int Version, string Method, DateTimeOffset Recorded, string Json);

/// <summary>
/// The SQL of topic-based Subscriptions (docs/subscriptions.md): the outbox written with each change,
/// numbering its rows into per-subscription events, and the delivery state.
/// </summary>
public sealed class SubscriptionStore(FhirStore store)
{
    const string Columns = "s.id, s.topic, s.status, s.definition::text, s.created, s.events_since_start, s.delivered_through, s.attempts, s.first_failure, s.next_attempt, s.last_sent, s.last_error";

    /// <summary>Every Subscription that is not off and whose resource is not deleted.</summary>
    public async Task<List<SubscriptionRow>> LiveAsync(CancellationToken ct)
    {
        await using var cmd = store.DataSource.CreateCommand(
            $"select {Columns} from fhir.subscription_state s join fhir.mt_doc_resourcedocument d on d.id = 'Subscription/' || s.id " +
            "where s.status <> 'off' and not d.deleted order by s.id");
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
            "select o.id, o.rkey, o.version, o.resource_type, o.method, o.person, o.recorded, h.json, p.json " +
            "from (select * from fhir.subscription_outbox order by id limit $1 for update) o " +
            "join fhir.resource_history h on h.rkey = o.rkey and h.version = o.version " +
            "left join fhir.resource_history p on p.rkey = o.rkey and p.version = o.version - 1 order by o.id", conn, tx))
        {
            select.Parameters.Add(new() { Value = limit });
            await using var r = await select.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
                changes.Add(new OutboxChange(r.GetInt64(0), r.GetString(1), r.GetInt32(2), r.GetString(3), r.GetString(4), r.IsDBNull(5) ? null : r.GetString(5),
                    r.GetFieldValue<DateTimeOffset>(6), r.GetString(7), r.IsDBNull(8) ? null : r.GetString(8)));
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

    /// <summary>Events <paramref name="from"/>..<paramref name="through"/> (inclusive) of one Subscription, in order, at most <paramref name="limit"/>.</summary>
    public async Task<List<SubscriptionEvent>> EventsAsync(string id, long from, long through, int limit, CancellationToken ct)
    {
        await using var cmd = store.DataSource.CreateCommand(
            "select e.number, e.rkey, e.version, e.method, e.recorded, h.json from fhir.subscription_event e " +
            "join fhir.resource_history h on h.rkey = e.rkey and h.version = e.version " +
            "where e.subscription_id = $1 and e.number between $2 and $3 order by e.number limit $4");
        cmd.Parameters.Add(new() { Value = id });
        cmd.Parameters.Add(new() { Value = from });
        cmd.Parameters.Add(new() { Value = through });
        cmd.Parameters.Add(new() { Value = limit });
        var events = new List<SubscriptionEvent>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
            events.Add(new SubscriptionEvent(r.GetInt64(0), r.GetString(1), r.GetInt32(2), r.GetString(3), r.GetFieldValue<DateTimeOffset>(4), r.GetString(5)));
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
        var conn = await store.DataSource.OpenConnectionAsync(ct);
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
        Add("insert into fhir.subscription_state (id, topic, status, definition) values ($1, $2, $3, $4::jsonb) " +
            "on conflict (id) do update set topic = excluded.topic, status = excluded.status, definition = excluded.definition, " +
            "attempts = 0, first_failure = null, next_attempt = now(), last_error = null", id, topic, status, definitionJson);

    /// <summary>The server moves a Subscription from one status to another with the write of its resource (handshake, giving up).</summary>
    public void SetSubscriptionStatus(string id, string from, string to, string? error) =>
        Add("update fhir.subscription_state set status = $3, last_error = $4, last_sent = now() where id = $1 and status = $2", id, from, to, error);

    /// <summary>A version of a type some topic watches (FhirStore.Outboxed) goes to the outbox with the write.</summary>
    void RecordChange(ResourceDocument doc, string method) =>
        Add("insert into fhir.subscription_outbox (rkey, version, resource_type, method, person) values ($1, $2, $3, $4, $5)",
            doc.Id, doc.Version, doc.ResourceType, method, (object?)doc.Person ?? DBNull.Value);
}

using Npgsql;
using NpgsqlTypes;

namespace PhrFhir.Storage;

/// <summary>
/// One AuditEvent as stored in fhir.audit_event (Schema/009): the columns the access log searches and the
/// access rules read, and the JSON served. Built by the server from the AuditEvent (Audit/AuditTrail).
/// </summary>
public sealed record AuditRow(
    string Id, DateTimeOffset Recorded, string? Person, string? TypeSystem, string? TypeCode, string[] Subtype,
    string? Action, string? Outcome, string[] Agent, string[] AltId, string[] Entity, string Json)
{
    public string Key => "AuditEvent/" + Id;
}

public sealed partial class WriteTransaction
{
    /// <summary>
    /// Appends AuditEvents in this transaction (the audit of a write commits or rolls back with it). Each row
    /// carries its keyed MAC (AuditChain.RowMac), computed here, so the row is complete as inserted and never updated:
    /// a trigger queues it for its chain link (Schema/020). The few of one request are queued with the write's own batch
    /// (no round trip of their own, issue #12); AuditWriter's larger batches go with one COPY.
    /// </summary>
    public async Task AppendAuditsAsync(IReadOnlyList<AuditRow> rows, CancellationToken ct)
    {
        if (rows.Count == 0) return;
        var chain = _store.AuditChain;
        if (rows.Count <= QueuedAuditRows)
        {
            // One statement of VALUES rows (the array columns rule out unnest): sent by the next FlushAsync.
            var values = string.Join(", ", rows.Select((_, i) => "(" + string.Join(", ", Enumerable.Range(i * 13 + 1, 13).Select(n => "$" + n)) + ")"));
            Add("insert into fhir.audit_event (id, recorded, person, type_system, type_code, subtype, action, outcome, agent, altid, entity, json, row_mac) values " + values,
                [.. rows.SelectMany(r => new object?[] { r.Key, r.Recorded.UtcDateTime, r.Person, r.TypeSystem, r.TypeCode, r.Subtype, r.Action, r.Outcome, r.Agent, r.AltId, r.Entity, r.Json, chain.RowMac(r) })]);
            return;
        }
        await FlushAsync(ct); // COPY runs on the connection itself: what is queued goes first
        await using var copy = await _conn.BeginBinaryImportAsync(
            "copy fhir.audit_event (id, recorded, person, type_system, type_code, subtype, action, outcome, agent, altid, entity, json, row_mac) from stdin (format binary)", ct);
        foreach (var r in rows)
        {
            await copy.StartRowAsync(ct);
            await copy.WriteAsync(r.Key, NpgsqlDbType.Text, ct);
            await copy.WriteAsync(r.Recorded.UtcDateTime, NpgsqlDbType.TimestampTz, ct);
            await WriteNullable(copy, r.Person, ct);
            await WriteNullable(copy, r.TypeSystem, ct);
            await WriteNullable(copy, r.TypeCode, ct);
            await copy.WriteAsync(r.Subtype, NpgsqlDbType.Array | NpgsqlDbType.Text, ct);
            await WriteNullable(copy, r.Action, ct);
            await WriteNullable(copy, r.Outcome, ct);
            await copy.WriteAsync(r.Agent, NpgsqlDbType.Array | NpgsqlDbType.Text, ct);
            await copy.WriteAsync(r.AltId, NpgsqlDbType.Array | NpgsqlDbType.Text, ct);
            await copy.WriteAsync(r.Entity, NpgsqlDbType.Array | NpgsqlDbType.Text, ct);
            await copy.WriteAsync(r.Json, NpgsqlDbType.Text, ct);
            await copy.WriteAsync(chain.RowMac(r), NpgsqlDbType.Bytea, ct);
        }
        await copy.CompleteAsync(ct);
    }

    const int QueuedAuditRows = 16;

    static async Task WriteNullable(NpgsqlBinaryImporter copy, string? value, CancellationToken ct)
    {
        if (value is null) await copy.WriteNullAsync(ct);
        else await copy.WriteAsync(value, NpgsqlDbType.Text, ct);
    }

    /// <summary>Runs just before commit (the server records the request's AuditEvents here).</summary>
    public Func<WriteTransaction, CancellationToken, Task>? BeforeCommit { get; set; }

    /// <summary>The keys this transaction wrote, with their Patient compartment.</summary>
    public List<(string Key, string? Person)> Written { get; } = [];

    /// <summary>
    /// The keys this transaction read or was about to write, with their Patient compartment, whether or
    /// not the request then went through: a refused or failed attempt is audited in those patients' logs.
    /// </summary>
    public List<(string Key, string? Person)> Touched { get; } = [];

    /// <summary>True once the commit went through (the AuditEvents appended before it are stored).</summary>
    public bool Committed { get; private set; }
}

public sealed partial class FhirStore
{
    /// <summary>
    /// The audit table as an access filter sees a document row (alias <c>d</c>: id, resource_type, person,
    /// writer, deleted), so the same role rules (AccessFilter) confine the access log.
    /// </summary>
    const string AuditRows = "(select a.seq, a.id, a.recorded, a.person, a.json, 'AuditEvent'::text as resource_type, null::text as writer, false as deleted, " +
                             "a.type_system, a.type_code, a.subtype, a.action, a.outcome, a.agent, a.altid, a.entity from fhir.audit_event a)";

    /// <summary>One AuditEvent, if it exists and passes the filter (null filter: everything).</summary>
    public async Task<StoredResource?> ReadAuditAsync(string id, AccessFilter? filter, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            $"select d.id, d.recorded, d.person, d.json from {AuditRows} d where d.id = $1" + (filter is null ? "" : $" and ({filter.Render(2)})"));
        cmd.Parameters.Add(new() { Value = "AuditEvent/" + id });
        foreach (var a in filter?.Args ?? []) cmd.Parameters.Add(new() { Value = a });
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? AuditResource(reader) : null;
    }

    /// <summary>
    /// An access-log search (<see cref="AuditQuery"/>), newest first unless sorted otherwise, confined to
    /// what the filter lets the requester see; the total counts only that.
    /// </summary>
    public async Task<SearchResult> SearchAuditAsync(AuditQuery q, AccessFilter? filter, CancellationToken ct)
    {
        var args = new List<object>(q.Arguments);
        var where = q.Where.ToList();
        if (filter is not null)
        {
            where.Add("(" + filter.Render(args.Count + 1) + ")");
            args.AddRange(filter.Args);
        }
        var condition = where.Count == 0 ? "" : " where " + string.Join(" and ", where);
        var total = q.Total == Search.TotalMode.None ? "null::bigint" : "count(*) over ()";
        await using var cmd = DataSource.CreateCommand(
            $"select d.id, d.recorded, d.person, d.json, {total} from {AuditRows} d{condition} " +
            $"order by d.recorded {(q.Descending ? "desc" : "asc")}, d.seq {(q.Descending ? "desc" : "asc")} limit {q.Count + 1} offset {q.Offset}");
        foreach (var a in args) cmd.Parameters.Add(new() { Value = a });
        var page = new List<StoredResource>();
        long? counted = null;
        await using (var reader = await cmd.ExecuteReaderAsync(ct))
            while (await reader.ReadAsync(ct))
            {
                page.Add(AuditResource(reader));
                if (!reader.IsDBNull(4)) counted = reader.GetInt64(4);
            }
        var hasMore = page.Count > q.Count;
        if (hasMore) page.RemoveAt(page.Count - 1);
        int? totalCount = null;
        if (q.Total != Search.TotalMode.None)
        {
            if (counted is { } c) totalCount = (int)c;
            else if (q.Offset == 0) totalCount = 0; // no row at all
            else
            {
                // A page past the end has no row to carry the count: count on its own.
                await using var count = DataSource.CreateCommand($"select count(*) from {AuditRows} d{condition}");
                foreach (var a in args) count.Parameters.Add(new() { Value = a });
                totalCount = Convert.ToInt32(await count.ExecuteScalarAsync(ct));
            }
        }
        return new SearchResult(page, [], totalCount, hasMore);
    }

    static StoredResource AuditResource(NpgsqlDataReader reader) =>
        new("AuditEvent", reader.GetString(0)["AuditEvent/".Length..], 1, reader.GetFieldValue<DateTimeOffset>(1), false,
            reader.GetString(3), reader.IsDBNull(2) ? null : reader.GetString(2));
}

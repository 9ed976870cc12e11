using Npgsql;
using NpgsqlTypes;

namespace PhrFhir.Storage;

/// <summary>
/// One AuditEvent as stored in fhir.audit_event (Schema/009): the columns the access log searches and the
/// access rules read, and the JSON served. Built by the server from the AuditEvent (Audit/AuditTrail).
/// <see cref="PartPerson"/>/<see cref="PartQuery"/> (Schema/026): a search's per-patient AuditEvents, held by the
/// operator's event of that search — part i (1-based) is patient PartPerson[i-1], with the query as it concerns
/// them (null: the whole query); each is served as AuditEvent "{Id}.{i}" (<see cref="AuditPart"/>).
/// </summary>
public sealed record AuditRow(
    string Id, DateTimeOffset Recorded, string? Person, string? TypeSystem, string? TypeCode, string[] Subtype,
    string? Action, string? Outcome, string[] Agent, string[] AltId, string[] Entity, string Json,
    string[]? PartPerson = null, string?[]? PartQuery = null)
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
            var values = string.Join(", ", rows.Select((_, i) => "(" + string.Join(", ", Enumerable.Range(i * 15 + 1, 15).Select(n => "$" + n)) + ")"));
            Add("insert into fhir.audit_event (id, recorded, person, type_system, type_code, subtype, action, outcome, agent, altid, entity, json, row_mac, part_person, part_query) values " + values,
                [.. rows.SelectMany(r => new object?[] { r.Key, r.Recorded.UtcDateTime, r.Person, r.TypeSystem, r.TypeCode, r.Subtype, r.Action, r.Outcome, r.Agent, r.AltId, r.Entity, r.Json, chain.RowMac(r), r.PartPerson, r.PartQuery })]);
            return;
        }
        await FlushAsync(ct); // COPY runs on the connection itself: what is queued goes first
        await using var copy = await _conn.BeginBinaryImportAsync(
            "copy fhir.audit_event (id, recorded, person, type_system, type_code, subtype, action, outcome, agent, altid, entity, json, row_mac, part_person, part_query) from stdin (format binary)", ct);
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
            if (r.PartPerson is null) await copy.WriteNullAsync(ct);
            else await copy.WriteAsync(r.PartPerson, NpgsqlDbType.Array | NpgsqlDbType.Text, ct);
            if (r.PartQuery is null) await copy.WriteNullAsync(ct);
            else await copy.WriteAsync(r.PartQuery, NpgsqlDbType.Array | NpgsqlDbType.Text, ct);
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
    /// writer, deleted), so the same role rules (AccessFilter) confine the access log. A search's per-patient
    /// AuditEvents (Schema/026) are rows of their own here (<c>part</c> ≥ 1): found through their patient's entry in
    /// fhir.audit_event_part, but only where the row's MACed part_person names that same patient, with the patient
    /// added to the entities; <c>id</c> is the row's, the part number tells them apart (served as "{id}.{part}").
    /// </summary>
    const string AuditRows = "(" + EventRows + " union all " + PartRows + ")";
    const string EventRows = "select a.seq, 0 as part, a.id, a.recorded, a.person, a.json, null::text as part_query, 'AuditEvent'::text as resource_type, null::text as writer, false as deleted, " +
                             "a.type_system, a.type_code, a.subtype, a.action, a.outcome, a.agent, a.altid, a.entity from fhir.audit_event a";
    // `part_person is not null` lets the parts be found in date order through Schema/027's index. The check that the
    // MACed row names the part's patient is written as a coalesce so that the planner estimates it as "half the rows
    // pass", not as an unknown equality's 0.5 %: with that guess, a page past the first few hundred parts was planned
    // as a join and sort of every part (a second with 600,000) instead of following the index (5 ms).
    const string PartRows = "select a.seq, p.part::int as part, a.id, a.recorded, p.person, a.json, a.part_query[p.part] as part_query, 'AuditEvent'::text as resource_type, null::text as writer, false as deleted, " +
                            "a.type_system, a.type_code, a.subtype, a.action, a.outcome, a.agent, a.altid, a.entity || ('Patient/' || p.person) as entity " +
                            "from fhir.audit_event_part p join fhir.audit_event a on a.seq = p.seq and a.part_person is not null and coalesce(a.part_person[p.part] = p.person, false)";

    /// <summary>
    /// The condition on <c>d</c> for an AuditEvent id: a row's own ("{uuid}"), or one part of a search's row
    /// ("{uuid}.{part}"). Both are an index lookup of the row's id.
    /// </summary>
    internal static (string Key, int Part) AuditId(string id)
    {
        var dot = id.LastIndexOf('.');
        return dot > 0 && int.TryParse(id.AsSpan(dot + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var part) && part is > 0 and <= short.MaxValue
            ? ("AuditEvent/" + id[..dot], part)
            : ("AuditEvent/" + id, 0);
    }

    /// <summary>One AuditEvent, if it exists and passes the filter (null filter: everything); a search's part projected by <paramref name="project"/>.</summary>
    public async Task<StoredResource?> ReadAuditAsync(string id, AccessFilter? filter, Func<AuditPart, string> project, CancellationToken ct)
    {
        var (key, part) = AuditId(id);
        await using var cmd = DataSource.CreateCommand(
            $"select d.id, d.recorded, d.person, d.json, d.part, d.part_query from {AuditRows} d where d.id = $1 and d.part = $2" + (filter is null ? "" : $" and ({filter.Render(3)})"));
        cmd.Parameters.Add(new() { Value = key });
        cmd.Parameters.Add(new() { Value = part });
        foreach (var a in filter?.Args ?? []) cmd.Parameters.Add(new() { Value = a });
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? AuditResource(reader, project) : null;
    }

    /// <summary>
    /// An access-log search (<see cref="AuditQuery"/>), newest first unless sorted otherwise, confined to
    /// what the filter lets the requester see; the total counts only that, and costs what a resource search's
    /// does (docs/storage.md, "Totals"): the page is read alone (the log's date index gives its order), and
    /// without <c>_total</c> the matches are counted only up to <see cref="Search.SearchQuery.CountedTotalLimit"/>,
    /// the total left out beyond that. Counting every row of an operator's unfiltered log on every page took
    /// seconds once it held hundreds of thousands of events.
    /// </summary>
    public async Task<SearchResult> SearchAuditAsync(AuditQuery q, AccessFilter? filter, Func<AuditPart, string> project, CancellationToken ct)
    {
        var args = new List<object>(q.Arguments);
        var where = q.Where.ToList();
        if (filter is not null)
        {
            where.Add("(" + filter.Render(args.Count + 1) + ")");
            args.AddRange(filter.Args);
        }
        var condition = where.Count == 0 ? "" : " where " + string.Join(" and ", where);
        var order = q.Descending ? "order by d.recorded desc, d.seq desc, d.part desc" : "order by d.recorded, d.seq, d.part";
        // The page is the first rows of the two kinds merged: each kind's first `_offset` + `_count` + 1 in the page's
        // order (so each can be read in its index's order and stop early), then those merged, in the same order. As
        // one ordered union, the parts were joined and sorted in full before the first row came (Schema/027).
        var firstOfEach = (long)q.Offset + q.Count + 1; // long: _offset may be as large as an int goes
        var page = new List<StoredResource>();
        // `_count=0` (`_summary=count`): no page to read, and none after it (no next link); only the total.
        if (q.Count > 0)
        {
            await using var cmd = DataSource.CreateCommand(
                $"select d.id, d.recorded, d.person, d.json, d.part, d.part_query from (" +
                $"(select * from ({EventRows}) d{condition} {order} limit {firstOfEach}) union all " +
                $"(select * from ({PartRows}) d{condition} {order} limit {firstOfEach})) d {order} limit {q.Count + 1} offset {q.Offset}");
            foreach (var a in args) cmd.Parameters.Add(new() { Value = a });
            await using var reader = await cmd.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct)) page.Add(AuditResource(reader, project));
        }
        var hasMore = page.Count > q.Count;
        if (hasMore) page.RemoveAt(page.Count - 1);
        if (q.Total == Search.TotalMode.None) return new SearchResult(page, [], null, hasMore);
        if (Search.SearchQuery.TotalShownByPage(q.Offset, q.Count, page.Count, hasMore) is { } shown)
            return new SearchResult(page, [], shown, hasMore); // the page shows the end: the total costs nothing

        var bound = Search.SearchQuery.CountingBound(q.Total, q.Offset, q.Count); // _total=none returned above
        await using var count = DataSource.CreateCommand(
            $"select count(*) from (select 1 from {AuditRows} d{condition}{(bound is { } b ? $" limit {b}" : "")}) n");
        foreach (var a in args) count.Parameters.Add(new() { Value = a });
        var n = Convert.ToInt32(await count.ExecuteScalarAsync(ct));
        return new SearchResult(page, [], bound is null || n < bound ? n : null, hasMore);
    }

    /// <summary>Columns id, recorded, person, json, part, part_query: the row's own AuditEvent, or one search part projected.</summary>
    static StoredResource AuditResource(NpgsqlDataReader reader, Func<AuditPart, string> project)
    {
        var id = reader.GetString(0)["AuditEvent/".Length..];
        var part = reader.GetInt32(4);
        var person = reader.IsDBNull(2) ? null : reader.GetString(2);
        var json = reader.GetString(3);
        if (part > 0)
        {
            id = $"{id}.{part}";
            json = project(new AuditPart(id, person!, reader.IsDBNull(5) ? null : reader.GetString(5), json));
        }
        return new("AuditEvent", id, 1, reader.GetFieldValue<DateTimeOffset>(1), false, json, person);
    }
}

/// <summary>
/// A search's AuditEvent about one patient (Schema/026) as read: its id ("{row id}.{part}"), the patient, the
/// query as it concerns them (null: the whole query), and the JSON of the search's whole-query event it is a
/// projection of (Audit/BalpAuditEvents.ForPatient knows the shape).
/// </summary>
public sealed record AuditPart(string Id, string Person, string? Query, string WholeJson);

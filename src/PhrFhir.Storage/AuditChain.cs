using System.Security.Cryptography;
using System.Text;
using Npgsql;

namespace PhrFhir.Storage;

/// <summary>Where verification found the chain broken, or null when it is intact.</summary>
public sealed record AuditChainBreak(long Position, string AuditEventKey, string Reason);

public sealed record AuditChainReport(long Checked, long PendingSeal, AuditChainBreak? FirstBreak);

public sealed partial class WriteTransaction
{
    /// <summary>
    /// Stores AuditEvents (already serialised) with their index and chain rows, in this transaction: the
    /// audit of a write commits or rolls back with the write. One statement per index table and one for
    /// the chain, however many (AuditWriter's batches; measured in bench/PhrFhir.AuditBench).
    /// </summary>
    public void AppendAudits(IReadOnlyList<(ResourceDocument Doc, Search.IndexRows Rows)> audits)
    {
        if (audits.Count == 0) return;
        foreach (var (doc, _) in audits)
            _session.Insert(doc); // append-only: no history copy, never a previous version
        IndexRowsOf([.. audits.Select(a => (a.Doc.Id, a.Doc.Person, a.Doc.Writer, a.Rows))]);
        Add("insert into fhir.audit_chain (rkey, person, content_hash) select u.rkey, u.person, u.content_hash from unnest($1::text[], $2::text[], $3::bytea[]) with ordinality as u(rkey, person, content_hash, n) order by n",
            audits.Select(a => a.Doc.Id).ToArray(), audits.Select(a => a.Doc.Person).ToArray(),
            audits.Select(a => SHA256.HashData(Encoding.UTF8.GetBytes(a.Doc.Json))).ToArray());
    }

    /// <summary>Runs just before commit (the server records the request's AuditEvent here).</summary>
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
    const long SealLock = 7262020;

    /// <summary>
    /// Links unsealed audit rows onto the end of the chain, in insertion order. One sealer at a time
    /// (an advisory lock), so several server processes may run it.
    /// </summary>
    public async Task<int> SealAuditChainAsync(CancellationToken ct)
    {
        await using var conn = await DataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await using (var l = new NpgsqlCommand($"select pg_try_advisory_xact_lock({SealLock})", conn, tx))
            if (await l.ExecuteScalarAsync(ct) is not true) return 0;

        long pos = 0;
        byte[] previous = new byte[32];
        await using (var last = new NpgsqlCommand("select chain_pos, chain_hash from fhir.audit_chain where chain_pos is not null order by chain_pos desc limit 1", conn, tx))
        await using (var r = await last.ExecuteReaderAsync(ct))
            if (await r.ReadAsync(ct)) { pos = r.GetInt64(0); previous = r.GetFieldValue<byte[]>(1); }

        var pending = new List<(long Seq, byte[] Content)>();
        await using (var sel = new NpgsqlCommand("select seq, content_hash from fhir.audit_chain where chain_pos is null order by seq limit 1000", conn, tx))
        await using (var r = await sel.ExecuteReaderAsync(ct))
            while (await r.ReadAsync(ct)) pending.Add((r.GetInt64(0), r.GetFieldValue<byte[]>(1)));
        if (pending.Count == 0) return 0;

        var positions = new long[pending.Count];
        var hashes = new byte[pending.Count][];
        for (var i = 0; i < pending.Count; i++)
        {
            previous = Link(previous, pending[i].Content);
            positions[i] = ++pos;
            hashes[i] = previous;
        }
        // One statement for the whole batch (an UPDATE per row was most of the sealing time).
        await using (var update = new NpgsqlCommand(
            "update fhir.audit_chain c set chain_pos = u.pos, chain_hash = u.hash from unnest($1::bigint[], $2::bigint[], $3::bytea[]) as u(seq, pos, hash) where c.seq = u.seq", conn, tx))
        {
            update.Parameters.Add(new() { Value = pending.Select(p => p.Seq).ToArray() });
            update.Parameters.Add(new() { Value = positions });
            update.Parameters.Add(new() { Value = hashes });
            await update.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        return pending.Count;
    }

    static byte[] Link(byte[] previous, byte[] content) => SHA256.HashData([.. previous, .. content]);

    /// <summary>
    /// Recomputes every AuditEvent's content hash from the stored JSON and every link of the chain;
    /// reports the first row where either differs (a row changed or removed by hand shows up there).
    /// </summary>
    public async Task<AuditChainReport> VerifyAuditChainAsync(CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "select c.chain_pos, c.rkey, c.content_hash, c.chain_hash, d.data->>'json' from fhir.audit_chain c " +
            "left join fhir.mt_doc_resourcedocument d on d.id = c.rkey order by c.chain_pos nulls last, c.seq");
        await using var r = await cmd.ExecuteReaderAsync(ct);
        var previous = new byte[32];
        long checkedRows = 0, pending = 0, expectedPos = 1;
        while (await r.ReadAsync(ct))
        {
            var key = r.GetString(1);
            var content = r.GetFieldValue<byte[]>(2);
            var json = r.IsDBNull(4) ? null : r.GetString(4);
            long? pos = r.IsDBNull(0) ? null : r.GetInt64(0);
            if (json is null) return new(checkedRows, pending, new(pos ?? 0, key, "the AuditEvent is missing"));
            if (!SHA256.HashData(Encoding.UTF8.GetBytes(json)).AsSpan().SequenceEqual(content))
                return new(checkedRows, pending, new(pos ?? 0, key, "the AuditEvent's content no longer matches its recorded hash"));
            if (pos is null) { pending++; continue; }
            if (pos != expectedPos)
                return new(checkedRows, pending, new(pos.Value, key, $"chain position {expectedPos} is missing"));
            previous = Link(previous, content);
            if (!previous.AsSpan().SequenceEqual(r.GetFieldValue<byte[]>(3)))
                return new(checkedRows, pending, new(pos.Value, key, "the chain link does not follow from the previous row"));
            expectedPos++;
            checkedRows++;
        }
        return new(checkedRows, pending, null);
    }
}
